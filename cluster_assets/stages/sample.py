"""``sample``: check the documents' ids and pick the seeded subset that models are fitted on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets import algorithms
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.storage import CollectionError, Storage

ID = "document_id"


def read_document_ids(storage: Storage, collection_id: str) -> pa.Array:
    dataset = storage.collection_dataset(collection_id)
    if ID not in dataset.schema.names:
        raise CollectionError(f"collection {collection_id!r} has no {ID!r} column")
    ids = dataset.to_table(columns=[ID]).column(ID).combine_chunks()
    if not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
        ids = ids.cast(pa.string())
    if ids.null_count:
        raise CollectionError(f"collection {collection_id!r}: {ids.null_count} documents have no {ID}")
    return ids


def check_unique(ids: pa.Array, owners: pa.Array) -> None:
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        first = repeated[0]["values"].as_py()
        where = sorted(set(owners.filter(pc.equal(ids, first)).to_pylist()))
        raise CollectionError(
            f"duplicate document_id {first!r} in collection {', '.join(map(repr, where))} "
            f"({len(repeated)} ids appear more than once); ids must be unique"
        )


def check_enough_documents(spec: ClusterDefinition, total: int, size: int) -> None:
    """Fail before any work when the fit would have fewer documents than the clusters asked for."""
    wanted = algorithms.requested_clusters(spec.algorithm, spec.algorithm_config)
    if wanted is None or size >= wanted:
        return
    where = ", ".join(map(repr, spec.source_collection_ids))
    configured = set(spec.algorithm_config) & {"num_clusters", algorithms.REGISTRY[spec.algorithm].count_param}
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


def run_sample(storage: Storage, spec: ClusterDefinition) -> StageResult:
    result = StageResult()
    with timed(result, "duration_s"):
        per_collection = {}
        id_arrays, owner_arrays = [], []
        for cid in spec.source_collection_ids:
            ids = read_document_ids(storage, cid)
            per_collection[cid] = len(ids)
            id_arrays.append(ids)
            owner_arrays.append(pa.array([cid] * len(ids), pa.string()))
        ids = pa.concat_arrays(id_arrays)
        owners = pa.concat_arrays(owner_arrays)
        total = len(ids)
        if total == 0:
            raise CollectionError(f"collection {', '.join(map(repr, spec.source_collection_ids))} has no documents")
        check_unique(ids, owners)
        size = min(spec.fit_size(), total)
        check_enough_documents(spec, total, size)
        if size < total:
            rng = np.random.default_rng(layout.seed(spec))
            rows = np.sort(rng.choice(total, size=size, replace=False))
        else:
            rows = np.arange(total)
        table = pa.table({
            ID: ids.take(pa.array(rows)),
            "collection_id": owners.take(pa.array(rows)),
            "row": pa.array(rows, pa.int64()),
        })
        uri = storage.write_table(table, *layout.asset_parts(spec, layout.SAMPLE))
    result.row_count = size
    result.uri = uri
    result.metadata.update({
        "documents": total,
        "sample_size": size,
        "sample_share": round(size / total, 4),
        "documents_per_collection": per_collection,
        "collection_fingerprints": {cid: storage.collection_fingerprint(cid) for cid in spec.source_collection_ids},
    })
    return result
