"""``reduced_coords``: map coordinates of every document of each file, and the run's ``members`` artifact."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.assign import read_assignments
from cluster_assets.stages.context import StageContext
from cluster_assets.stages.embed import file_batches, load_plan
from cluster_assets.stages.model import load_fit, reduction_of
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID

AXES = ("x", "y", "z")


COLLECTION = "collection_id"


def member_schema(components: int) -> pa.Schema:
    """A document's coordinates; ``collection_id`` last, so that two source collections sharing a
    ``document_id`` stay two documents (files written before it existed lack it)."""
    return pa.schema([(ID, pa.string()), ("cluster_id", pa.int32())] + [(a, pa.float32()) for a in AXES[:components]]
                     + [(COLLECTION, pa.dictionary(pa.int32(), pa.string()))])


def reduce_file(storage, spec: ClusterDefinition, fit_id: str, partition: str) -> int:
    fit = load_fit(storage, spec, fit_id)
    plan = load_plan(storage, spec, fit.sample_id)
    assigned = read_assignments(storage, spec, fit_id, partition)
    schema = member_schema(fit.reducer.n_components)
    axes = [a for a in schema.names if a in AXES]
    collection, _ = layout.split_partition(partition)
    offset = 0

    def batches():
        nonlocal offset
        for ids, X in file_batches(storage, spec, plan, partition):
            clusters = assigned.slice(offset, len(ids))
            offset += len(ids)
            if not clusters.column(ID).combine_chunks().equals(ids):
                raise ValueError(f"file {partition} changed since it was assigned: materialize "
                                 f"{spec.cluster_name}/assignments for partition {partition!r} again")
            Y = fit.reducer.transform(X)
            yield pa.table({ID: ids, "cluster_id": clusters.column("cluster_id")}
                           | {a: pa.array(Y[:, i]) for i, a in enumerate(axes)}
                           | {COLLECTION: pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(ids), np.int32)),
                                                                         pa.array([collection]))}, schema=schema)

    return storage.write_batches(schema, batches(), *layout.file_parts(spec, fit_id, partition, layout.COORDS))


def fit_members(storage, spec: ClusterDefinition, fit_id: str, partitions: list[str]):
    """The coordinates of ``partitions`` in one fit, file by file (a table per file); a file written
    before coordinates named their collection gets it from its partition key."""
    for partition in partitions:
        table = storage.read_table(*layout.file_parts(spec, fit_id, partition, layout.COORDS))
        if COLLECTION not in table.column_names:
            collection = pa.DictionaryArray.from_arrays(pa.array(np.zeros(table.num_rows, np.int32)),
                                                        pa.array([layout.split_partition(partition)[0]]))
            table = table.append_column(COLLECTION, collection)
        yield table


def write_members_artifact(storage, spec: ClusterDefinition, run_id: str, fit_id: str, partitions: list[str]) -> str:
    reduction, _ = reduction_of(spec)
    parts = layout.artifact_parts(spec, run_id, layout.MEMBERS_ARTIFACT)
    storage.write_batches(member_schema(reduction.components), fit_members(storage, spec, fit_id, partitions), *parts)
    return storage.uri(*parts)


def run_reduced_coords(ctx: StageContext) -> StageResult:
    storage, spec = ctx.storage, ctx.spec
    fit_id = ctx.need_fit()
    result = StageResult()
    with timed(result, "duration_s"):
        rows = 0
        counts = ctx.engine.map(reduce_file, storage, spec, fit_id, ctx.partitions)
        for partition, count in zip(ctx.partitions, counts):
            result.per_partition[partition] = {"file_documents": count, "dagster/row_count": count}
            rows += count
        result.paths["members_artifact"] = write_members_artifact(storage, spec, ctx.run_id, fit_id, ctx.partitions)
    reduction, defaulted = reduction_of(spec)
    result.row_count = rows
    result.uri = result.paths["members_artifact"]
    result.metadata.update({
        layout.FIT_ID_KEY: fit_id,
        "documents": rows,
        "files": len(ctx.partitions),
        "method": reduction.method + (" (default: no dimension_reduction in the definition)" if defaulted else ""),
        "components": reduction.components,
        **ctx.engine.describe(),
    })
    return result
