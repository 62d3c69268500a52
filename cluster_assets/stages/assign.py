"""``assignments``: fit the algorithm on the sample, then assign every document in batches.

Centroids are the mean of each cluster's members over the whole collection,
accumulated while streaming, whatever the algorithm.
"""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa

from cluster_assets import algorithms, hierarchy, quality
from cluster_assets.algorithms import ClusterModel
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.embed import BATCH, read_matrix
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID

SILHOUETTE_SAMPLE = 5_000


def fit_model(spec: ClusterDefinition, X: np.ndarray) -> ClusterModel:
    params = algorithms.estimator_params(spec.algorithm, spec.algorithm_config)
    return ClusterModel(spec.algorithm, params).fit(X)


def silhouette_on_sample(X: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    """Silhouette of the fitted sample (noise left out), on at most 5k points."""
    return quality.silhouette(X, labels, seed, SILHOUETTE_SAMPLE)


def stream_assign(storage, spec, model: ClusterModel, dim: int):
    """Yield assignment tables batch by batch, accumulating per-cluster sums and counts."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    state = {"sums": sums, "counts": counts, "stats": quality.ClusterStats()}

    def batches():
        from scipy import sparse

        for batch in storage.iter_batches(*layout.asset_parts(spec, layout.EMBEDDINGS), batch_size=BATCH):
            X = read_matrix(pa.Table.from_batches([batch]))
            labels = model.predict(X)
            clusters, inverse = np.unique(labels, return_inverse=True)
            onehot = sparse.csr_matrix((np.ones(len(labels), np.float32), (inverse, np.arange(len(labels)))),
                                       shape=(len(clusters), len(labels)))
            batch_sums = np.asarray(onehot @ X, dtype=np.float64)
            state["stats"].update(X, labels)  # unit-vector sums: cohesion over every document
            for row, c in enumerate(clusters.tolist()):
                sums[c] = sums.get(c, np.zeros(dim)) + batch_sums[row]
                counts[c] = counts.get(c, 0) + int(onehot.indptr[row + 1] - onehot.indptr[row])
            yield pa.table({ID: batch.column(ID), "cluster_id": pa.array(labels.astype(np.int32))})

    return batches(), state


def keep_previous_assignments(storage, spec: ClusterDefinition) -> None:
    """Copy the last assignments aside before they are replaced: the drift check compares against them."""
    current = layout.asset_parts(spec, layout.ASSIGNMENTS)
    if storage.exists(*current):
        storage.write_bytes(storage.read_bytes(*current), *layout.asset_parts(spec, layout.PREVIOUS_ASSIGNMENTS))


def run_assignments(storage, spec: ClusterDefinition) -> StageResult:
    result = StageResult()
    with timed(result, "duration_s"):
        sample = storage.read_table(*layout.asset_parts(spec, layout.SAMPLE_EMBEDDINGS))
        X = read_matrix(sample)
        with timed(result, "fit_s"):
            model = fit_model(spec, X)
        storage.write_bytes(pickle.dumps(model), *layout.asset_parts(spec, layout.MODEL))
        schema = pa.schema([(ID, pa.string()), ("cluster_id", pa.int32())])
        keep_previous_assignments(storage, spec)
        with timed(result, "assign_s"):
            batches, state = stream_assign(storage, spec, model, X.shape[1])
            rows = storage.write_batches(schema, batches, *layout.asset_parts(spec, layout.ASSIGNMENTS))
        counts = state["counts"]
        cluster_ids = sorted(c for c in counts if c >= 0)
        centroids = np.array([state["sums"][c] / counts[c] for c in cluster_ids], dtype=np.float32).reshape(
            len(cluster_ids), X.shape[1])
        clusters = pa.table({
            "cluster_id": pa.array(cluster_ids, pa.int32()),
            "count": pa.array([counts[c] for c in cluster_ids], pa.int64()),
            "centroid": pa.FixedSizeListArray.from_arrays(pa.array(centroids.reshape(-1)), X.shape[1]),
        })
        with timed(result, "quality_s"):
            readout = quality.assess(state["stats"], X, model.labels_, layout.seed(spec), SILHOUETTE_SAMPLE)
            silhouette = readout.silhouette
        for name, column in readout.columns().items():
            clusters = clusters.append_column(name, column)
        if spec.hierarchical:
            with timed(result, "hierarchy_s"):
                clusters = add_hierarchy(storage, spec, model, clusters, centroids, result)
        storage.write_table(clusters, *layout.asset_parts(spec, layout.CLUSTERS))
    noise = counts.get(-1, 0)
    sizes = sorted((counts[c] for c in cluster_ids), reverse=True)
    result.row_count = rows
    result.uri = storage.uri(*layout.asset_parts(spec, layout.ASSIGNMENTS))
    result.metadata.update({
        "documents": rows,
        "num_clusters": len(cluster_ids),
        "noise_documents": noise,
        "noise_share": round(noise / rows, 4) if rows else 0.0,
        "largest_cluster": sizes[0] if sizes else 0,
        "smallest_cluster": sizes[-1] if sizes else 0,
        "cluster_sizes": {str(c): counts[c] for c in cluster_ids},
        "fitted_on": len(X),
        "algorithm": spec.algorithm,
    })
    if silhouette is not None:
        result.metadata["silhouette_sample"] = round(silhouette, 4)
    result.metadata.update(readout.metadata())
    result.markdown["cluster_quality"] = readout.markdown()
    if not cluster_ids:
        result.warnings.append("every document is noise: loosen the algorithm's parameters")
    return result


def add_hierarchy(storage, spec: ClusterDefinition, model: ClusterModel, clusters: pa.Table,
                  centroids: np.ndarray, result: StageResult) -> pa.Table:
    """Group the clusters into a tree (``hierarchical: true``): parent_id and level columns, and the nodes file."""
    options = spec.hierarchy
    tree = hierarchy.cluster_hierarchy(
        clusters.column("cluster_id").to_pylist(), clusters.column("count").to_pylist(), centroids,
        algorithm=spec.algorithm, estimator=getattr(model, "estimator_", None), point_labels=model.labels_,
        levels=options.levels, branching=options.branching, top_nodes=options.top_nodes, linkage=options.linkage)
    storage.write_table(tree.to_table(), *layout.asset_parts(spec, layout.HIERARCHY))
    parent = tree.parent_of()
    level = dict(zip(tree.node_id.tolist(), tree.level.tolist()))
    ids = clusters.column("cluster_id").to_pylist()
    result.metadata.update({
        "hierarchy_levels": tree.depth,
        "hierarchy_nodes_per_level": [int((tree.level == i).sum()) for i in range(tree.depth)],
        "hierarchy_source": tree.source,
    })
    return (clusters.append_column("parent_id", pa.array([parent[c] for c in ids], pa.int32()))
            .append_column("level", pa.array([level[c] for c in ids], pa.int16())))
