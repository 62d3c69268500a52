"""Feature addresses -> one float32 matrix per batch of documents.

An address ``mixpeek://<extractor>@<version>/<output>`` names the feature column
``<output>``; a plain column name is an address too. A column holds, per document,
a dense vector (list<float>), a sparse vector (struct of ``indices``/``values``)
or a multi-vector (list<list<float>>, mean-pooled). Several addresses are
L2-normalised each and concatenated, so that no feature dominates by scale.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ADDRESS = re.compile(r"^mixpeek://(?P<extractor>[^@/]+)@(?P<version>[^/]+)/(?P<output>[A-Za-z0-9_.\-]+)$")
PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")

Kind = Literal["dense", "sparse", "multi"]


class FeatureError(ValueError):
    """Vectors that cannot be clustered; the message names the collection, column and document."""


def parse_address(address: str) -> str:
    """The feature column an address resolves to."""
    match = ADDRESS.match(address)
    if match:
        return match["output"]
    if PLAIN.match(address):
        return address
    raise ValueError(
        f"feature address {address!r} is neither 'mixpeek://<extractor>@<version>/<output>' nor a column name"
    )


# How a collection records which extractor and version produced a feature column: Arrow field metadata
# on the column (``extractor``, ``extractor_version``), or the column named by the full address.
EXTRACTOR_KEY = b"extractor"
VERSION_KEY = b"extractor_version"


def address_parts(address: str) -> tuple[str | None, str | None, str]:
    """(extractor, version, output); extractor and version None for a plain column name."""
    match = ADDRESS.match(address)
    if match:
        return match["extractor"], match["version"], match["output"]
    return None, None, parse_address(address)


def recorded_producer(field: pa.Field) -> tuple[str, str] | None:
    """The (extractor, version) a column's metadata records, if any."""
    meta = field.metadata or {}
    if EXTRACTOR_KEY in meta:
        return meta[EXTRACTOR_KEY].decode(), meta.get(VERSION_KEY, b"").decode()
    return None


def resolve_column(address: str, schema: pa.Schema, collection_id: str) -> str:
    """The column of ``schema`` an address names, checked against the extractor and version the collection
    records; an address that disagrees with the record, or a plain name two recorded columns share, is an error."""
    if address in schema.names:  # a column named by the full address (or a plain name that is a column)
        return address
    extractor, version, output = address_parts(address)
    by_address = [n for n in schema.names if ADDRESS.match(n) and ADDRESS.match(n)["output"] == output]
    if extractor is None:
        if output not in schema.names and len(by_address) > 1:
            raise FeatureError(f"collection {collection_id!r}: feature {output!r} is ambiguous: it is made by "
                               f"{', '.join(by_address)}; give the full address")
        return by_address[0] if output not in schema.names and by_address else output
    if output in schema.names:
        recorded = recorded_producer(schema.field(output))
        if recorded is not None and recorded != (extractor, version):
            raise FeatureError(f"feature address {address!r} names {extractor}@{version}, but collection "
                               f"{collection_id!r} records column {output!r} as made by {recorded[0]}@{recorded[1]}")
        return output
    if by_address:
        raise FeatureError(f"feature address {address!r}: collection {collection_id!r} has {output!r} only as "
                           f"{', '.join(by_address)}")
    return output


def feature_column_names(addresses: list[str]) -> set[str]:
    """Every name a feature of these addresses may have as a column (its output name, or the full address)."""
    return {parse_address(a) for a in addresses} | set(addresses)


def is_vector_type(field_type: pa.DataType) -> bool:
    """A column holding vectors (dense, sparse or multi-vector): never payload sent to a model."""
    try:
        column_kind(field_type, "", "")
        return True
    except FeatureError:
        return False


@dataclass(frozen=True)
class FeatureColumn:
    address: str
    column: str
    kind: Kind
    dim: int

    def to_dict(self) -> dict:
        return asdict(self)


def column_kind(field_type: pa.DataType, column: str, collection_id: str) -> Kind:
    if pa.types.is_struct(field_type):
        names = {field_type.field(i).name for i in range(field_type.num_fields)}
        if {"indices", "values"} <= names:
            return "sparse"
    if pa.types.is_list(field_type) or pa.types.is_large_list(field_type) or pa.types.is_fixed_size_list(field_type):
        inner = field_type.value_type
        if pa.types.is_floating(inner) or pa.types.is_integer(inner):
            return "dense"
        if (pa.types.is_list(inner) or pa.types.is_fixed_size_list(inner) or pa.types.is_large_list(inner)) and (
            pa.types.is_floating(inner.value_type) or pa.types.is_integer(inner.value_type)
        ):
            return "multi"
    raise FeatureError(
        f"collection {collection_id!r}: column {column!r} of type {field_type} is not a feature "
        f"(expected list<float>, struct<indices, values> or list<list<float>>)"
    )


def _first_bad(ids: pa.Array | None, mask: np.ndarray) -> str:
    where = int(np.flatnonzero(mask)[0])
    return f"document {ids[where].as_py()!r}" if ids is not None else f"row {where}"


def _list_lengths(arr: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(arr), -1).to_numpy(zero_copy_only=False)


def _check_nulls(arr: pa.Array, ids, where: str) -> None:
    if arr.null_count:
        mask = arr.is_null().to_numpy(zero_copy_only=False)
        raise FeatureError(f"{where}: {_first_bad(ids, mask)} has no vector")


def _flat_values(arr: pa.Array, ids, where: str) -> np.ndarray:
    values = arr.flatten()
    if values.null_count:
        owners = np.repeat(np.arange(len(arr)), _list_lengths(arr))
        bad = np.zeros(len(arr), dtype=bool)
        bad[owners[values.is_null().to_numpy(zero_copy_only=False)]] = True
        raise FeatureError(f"{where}: {_first_bad(ids, bad)} has a vector with a null component")
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


def dense_matrix(arr: pa.Array, ids, where: str, dim: int | None = None) -> np.ndarray:
    """(n, d) float32 from a list<float> column; every vector must have the same length."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    _check_nulls(arr, ids, where)
    if pa.types.is_fixed_size_list(arr.type):
        d = arr.type.list_size
        if dim is not None and d != dim:
            raise FeatureError(f"{where}: vectors have {d} dimensions, expected {dim}")
    else:
        lengths = _list_lengths(arr)
        d = dim if dim is not None else (int(lengths[0]) if len(lengths) else 0)
        if len(lengths) and (lengths != d).any():
            bad = lengths != d
            raise FeatureError(
                f"{where}: vectors of different lengths: {_first_bad(ids, bad)} has "
                f"{int(lengths[np.flatnonzero(bad)[0]])} values, expected {d}"
            )
    if d == 0:
        raise FeatureError(f"{where}: empty vectors")
    return _flat_values(arr, ids, where).reshape(len(arr), d)


def multi_matrix(arr: pa.Array, ids, where: str, dim: int | None = None) -> np.ndarray:
    """Mean-pool each document's vectors: (n, d) float32."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    _check_nulls(arr, ids, where)
    counts = _list_lengths(arr)
    if (counts <= 0).any():
        raise FeatureError(f"{where}: {_first_bad(ids, counts <= 0)} has an empty multi-vector")
    owners = np.repeat(np.arange(len(arr)), counts)
    # Each inner vector carries its document's id, so that a ragged one is reported by document.
    inner_ids = ids.take(pa.array(owners)) if ids is not None else None
    inner = dense_matrix(arr.flatten(), inner_ids, where, dim)
    pooled = np.zeros((len(arr), inner.shape[1]), dtype=np.float64)
    np.add.at(pooled, owners, inner)
    return (pooled / counts[:, None]).astype(np.float32)


def sparse_matrix(arr: pa.Array, ids, where: str, dim: int) -> np.ndarray:
    """Densify struct<indices, values> into (n, dim) float32."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    _check_nulls(arr, ids, where)
    indices, values = arr.field("indices"), arr.field("values")
    n_idx, n_val = _list_lengths(indices), _list_lengths(values)
    if (n_idx != n_val).any():
        raise FeatureError(f"{where}: {_first_bad(ids, n_idx != n_val)} has indices and values of different lengths")
    flat_idx = indices.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    flat_val = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if len(flat_idx) and (flat_idx.min() < 0 or flat_idx.max() >= dim):
        raise FeatureError(f"{where}: sparse index outside [0, {dim})")
    out = np.zeros((len(arr), dim), dtype=np.float32)
    rows = np.repeat(np.arange(len(arr)), n_idx)
    np.add.at(out, (rows, flat_idx), flat_val)
    return out


def sparse_dimension(arr: pa.Array) -> int:
    indices = arr.field("indices").flatten()
    return int(pc.max(indices).as_py()) + 1 if len(indices) else 0


def feature_block(arr: pa.Array, feature: FeatureColumn, ids, where: str) -> np.ndarray:
    if feature.kind == "dense":
        block = dense_matrix(arr, ids, where, feature.dim)
    elif feature.kind == "multi":
        block = multi_matrix(arr, ids, where, feature.dim)
    else:
        block = sparse_matrix(arr, ids, where, feature.dim)
    check_magnitude(block, ids, where)
    return block


def check_magnitude(X: np.ndarray, ids, where: str) -> None:
    """Refuse finite vectors whose squared norm overflows float32: every distance, norm and
    decomposition downstream would turn them into inf or NaN (or fail deep inside PCA/UMAP)."""
    with np.errstate(over="ignore", invalid="ignore"):
        squared = np.einsum("ij,ij->i", X, X, dtype=np.float32)
    over = np.isinf(squared)
    if not over.any():
        return
    over &= np.isfinite(X).all(axis=1)  # NaN and inf are check_finite's to report
    if over.any():
        row = X[np.flatnonzero(over)[0]].astype(np.float64)
        raise FeatureError(
            f"{where}: {_first_bad(ids, over)} has a vector of magnitude {np.linalg.norm(row):.1e} (values up to "
            f"{np.abs(row).max():.1e}); its squared norm overflows float32 (max {np.finfo(np.float32).max:.1e}): "
            f"rescale the vectors ({int(over.sum())} documents)"
        )


def l2_normalize(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


def combine(blocks: list[np.ndarray], normalize: bool) -> np.ndarray:
    """One matrix from one block per address (each L2-normalised when there are several)."""
    if len(blocks) == 1:
        return l2_normalize(blocks[0]) if normalize else blocks[0]
    scale = np.float32(1.0 / np.sqrt(len(blocks)))
    return np.hstack([l2_normalize(b) * scale for b in blocks]).astype(np.float32, copy=False)


def check_finite(X: np.ndarray, ids, where: str) -> None:
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        bad = ~finite
        raise FeatureError(f"{where}: {_first_bad(ids, bad)} has NaN or infinite values ({int(bad.sum())} documents)")
