"""``sample``: list the source files, check the documents' ids, and draw the seeded sample the fit uses."""

from __future__ import annotations

import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets import algorithms
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.context import StageContext
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.storage import CollectionError, Storage

ID = "document_id"


def source_files(storage: Storage, spec: ClusterDefinition) -> dict[str, dict]:
    """``<collection_id>/<file name>`` -> size and mtime of every source file: a listing, nothing read."""
    out: dict[str, dict] = {}
    for cid in spec.source_collection_ids:
        for info in storage.collection_file_infos(cid):
            out[layout.partition_key(cid, posixpath.basename(info.path))] = storage.file_fingerprint(info)
    return out


def read_file_ids(storage: Storage, partition: str) -> pa.Array:
    cid, name = layout.split_partition(partition)
    chunks = [b.column(0) for b in storage.iter_file(cid, name, [ID])]
    ids = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
    if not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
        ids = ids.cast(pa.string())
    if ids.null_count:
        raise CollectionError(f"collection {cid!r}, file {name}: {ids.null_count} documents have no {ID}")
    return ids


def check_unique(ids: pa.Array, owners: pa.Array) -> None:
    """One id per document of a collection: documents of different collections are different documents
    (keyed by (collection, document_id)); a repeated id names the files it appears in."""
    collections = pc.list_element(pc.split_pattern(owners, "/", max_splits=1), 0)
    for cid in pc.unique(collections).to_pylist():
        mine = pc.equal(collections, cid)
        these, where_from = ids.filter(mine), owners.filter(mine)
        counts = pc.value_counts(these)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1))
        if len(repeated):
            first = repeated[0]["values"].as_py()
            where = sorted(set(where_from.filter(pc.equal(these, first)).to_pylist()))
            if len(where) == 1:
                where = where * 2
            raise CollectionError(
                f"duplicate document_id {first!r} in {' and '.join(where)} "
                f"({len(repeated)} ids appear more than once); ids must be unique"
            )


def check_enough_documents(spec: ClusterDefinition, total: int, size: int) -> None:
    """Fail before any work when the fit would have fewer documents than the clusters asked for."""
    wanted = algorithms.requested_clusters(spec.algorithm, spec.algorithm_config, spec.hierarchical)
    if wanted is None or size >= wanted:
        return
    where = ", ".join(map(repr, spec.source_collection_ids))
    configured = set(spec.algorithm_config) & {"num_clusters", algorithms.count_param(spec.algorithm, spec.hierarchical)}
    asked = (f"algorithm_config.{sorted(configured)[0]}" if configured
             else f"{spec.algorithm}'s default (set algorithm_config.num_clusters)")
    if size < total:
        raise CollectionError(
            f"sample_size {size} is smaller than the {wanted} clusters asked for by {asked} "
            f"(collection {where} has {total} documents): raise sample_size or lower num_clusters"
        )
    raise CollectionError(
        f"collection {where} has {total} documents, fewer than the {wanted} clusters asked for by "
        f"{asked}: lower num_clusters or add documents"
    )


def run_sample(ctx: StageContext) -> StageResult:
    storage, spec = ctx.storage, ctx.spec
    result = StageResult()
    with timed(result, "duration_s"):
        files = source_files(storage, spec)
        id_arrays, file_arrays, row_arrays = [], [], []
        per_collection: dict[str, int] = {}
        for partition in files:
            ids = read_file_ids(storage, partition)
            id_arrays.append(ids)
            file_arrays.append(pa.array([partition] * len(ids), pa.string()))
            row_arrays.append(pa.array(np.arange(len(ids), dtype=np.int64)))
            cid = layout.split_partition(partition)[0]
            per_collection[cid] = per_collection.get(cid, 0) + len(ids)
        ids = pa.concat_arrays(id_arrays)
        owners = pa.concat_arrays(file_arrays)
        total = len(ids)
        if total == 0:
            raise CollectionError(f"collection {', '.join(map(repr, spec.source_collection_ids))} has no documents")
        check_unique(ids, owners)
        size = min(spec.fit_size(), total)
        check_enough_documents(spec, total, size)
        if size < total:
            rows = np.sort(np.random.default_rng(layout.seed(spec)).choice(total, size=size, replace=False))
        else:
            rows = np.arange(total)
        take = pa.array(rows)
        sampled_files = owners.take(take)
        table = pa.table({ID: ids.take(take), "file": sampled_files,
                          "row": pa.concat_arrays(row_arrays).take(take),
                          # a document is (collection, document_id)
                          "collection_id": pc.list_element(pc.split_pattern(sampled_files, "/", max_splits=1), 0)})
        uri = storage.write_table(table, *layout.sample_parts(spec, ctx.run_id, layout.SAMPLE))
    result.row_count = size
    result.uri = uri
    result.metadata.update({
        layout.SAMPLE_ID_KEY: ctx.run_id,
        layout.SOURCE_FILES_KEY: files,
        "documents": total,
        "files": len(files),
        "sample_size": size,
        "sample_share": round(size / total, 4),
        "documents_per_collection": per_collection,
    })
    return result
