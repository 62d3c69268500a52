"""``model``: fit the clustering and the map reducer on the sample; the fit every per-file stage uses.

The fit's id is the run id of the run that fitted it. Cluster ids are matched to the
previous complete fit's where the clusters are the same (``stable_ids``), so that a
refit does not renumber clusters that did not change.
"""

from __future__ import annotations

import functools
import json
import pickle
from dataclasses import dataclass

import numpy as np

from cluster_assets import algorithms
from cluster_assets.algorithms import ClusterModel
from cluster_assets.reduction import MapReducer
from cluster_assets.spec import ClusterDefinition, DimensionReduction
from cluster_assets.stages import layout
from cluster_assets.stages.context import LineageError, StageContext
from cluster_assets.stages.embed import read_sample_matrix
from cluster_assets.stages.result import StageResult, timed


@dataclass
class Fit:
    """What a fit holds: the model, the reducer, the sample's ids and labels, and where it came from."""

    fit_id: str
    sample_id: str
    model: ClusterModel
    reducer: MapReducer
    sample_labels: np.ndarray  # stable cluster ids of the sample documents, in sample order
    id_map: dict[int, int]  # the model's own label -> the stable cluster id
    code_version: str = ""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return remap(self.model.predict(X), self.id_map)


def remap(labels: np.ndarray, id_map: dict[int, int]) -> np.ndarray:
    if not id_map or all(k == v for k, v in id_map.items()):
        return labels
    lookup = np.arange(max(id_map) + 2, dtype=np.int64) - 1  # index i+1 -> label i; -1 stays -1
    for k, v in id_map.items():
        lookup[k + 1] = v
    return lookup[np.asarray(labels) + 1]


def reduction_of(spec: ClusterDefinition) -> tuple[DimensionReduction, bool]:
    """The definition's reduction, or PCA 2-D when it asks for none (members still need x, y)."""
    if spec.dimension_reduction is not None:
        return spec.dimension_reduction, False
    return DimensionReduction(method="pca", components=2), True


def fit_model(spec: ClusterDefinition, X: np.ndarray) -> ClusterModel:
    params = algorithms.estimator_params(spec.algorithm, spec.algorithm_config)
    return ClusterModel(spec.algorithm, params).fit(X)


def fit_reducer(spec: ClusterDefinition, X: np.ndarray) -> MapReducer:
    reduction, _ = reduction_of(spec)
    if len(X) > reduction.fit_size:
        rng = np.random.default_rng(layout.seed(spec))
        X = X[np.sort(rng.choice(len(X), reduction.fit_size, replace=False))]
    return MapReducer(reduction.method, reduction.components, reduction.config, layout.seed(spec)).fit(X)


def stable_ids(labels: np.ndarray, X: np.ndarray, previous_centroids: dict[int, np.ndarray] | None,
               min_similarity: float = 0.9) -> dict[int, int]:
    """Map the new fit's labels to the previous fit's cluster ids where their centroids match.

    Clusters are paired one to one by the cosine similarity of their centroids (Hungarian
    assignment); a pair below ``min_similarity`` is not the same cluster, and the new one gets
    an id no previous cluster used.
    """
    own = sorted(int(c) for c in np.unique(labels) if c >= 0)
    identity = {c: c for c in own}
    if not previous_centroids or not own:
        return identity
    from scipy.optimize import linear_sum_assignment

    from cluster_assets.quality import unit_rows

    new_c = unit_rows(np.array([X[labels == c].mean(axis=0) for c in own], dtype=np.float64))
    old_ids = sorted(previous_centroids)
    old_c = unit_rows(np.array([previous_centroids[c] for c in old_ids], dtype=np.float64))
    sim = new_c @ old_c.T
    rows, cols = linear_sum_assignment(-sim)
    mapping = {own[r]: old_ids[c] for r, c in zip(rows, cols) if sim[r, c] >= min_similarity}
    taken = set(mapping.values())
    next_id = 0
    for c in own:
        if c in mapping:
            continue
        while next_id in taken:
            next_id += 1
        mapping[c] = next_id
        taken.add(next_id)
    return mapping


def previous_centroids(storage, spec: ClusterDefinition) -> dict[int, np.ndarray] | None:
    current = layout.read_current(storage, spec)
    if current is None or not storage.exists(*layout.fit_parts(spec, current.fit_id, layout.CLUSTERS)):
        return None
    from cluster_assets.stages.embed import read_matrix

    clusters = storage.read_table(*layout.fit_parts(spec, current.fit_id, layout.CLUSTERS))
    matrix = read_matrix(clusters.select(["centroid"]).rename_columns(["vector"]))
    return {int(c): matrix[i] for i, c in enumerate(clusters.column("cluster_id").to_pylist())}


def run_model(ctx: StageContext) -> StageResult:
    storage, spec = ctx.storage, ctx.spec
    sample_id = ctx.need_sample()
    fit_id = ctx.run_id
    result = StageResult()
    with timed(result, "duration_s"):
        _, X = read_sample_matrix(storage, spec, sample_id)
        with timed(result, "fit_s"):
            model = fit_model(spec, X)
        # hdbscan's tree (hierarchical: true) speaks the model's own labels: keep them there
        id_map = stable_ids(model.labels_, X, None if spec.hierarchical else previous_centroids(storage, spec))
        with timed(result, "reducer_fit_s"):
            reducer = fit_reducer(spec, X)
        fit = Fit(fit_id, sample_id, model, reducer, remap(model.labels_, id_map), id_map, ctx.code_version)
        uri = storage.write_bytes(pickle.dumps(fit), *layout.fit_parts(spec, fit_id, layout.MODEL))
        storage.write_bytes(json.dumps({"fit_id": fit_id, "sample_id": sample_id, "code_version": ctx.code_version,
                                        "algorithm": spec.algorithm}).encode(),
                            *layout.fit_parts(spec, fit_id, layout.FIT))
    labels = fit.sample_labels
    reduction, defaulted = reduction_of(spec)
    result.uri = uri
    result.metadata.update({
        layout.FIT_ID_KEY: fit_id,
        layout.SAMPLE_ID_KEY: sample_id,
        "algorithm": spec.algorithm,
        "fitted_on": len(X),
        "sample_clusters": int(len(np.unique(labels[labels >= 0]))),
        "sample_noise_share": round(float((labels < 0).mean()), 4) if len(labels) else 0.0,
        "clusters_renumbered_to_previous_ids": sum(1 for k, v in id_map.items() if k != v),
        "map_method": reduction.method + (" (default: no dimension_reduction in the definition)" if defaulted else ""),
        "map_components": reduction.components,
    })
    return result


@functools.lru_cache(maxsize=8)
def _load_fit(root: str, cluster: str, fit_id: str, size: int, mtime_ns: int) -> Fit:
    from cluster_assets.storage import Storage

    storage = Storage(root)
    data = storage.read_bytes("assets", cluster, "fits", fit_id, layout.MODEL)
    try:
        fit = pickle.loads(data)
    except (AttributeError, ImportError, TypeError, EOFError, pickle.UnpicklingError) as exc:
        fit = exc
    if not isinstance(fit, Fit):
        # pickled by code that no longer reads the same way: never guess, fit again
        raise LineageError(f"fit {fit_id} of {cluster!r}: {storage.uri('assets', cluster, 'fits', fit_id, layout.MODEL)} "
                           f"was written by another version of cluster_assets and cannot be loaded ({fit!r:.200}); "
                           f"refit with a full run: `cluster-assets run {cluster}`")
    return fit


def load_fit(storage, spec: ClusterDefinition, fit_id: str) -> Fit:
    """The fit, unpickled once per process (the per-file stages call this for every file)."""
    parts = layout.fit_parts(spec, fit_id, layout.MODEL)
    info = storage.fs.get_file_info(storage.path(*parts))
    if info.size is None:
        raise LineageError(f"fit {fit_id} of {spec.cluster_name!r} has no model at {storage.uri(*parts)}: "
                           f"materialize {spec.cluster_name}/model again (`cluster-assets run {spec.cluster_name}`)")
    return _load_fit(storage.root, spec.cluster_name, fit_id, info.size, info.mtime_ns or 0)
