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
from cluster_assets.spec.versions import fit_version
from cluster_assets.stages import layout
from cluster_assets.stages.context import LineageError, StageContext
from cluster_assets.stages.embed import read_sample_matrix
from cluster_assets.stages.result import StageResult, timed


@dataclass
class Fit:
    """What a fit holds: the model, the reducer, the sample's ids and labels, and where it came from.

    ``space`` (the cluster space, fitted on the sample) and ``outliers`` (noise reassignment)
    are part of the fit, so every file, new ones included, is assigned exactly as the sample was.
    """

    fit_id: str
    sample_id: str
    model: ClusterModel
    reducer: MapReducer
    sample_labels: np.ndarray  # stable cluster ids of the sample documents, in sample order
    id_map: dict[int, int]  # the model's own label -> the stable cluster id
    code_version: str = ""
    space: MapReducer | None = None  # None: the algorithm clusters the raw vectors
    outliers: OutlierReassignment | None = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.assign(X)[0]

    def assign(self, X: np.ndarray) -> tuple[np.ndarray, int]:
        """Stable cluster ids of ``X`` and how many were noise before outlier reassignment."""
        Z = self.space.transform(X) if self.space is not None else X
        labels = self.model.predict(Z)
        noise_before = int((labels < 0).sum())
        if self.outliers is not None:
            labels = self.outliers.reassign(Z, labels)
        return remap(labels, self.id_map), noise_before


@dataclass
class OutlierReassignment:
    """Noise points join the cluster whose centroid (in the cluster space) is nearest, within ``max_distance``."""

    cluster_ids: np.ndarray  # the model's own labels
    centroids: np.ndarray  # their centroids in the space the algorithm clustered in
    max_distance: float | None = None

    @classmethod
    def fit(cls, Z: np.ndarray, labels: np.ndarray, max_distance: float | None) -> "OutlierReassignment":
        ids = np.unique(labels[labels >= 0])
        centroids = np.array([Z[labels == c].mean(axis=0) for c in ids], dtype=np.float32).reshape(len(ids), -1)
        return cls(ids.astype(np.int64), centroids, max_distance)

    def reassign(self, Z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        noise = np.flatnonzero(labels < 0)
        if not len(noise) or not len(self.cluster_ids):
            return labels
        from sklearn.metrics import pairwise_distances_argmin_min

        nearest, distance = pairwise_distances_argmin_min(np.asarray(Z[noise], np.float32), self.centroids)
        close = distance <= self.max_distance if self.max_distance is not None else np.ones(len(noise), bool)
        out = np.array(labels, dtype=np.int64, copy=True)
        out[noise[close]] = self.cluster_ids[nearest[close]]
        return out


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
    params = algorithms.estimator_params(spec.algorithm, spec.algorithm_config, spec.hierarchical)
    return ClusterModel(spec.algorithm, params).fit(X)


# UMAP for clustering rather than drawing: points packed tightly (min_dist 0), as BERTopic does
CLUSTER_SPACE_UMAP = {"min_dist": 0.0}


def fit_space(spec: ClusterDefinition, X: np.ndarray) -> tuple[MapReducer | None, np.ndarray]:
    """The cluster space fitted on the sample (None for ``none``) and the sample in it."""
    space = spec.cluster_space_or_default()
    if space.method == "none":
        return None, X
    config = {**CLUSTER_SPACE_UMAP, **space.config} if space.method == "umap" else space.config
    reducer = MapReducer(space.method, space.components, config, layout.seed(spec)).fit(X)
    Z = reducer.embedding_ if reducer.method_ == "umap" else reducer.transform(X)
    return reducer, np.asarray(Z, dtype=np.float32)


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
    from cluster_assets.stages.assign import read_centroids  # assign imports this module

    current = layout.read_current(storage, spec)
    found = read_centroids(storage, spec, current.fit_id) if current is not None else None
    return found.by_id if found is not None else None


def run_model(ctx: StageContext) -> StageResult:
    storage, spec = ctx.storage, ctx.spec
    sample_id = ctx.need_sample()
    fit_id = ctx.run_id
    result = StageResult()
    with timed(result, "duration_s"):
        _, X = read_sample_matrix(storage, spec, sample_id)
        with timed(result, "cluster_space_fit_s"):
            space, Z = fit_space(spec, X)
        with timed(result, "fit_s"):
            model = fit_model(spec, Z)
        own_labels = model.labels_
        outliers = None
        if spec.outliers.reassign:
            outliers = OutlierReassignment.fit(Z, own_labels, spec.outliers.max_distance)
            own_labels = outliers.reassign(Z, own_labels)
        # an algorithm's own tree (hierarchical: true) speaks the model's own labels: keep them there
        id_map = stable_ids(own_labels, X, None if spec.hierarchical else previous_centroids(storage, spec))
        with timed(result, "reducer_fit_s"):
            reducer = fit_reducer(spec, X)
        fit = Fit(fit_id, sample_id, model, reducer, remap(own_labels, id_map), id_map, ctx.code_version,
                  space, outliers)
        uri = storage.write_bytes(pickle.dumps(fit), *layout.fit_parts(spec, fit_id, layout.MODEL))
        storage.write_bytes(json.dumps({"fit_id": fit_id, "sample_id": sample_id, "code_version": ctx.code_version,
                                        "fit_version": fit_version(spec), "algorithm": spec.algorithm}).encode(),
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
        "sample_noise_share_before_reassignment": round(float((model.labels_ < 0).mean()), 4) if len(labels) else 0.0,
        "cluster_space": (f"{space.method_} {space.n_components}-d (fitted on the sample)" if space is not None
                          else "none (the raw vectors)"),
        "derived_parameters": {k: v for k, v in model.fitted_params_.items()
                               if isinstance(v, (int, float, str)) and model.params.get(k) != v},
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
