"""``embeddings``: one validated float32 matrix for every document, and the sample's rows of it.

One pass over the feature columns of the source collections: addresses are
resolved, lengths, NaN and infinities are checked document by document, and the
combined matrix is written as Parquet (document_id, vector) so that later
stages stream it in batches.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets import features
from cluster_assets.features import FeatureColumn, FeatureError
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID
from cluster_assets.storage import CollectionError, Storage

BATCH = 65_536


def plan_features(storage: Storage, spec: ClusterDefinition) -> list[FeatureColumn]:
    """Resolve each address to a column present, with the same kind, in every source collection."""
    plan: list[FeatureColumn] = []
    for address in spec.feature_addresses:
        column = features.parse_address(address)
        kind, dim = None, None
        for cid in spec.source_collection_ids:
            schema = storage.collection_dataset(cid).schema
            if column not in schema.names:
                raise CollectionError(
                    f"collection {cid!r} has no feature column {column!r} (from address {address!r}); "
                    f"columns: {', '.join(schema.names)}"
                )
            this_kind = features.column_kind(schema.field(column).type, column, cid)
            if kind and this_kind != kind:
                raise FeatureError(f"feature {column!r} is {kind} in one collection and {this_kind} in {cid!r}")
            kind = this_kind
            dim = max(dim or 0, _dimension(storage, cid, column, this_kind, schema.field(column).type) or 0) or None
        plan.append(FeatureColumn(address, column, kind, dim or 0))
    return plan


def _dimension(storage: Storage, cid: str, column: str, kind: str, dtype: pa.DataType) -> int | None:
    if kind == "sparse":
        dims = [features.sparse_dimension(b.column(0)) for b in storage.iter_collection(cid, [column], BATCH)]
        return max(dims, default=0)
    if kind == "dense" and pa.types.is_fixed_size_list(dtype):
        return dtype.list_size
    # Variable-length lists: the first non-empty vector sets the dimension, every other is checked against it.
    for batch in storage.iter_collection(cid, [column], 1024):
        arr = batch.column(0).drop_null()
        if kind == "multi":
            arr = arr.flatten()
        if len(arr):
            return int(pc.list_value_length(arr)[0].as_py())
    return None


def document_batches(storage: Storage, spec: ClusterDefinition, plan: list[FeatureColumn]):
    """Yield (collection_id, ids, matrix) for every batch of every source collection."""
    columns = [ID] + list(dict.fromkeys(f.column for f in plan))
    for cid in spec.source_collection_ids:
        for batch in storage.iter_collection(cid, columns, BATCH):
            ids = batch.column(ID).cast(pa.string())
            blocks = [
                features.feature_block(batch.column(f.column), f, ids, f"collection {cid!r}, column {f.column!r}")
                for f in plan
            ]
            X = features.combine(blocks, spec.normalize)
            features.check_finite(X, ids, f"collection {cid!r}")
            yield cid, ids, X


def vector_table(ids: pa.Array, X: np.ndarray) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(X, dtype=np.float32).reshape(-1))
    return pa.table({ID: ids, "vector": pa.FixedSizeListArray.from_arrays(flat, X.shape[1])})


def vector_schema(dim: int) -> pa.Schema:
    return pa.schema([(ID, pa.string()), ("vector", pa.list_(pa.float32(), dim))])


def read_matrix(table: pa.Table) -> np.ndarray:
    vectors = table.column("vector").combine_chunks()
    dim = vectors.type.list_size
    return vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), dim)


def run_embeddings(storage: Storage, spec: ClusterDefinition) -> StageResult:
    result = StageResult()
    with timed(result, "duration_s"):
        plan = plan_features(storage, spec)
        sample_ids = storage.read_table(*layout.asset_parts(spec, layout.SAMPLE), columns=[ID]).column(ID).combine_chunks()
        dim = sum(f.dim for f in plan)
        schema = vector_schema(dim)
        sample_parts: list[pa.Table] = []
        counts = {"documents": 0}

        def batches():
            for _, ids, X in document_batches(storage, spec, plan):
                table = vector_table(ids, X)
                counts["documents"] += len(ids)
                chosen = pc.is_in(ids, value_set=sample_ids)
                if pc.any(chosen).as_py():
                    sample_parts.append(table.filter(chosen))
                yield table

        storage.write_batches(schema, batches(), *layout.asset_parts(spec, layout.EMBEDDINGS), compression="none")
        uri = storage.uri(*layout.asset_parts(spec, layout.EMBEDDINGS))
        sample_table = pa.concat_tables(sample_parts) if sample_parts else schema.empty_table()
        if sample_table.num_rows != len(sample_ids):
            raise CollectionError(
                f"the collection changed since the sample was taken ({sample_table.num_rows} of "
                f"{len(sample_ids)} sampled documents found): materialize {spec.cluster_name}/sample again"
            )
        storage.write_table(sample_table, *layout.asset_parts(spec, layout.SAMPLE_EMBEDDINGS))
        storage.write_bytes(json.dumps([f.to_dict() for f in plan]).encode(), *layout.asset_parts(spec, layout.FEATURES))
    result.row_count = counts["documents"]
    result.uri = uri
    result.metadata.update({
        "documents": counts["documents"],
        "dimensions": dim,
        "features": {f.address: f"{f.column} ({f.kind}, {f.dim} dims)" for f in plan},
        "matrix_mb": round(counts["documents"] * dim * 4 / 1e6, 1),
        "sample_rows": sample_table.num_rows,
    })
    return result
