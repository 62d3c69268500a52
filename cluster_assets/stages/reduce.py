"""``reduced_coords``: map coordinates for every document and the run's ``members`` artifact."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets.reduction import MapReducer
from cluster_assets.spec import ClusterDefinition, DimensionReduction
from cluster_assets.stages import layout
from cluster_assets.stages.embed import BATCH, read_matrix
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID

AXES = ("x", "y", "z")


def reduction_of(spec: ClusterDefinition) -> tuple[DimensionReduction, bool]:
    """The definition's reduction, or PCA 2-D when it asks for none (members still need x, y)."""
    if spec.dimension_reduction is not None:
        return spec.dimension_reduction, False
    return DimensionReduction(method="pca", components=2), True


def run_reduced_coords(storage, spec: ClusterDefinition, run_id: str) -> StageResult:
    result = StageResult()
    reduction, defaulted = reduction_of(spec)
    axes = AXES[: reduction.components]
    with timed(result, "duration_s"):
        X = read_matrix(storage.read_table(*layout.asset_parts(spec, layout.SAMPLE_EMBEDDINGS)))
        if len(X) > reduction.fit_size:
            rng = np.random.default_rng(layout.seed(spec))
            X = X[np.sort(rng.choice(len(X), reduction.fit_size, replace=False))]
        with timed(result, "fit_s"):
            reducer = MapReducer(reduction.method, reduction.components, reduction.config, layout.seed(spec)).fit(X)
        coord_schema = pa.schema([(ID, pa.string())] + [(a, pa.float32()) for a in axes])
        member_schema = pa.schema([(ID, pa.string()), ("cluster_id", pa.int32())] + [(a, pa.float32()) for a in axes])
        members: list[pa.Table] = []

        def coords():
            embeddings = storage.iter_batches(*layout.asset_parts(spec, layout.EMBEDDINGS), batch_size=BATCH)
            assignments = storage.iter_batches(*layout.asset_parts(spec, layout.ASSIGNMENTS), batch_size=BATCH)
            for batch, assigned in zip(embeddings, assignments, strict=True):
                if not pc.all(pc.equal(batch.column(ID), assigned.column(ID))).as_py():
                    raise ValueError(f"embeddings and assignments of {spec.cluster_name!r} are out of step: "
                                     f"materialize {spec.cluster_name}/assignments again")
                Y = reducer.transform(read_matrix(pa.Table.from_batches([batch])))
                columns = {ID: batch.column(ID)} | {a: pa.array(Y[:, i]) for i, a in enumerate(axes)}
                members.append(pa.table({ID: batch.column(ID), "cluster_id": assigned.column("cluster_id")}
                                        | {a: columns[a] for a in axes}))
                yield pa.table(columns)

        with timed(result, "transform_s"):
            rows = storage.write_batches(coord_schema, coords(), *layout.asset_parts(spec, layout.COORDS))
        storage.write_batches(member_schema, members, *layout.artifact_parts(spec, run_id, layout.MEMBERS_ARTIFACT))
    result.row_count = rows
    result.uri = storage.uri(*layout.asset_parts(spec, layout.COORDS))
    result.paths["members_artifact"] = storage.uri(*layout.artifact_parts(spec, run_id, layout.MEMBERS_ARTIFACT))
    result.metadata.update({
        "documents": rows,
        "method": reduction.method + (" (default: no dimension_reduction in the definition)" if defaulted else ""),
        "components": reduction.components,
        "fitted_on": len(X),
    })
    return result

