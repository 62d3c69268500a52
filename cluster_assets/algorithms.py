"""The nine clustering algorithms behind one interface, declared once in ``REGISTRY``.

Every algorithm is fitted on a sample and then assigns any batch of vectors to
the clusters it found (noise is -1). Each registry entry carries its own
behaviour: how it assigns new points (``predict``, hdbscan's
``approximate_predict``, or the nearest labelled sample point, for dbscan only
within ``eps`` of a core point, which is DBSCAN's own rule), its own merge tree
for ``hierarchical: true``, the defaults that suit embeddings and the space it
clusters in by default. Nothing else in the project branches on an algorithm's
name.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable

import numpy as np

class AlgorithmConfigError(ValueError):
    """An ``algorithm_config`` that the estimator would refuse; ``field`` names the key."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class AlgorithmInfo:
    name: str
    load: Callable[[], type]
    count_param: str | None = None  # what ``num_clusters`` maps to
    defaults: dict[str, Any] = field(default_factory=dict)
    # Largest sample fitted when the definition sets no ``sample_size``: the
    # quadratic algorithms cannot fit a million points in memory or in minutes.
    default_fit_size: int = 50_000
    can_predict: bool = False
    # Fit and predict in float64: GaussianMixture's full covariances of real data (constant
    # pixels, collinear features) are not positive definite in float32, as scikit-learn warns.
    float64: bool = False
    # Fits made of thousands of tiny neighbour queries (optics, mean_shift) run 10x slower
    # with OpenMP threads spinning on a shared machine: fit them single-threaded.
    serial: bool = False
    # what ``num_clusters`` maps to with ``hierarchical: true`` (evoc: every layer, not one)
    hierarchical_count_param: str | None = None
    # how a fitted model assigns new points: (model, X) -> labels; None = nearest labelled sample point
    predict: Callable[["ClusterModel", np.ndarray], np.ndarray] | None = None
    # which fitted points new points are matched to (nearest labelled): (model, X) -> mask; None = all
    references: Callable[["ClusterModel"], np.ndarray] | None = None
    # how far from each reference point a new point may lie and still join: (model, keep) -> radii
    reach: Callable[["ClusterModel", np.ndarray], np.ndarray] | None = None
    # the labels of the fitted sample: (estimator, params) -> labels; None = ``labels_``
    fit_labels: Callable[[Any, dict], np.ndarray] | None = None
    # the algorithm's own merge tree over its clusters, for ``hierarchical: true``:
    # (estimator, point_labels, cluster_ids) -> (scipy linkage or None, source name)
    tree: Callable[[Any, np.ndarray, list[int]], tuple[np.ndarray | None, str]] | None = None
    # parameters derived from the sample when the definition does not give them: (X, params) -> params
    derive: Callable[[np.ndarray, dict], dict] | None = None
    # the space it clusters in when the definition has no ``cluster_space``: umap | pca | none
    cluster_space: str = "none"
    # the estimator's parameters and their defaults without importing it, for estimators whose import is
    # costly and which declare no scikit-learn constraints (their values are checked when they fit);
    # None = its signature
    param_defaults: Callable[[], dict[str, Any]] | None = None
    why: str = ""  # why the defaults are what they are (the README's algorithm table)


def _sklearn(name: str) -> Callable[[], type]:
    def load() -> type:
        if name == "GaussianMixture":
            from sklearn.mixture import GaussianMixture

            return GaussianMixture
        import sklearn.cluster

        return getattr(sklearn.cluster, name)

    return load


def _hdbscan() -> type:
    import hdbscan

    return hdbscan.HDBSCAN


def _evoc() -> type:
    import evoc

    return evoc.EVoC


def _init_params_in_source(package: str, module_file: str, class_name: str) -> Callable[[], dict[str, Any]]:
    """The parameters of ``class_name.__init__`` and their defaults, read from the package's source, not
    imported: importing EVoC compiles its numba kernels (minutes on a fresh install, 5 s a process after), and
    a code location that validates an EVoC definition must not pay that on every load."""

    def defaults() -> dict[str, Any]:
        import ast
        import importlib.util
        import os

        found = importlib.util.find_spec(package)  # a top-level package: found without running its __init__
        if found is None or not found.submodule_search_locations:
            raise AlgorithmConfigError("algorithm", f"package {package!r} is not installed")
        path = os.path.join(list(found.submodule_search_locations)[0], module_file)
        try:
            with open(path, encoding="utf-8") as source:
                tree = ast.parse(source.read(), path)
            cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
            init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
            positional = [a.arg for a in init.args.args if a.arg != "self"]
            values = [None] * (len(positional) - len(init.args.defaults)) + list(init.args.defaults)
            out = {name: ast.literal_eval(v) if v is not None else inspect.Parameter.empty
                   for name, v in zip(positional, values)}
            out.update({a.arg: ast.literal_eval(v) if v is not None else inspect.Parameter.empty
                        for a, v in zip(init.args.kwonlyargs, init.args.kw_defaults)})
            return out
        except (OSError, SyntaxError, StopIteration, ValueError):  # another layout in another release: import it
            return _signature_defaults(getattr(importlib.import_module(package), class_name))

    return defaults


def _signature_defaults(cls: type) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in ("self", "args", "kwargs")}


def _estimator_predict(model: "ClusterModel", X: np.ndarray) -> np.ndarray:
    return model.estimator_.predict(X)


def _hdbscan_predict(model: "ClusterModel", X: np.ndarray) -> np.ndarray:
    import hdbscan

    return hdbscan.approximate_predict(model.estimator_, X)[0]


def _core_points(model: "ClusterModel") -> np.ndarray:
    keep = np.zeros(len(model.labels_), dtype=bool)
    keep[model.estimator_.core_sample_indices_] = True
    return keep


def _eps_reach(model: "ClusterModel", keep: np.ndarray) -> np.ndarray:
    return np.full(int(keep.sum()), model.estimator_.eps, dtype=np.float64)


def _optics_reach(model: "ClusterModel", keep: np.ndarray) -> np.ndarray:
    """The widest core distance among the cluster's fitted members: the density level at which
    OPTICS drew the cluster; a point farther out is noise."""
    labels = model.labels_[keep]
    core = np.asarray(model.estimator_.core_distances_, dtype=np.float64)[keep]
    radius = np.zeros(len(labels), dtype=np.float64)
    for c in np.unique(labels[labels >= 0]):
        members = labels == c
        finite = core[members][np.isfinite(core[members])]
        radius[members] = finite.max() if len(finite) else 0.0
    return radius


def _hdbscan_tree(estimator, point_labels, cluster_ids):
    from cluster_assets.hierarchy import hdbscan_linkage

    Z = hdbscan_linkage(estimator, point_labels, cluster_ids)
    return Z, "hdbscan_condensed_tree" if Z is not None else "centroids (condensed tree unreadable)"


def _evoc_labels(estimator, params: dict) -> np.ndarray:
    # with base_n_clusters (hierarchical: true) the finest layer holds the clusters asked for;
    # the coarser layers are their parents
    if params.get("base_n_clusters") is not None:
        return estimator.cluster_layers_[0]
    return estimator.labels_


def _evoc_tree(estimator, point_labels, cluster_ids):
    from cluster_assets.hierarchy import layers_linkage

    layers = getattr(estimator, "cluster_layers_", None)
    Z = layers_linkage(point_labels, cluster_ids, list(layers[1:])) if layers is not None else None
    return Z, "evoc_layers" if Z is not None else "centroids (evoc layers unreadable)"


def _dbscan_eps(X: np.ndarray, params: dict) -> dict:
    """eps from the sample: the 95th percentile of each point's distance to its ``min_samples``-th
    neighbour, so that 19 points in 20 are core points of the density the data has."""
    if params.get("eps") is not None:
        return params
    from sklearn.neighbors import NearestNeighbors

    k = int(params.get("min_samples", 5))
    if len(X) <= k:
        return params
    dist = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X)[0][:, -1]
    return {**params, "eps": float(np.quantile(dist, EPS_QUANTILE)) or float(dist.max()) or 0.5}


def _optics_eps(X: np.ndarray, params: dict) -> dict:
    if params.get("cluster_method", "xi") != "dbscan":
        return params
    return _dbscan_eps(X, params)


def _mean_shift_params(X: np.ndarray, params: dict) -> dict:
    """The bandwidth from the sample when not given; and seeds from the data where bin seeding finds none.

    Bin seeding places seeds on a grid of the bandwidth's size; in more than a few dimensions no point is
    within the bandwidth of any grid point and MeanShift fails, so the seeds are then sampled documents."""
    if params.get("bandwidth") is None:
        from sklearn.cluster import estimate_bandwidth

        n = min(len(X), 2_000)
        bandwidth = estimate_bandwidth(X, quantile=BANDWIDTH_QUANTILE, n_samples=n, random_state=0)
        params = {**params, "bandwidth": float(bandwidth)} if bandwidth > 0 else params
    bandwidth = params.get("bandwidth")
    if bandwidth is None or params.get("seeds") is not None or not params.get("bin_seeding"):
        return params
    from sklearn.cluster import get_bin_seeds
    from sklearn.neighbors import NearestNeighbors

    grid = get_bin_seeds(X, bandwidth, params.get("min_bin_freq", 1))
    if len(grid) and (NearestNeighbors(n_neighbors=1).fit(X).kneighbors(grid)[0][:, 0] <= bandwidth).any():
        return params
    rng = np.random.default_rng(0)
    seeds = X[np.sort(rng.choice(len(X), min(len(X), MEAN_SHIFT_SEEDS), replace=False))]
    return {**params, "bin_seeding": False, "seeds": seeds}


def _spectral_neighbours(X: np.ndarray, params: dict) -> dict:
    """n_neighbors from the sample: the smallest of 10, 20, 40, ... that connects its nearest-neighbour
    graph. On a graph in pieces the spectral embedding is degenerate: the demo products' eight clean
    departments made 24 pieces at 10 neighbours and gave ARI 0.02, at 60 neighbours ARI 1.0."""
    if params.get("n_neighbors") is not None or params.get("affinity") != "nearest_neighbors":
        return params
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import NearestNeighbors

    candidates = [k for k in SPECTRAL_NEIGHBOURS if k < len(X)]
    if not candidates:
        return params
    nearest = NearestNeighbors(n_neighbors=candidates[-1]).fit(X).kneighbors(return_distance=False)
    rows = np.arange(len(X))
    for k in candidates:
        graph = csr_matrix((np.ones(len(X) * k), (np.repeat(rows, k), nearest[:, :k].ravel())), shape=(len(X),) * 2)
        if connected_components(graph, directed=False)[0] == 1:
            return {**params, "n_neighbors": k}
    return {**params, "n_neighbors": candidates[-1]}


EPS_QUANTILE = 0.95
BANDWIDTH_QUANTILE = 0.05
SPECTRAL_NEIGHBOURS = (10, 20, 40, 80, 160)

REGISTRY: dict[str, AlgorithmInfo] = {
    "kmeans": AlgorithmInfo(
        "kmeans", _sklearn("KMeans"), "n_clusters", {"random_state": 0, "n_init": "auto"}, 50_000, True,
        predict=_estimator_predict,
        why="scikit-learn's defaults (8 clusters unless num_clusters); seeded",
    ),
    "gaussian_mixture": AlgorithmInfo(
        "gaussian_mixture", _sklearn("GaussianMixture"), "n_components", {"random_state": 0}, 50_000, True, True,
        predict=_estimator_predict,
        why="scikit-learn's defaults, fitted in float64 (full covariances of real data are singular in float32)",
    ),
    "mean_shift": AlgorithmInfo(
        "mean_shift", _sklearn("MeanShift"), None, {"bin_seeding": True}, 5_000, True, serial=True,
        predict=_estimator_predict, derive=_mean_shift_params, cluster_space="umap",
        why="bandwidth estimated on the sample (5% quantile of pairwise distances) in a 5-d UMAP space: "
            "scikit-learn's own estimate (30% quantile) over raw digits gave one cluster in 6 min 44 s; "
            "here ARI 0.86 in 4 s",
    ),
    "dbscan": AlgorithmInfo(
        "dbscan", _sklearn("DBSCAN"), None, {"min_samples": 20}, 20_000,
        references=_core_points, reach=_eps_reach, derive=_dbscan_eps, cluster_space="umap",
        why="clusters a 5-d UMAP space of the sample; eps = 95th percentile of the distance to the "
            "min_samples-th neighbour there (eps=0.5 means nothing on unscaled vectors); min_samples 20: "
            "at 5 the demo products split into 87 clusters (ARI 0.17), at 20 into 11 (ARI 0.59), digits "
            "0.83 -> 0.89",
    ),
    "optics": AlgorithmInfo(
        "optics", _sklearn("OPTICS"), None, {"cluster_method": "dbscan", "min_samples": 20}, 10_000, serial=True, reach=_optics_reach,
        derive=_optics_eps, cluster_space="umap",
        why="clusters a 5-d UMAP space of the sample, extracting clusters at one density level "
            "(cluster_method dbscan, eps and min_samples as dbscan's): the xi extraction gave ARI 0.04-0.11 "
            "on digits whatever min_samples/xi/min_cluster_size were tried",
    ),
    "agglomerative": AlgorithmInfo(
        "agglomerative", _sklearn("AgglomerativeClustering"), "n_clusters", {}, 10_000,
        why="scikit-learn's defaults (ward linkage, 2 clusters unless num_clusters)",
    ),
    "spectral": AlgorithmInfo(
        "spectral", _sklearn("SpectralClustering"), "n_clusters",
        {"random_state": 0, "affinity": "nearest_neighbors"}, 5_000, derive=_spectral_neighbours,
        why="a nearest-neighbour affinity: scikit-learn's RBF kernel with gamma=1 on unscaled vectors "
            "gave ARI 0.00 in 4 min 46 s on digits, the nearest-neighbour graph ARI 0.76 in 0.85 s; "
            "n_neighbors the smallest of 10, 20, 40, 80, 160 that connects the sample's graph (in pieces "
            "the embedding is degenerate: 10 neighbours gave ARI 0.02 on the demo products, 60 gave 1.0)",
    ),
    "hdbscan": AlgorithmInfo(
        "hdbscan", _hdbscan, None, {"prediction_data": True, "min_cluster_size": 15}, 20_000,
        predict=_hdbscan_predict, tree=_hdbscan_tree, cluster_space="umap",
        why="clusters a 5-d UMAP space of the sample (BERTopic's practice), min_cluster_size 15: on "
            "raw digits it left 47% as noise (ARI 0.26); in UMAP space 0% (ARI 0.84)",
    ),
    "evoc": AlgorithmInfo(
        "evoc", _evoc, "approx_n_clusters", {"random_state": 0}, 50_000,
        hierarchical_count_param="base_n_clusters", fit_labels=_evoc_labels, tree=_evoc_tree,
        param_defaults=_init_params_in_source("evoc", "clustering.py", "EVoC"),
        why="EVoC's defaults on the raw embeddings (it builds its own neighbour graph and node embedding); "
            "seeded (its random_state defaults to None); num_clusters maps to approx_n_clusters, or to "
            "base_n_clusters with hierarchical: true so its layers form the tree",
    ),
}

ALGORITHMS = tuple(REGISTRY)


def count_param(algorithm: str, hierarchical: bool = False) -> str | None:
    """What ``num_clusters`` maps to for ``algorithm``."""
    info = REGISTRY[algorithm]
    return (info.hierarchical_count_param if hierarchical else None) or info.count_param


@cache
def init_defaults(algorithm: str) -> dict[str, Any]:
    """The estimator's parameters and their defaults (``inspect.Parameter.empty`` where none)."""
    info = REGISTRY[algorithm]
    return info.param_defaults() if info.param_defaults is not None else _signature_defaults(info.load())


@cache
def valid_params(algorithm: str, hierarchical: bool = False) -> tuple[str, ...]:
    names = list(init_defaults(algorithm))
    if count_param(algorithm, hierarchical):
        names.append("num_clusters")
    return tuple(sorted(names))


def estimator_params(algorithm: str, config: dict[str, Any], hierarchical: bool = False) -> dict[str, Any]:
    """Map a definition's ``algorithm_config`` to estimator keyword arguments, or raise."""
    if algorithm not in REGISTRY:
        raise AlgorithmConfigError("algorithm", f"unknown algorithm {algorithm!r}; valid: {', '.join(ALGORITHMS)}")
    info = REGISTRY[algorithm]
    counted = count_param(algorithm, hierarchical)
    allowed = valid_params(algorithm, hierarchical)
    params = dict(info.defaults)
    for key, value in config.items():
        if key not in allowed:
            hint = " (it does not take a cluster count)" if key == "num_clusters" else ""
            raise AlgorithmConfigError(
                f"algorithm_config.{key}",
                f"unknown parameter {key!r} for {algorithm}{hint}; valid: {', '.join(allowed)}",
            )
        params[counted if key == "num_clusters" else key] = value
    if "num_clusters" in config and counted in config:
        raise AlgorithmConfigError(
            "algorithm_config.num_clusters", f"give either num_clusters or {counted}, not both"
        )
    return params


def check_config(algorithm: str, config: dict[str, Any], hierarchical: bool = False) -> None:
    """Validate keys and, where scikit-learn declares constraints, values, without fitting."""
    params = estimator_params(algorithm, config, hierarchical)
    counted = count_param(algorithm, hierarchical)
    if REGISTRY[algorithm].param_defaults is not None:  # no constraints to read: keys checked, values at fit
        _refuse_booleans(counted, config, {})
        return
    estimator = REGISTRY[algorithm].load()(**params)
    _refuse_booleans(counted, config, getattr(estimator, "_parameter_constraints", {}))
    validate = getattr(estimator, "_validate_params", None)
    if validate is None or not hasattr(estimator, "_parameter_constraints"):
        return
    try:
        validate()
    except ValueError as exc:  # sklearn's InvalidParameterError
        bad = next((k for k in config if f"'{counted if k == 'num_clusters' else k}'" in str(exc)), None)
        raise AlgorithmConfigError(f"algorithm_config.{bad}" if bad else "algorithm_config", str(exc)) from None


def _refuse_booleans(counted: str | None, config: dict[str, Any], constraints: dict[str, Any]) -> None:
    """``true`` is an integer to Python and passes scikit-learn's range checks: refuse it where a number is meant."""
    for key, value in config.items():
        if not isinstance(value, bool):
            continue
        param = counted if key == "num_clusters" else key
        expected = _number_expected(constraints.get(param))
        if key == "num_clusters" or expected:
            raise AlgorithmConfigError(
                f"algorithm_config.{key}", f"expected {expected or 'an integer'}, got a boolean ({str(value).lower()})"
            )


def _number_expected(constraints: Any) -> str | None:
    """"an integer" or "a number" when scikit-learn's constraints take a number there and no boolean, else None."""
    if not isinstance(constraints, list):  # absent, or "no_validation"
        return None
    from numbers import Integral

    from sklearn.utils._param_validation import (
        Interval, Options, _Booleans, _InstancesOf, _VerboseHelper, make_constraint,
    )

    intervals = []
    for constraint in map(make_constraint, constraints):
        if isinstance(constraint, (_Booleans, _VerboseHelper)):
            return None
        if isinstance(constraint, _InstancesOf) and constraint.type in (bool, object):
            return None
        if isinstance(constraint, Options) and any(isinstance(option, bool) for option in constraint.options):
            return None
        if isinstance(constraint, Interval):
            intervals.append(constraint)
    if not intervals:
        return None
    return "an integer" if all(c.type is Integral for c in intervals) else "a number"


def requested_clusters(algorithm: str, config: dict[str, Any], hierarchical: bool = False) -> int | None:
    counted = count_param(algorithm, hierarchical)
    if counted is None:
        return None
    params = estimator_params(algorithm, config, hierarchical)
    value = params.get(counted)
    if value is None:
        value = init_defaults(algorithm).get(counted)
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None


MEAN_SHIFT_SEEDS = 200


def _threads(limit: int | None):
    """Cap the BLAS/OpenMP thread pools for a block (no cap when ``limit`` is None)."""
    if limit is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit)


# From this many reference points on, the nearest labelled point is found through an inverted-file index
# (faiss) built once per fit: at 20k x 768 it took 168 us a document against 731 us for the exact
# search, with the same label for 100% of documents (bench/nn_bench.py, bench/README.md). Below it,
# or without faiss, or for a metric other than euclidean, the search stays exact.
INDEX_MIN_POINTS = 5_000


def build_reference_index(points: np.ndarray) -> np.ndarray | None:
    """A trained faiss IVF index over ``points``, serialized (picklable bytes), or None without faiss."""
    try:
        import faiss
    except ImportError:
        return None
    n, dim = points.shape
    nlist = int(max(1, min(256, n // 39)))  # faiss wants >= 39 training points per list
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
    index.train(points)
    index.add(points)
    index.nprobe = max(8, nlist // 32)
    return faiss.serialize_index(index)


class ClusterModel:
    """A fitted clustering: the estimator plus what it needs to assign new points.

    scikit-learn conventions: ``__init__`` stores arguments, ``fit`` returns self,
    fitted state ends in ``_``, noise is -1.
    """

    def __init__(self, algorithm: str, params: dict[str, Any]):
        self.algorithm = algorithm
        self.params = params

    def fit(self, X: np.ndarray) -> "ClusterModel":
        info = REGISTRY[self.algorithm]
        n_clusters = next((self.params.get(p) for p in (info.count_param, info.hierarchical_count_param)
                           if p and self.params.get(p) is not None), None)
        if isinstance(n_clusters, (int, np.integer)) and len(X) < n_clusters:
            raise ValueError(
                f"{len(X)} documents to fit on but {n_clusters} clusters asked for: "
                f"lower num_clusters or add documents"
            )
        if info.float64:
            X = np.asarray(X, dtype=np.float64)
        with _threads(1 if info.serial else None):
            return self._fit(info, X)

    def _fit(self, info: AlgorithmInfo, X: np.ndarray) -> "ClusterModel":
        # parameters derived from the sample (dbscan's eps, mean_shift's bandwidth) when not given
        self.fitted_params_ = info.derive(X, dict(self.params)) if info.derive else dict(self.params)
        self.estimator_ = info.load()(**self.fitted_params_).fit(X)
        if info.can_predict:
            labels = info.predict(self, X)
        elif info.fit_labels:
            labels = info.fit_labels(self.estimator_, self.fitted_params_)
        else:
            labels = self.estimator_.labels_
        self.labels_ = np.asarray(labels, dtype=np.int64)
        if info.predict is None:
            # Every fitted point, noise included: a document nearest a point the fit called
            # noise (optics) is noise too, and the sample keeps its fitted labels.
            keep = info.references(self) if info.references else np.ones(len(X), dtype=bool)
            self.reference_points_ = np.ascontiguousarray(X[keep], dtype=np.float32)
            self.reference_labels_ = self.labels_[keep]
            self.reference_radius_ = info.reach(self, keep) if info.reach else None
            self.reference_index_ = None
            if self._metric() == "euclidean" and len(self.reference_points_) >= INDEX_MIN_POINTS:
                self.reference_index_ = build_reference_index(self.reference_points_)
        return self

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_index", None)  # the deserialized index: rebuilt from reference_index_ in each process
        return state

    def _metric(self) -> str:
        metric = getattr(self.estimator_, "metric", "euclidean")
        return metric if isinstance(metric, str) and metric != "precomputed" else "euclidean"

    def _nearest(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index and distance of each row's nearest reference point."""
        serialized = getattr(self, "reference_index_", None)  # None in models pickled before it existed
        if serialized is None:
            from sklearn.metrics import pairwise_distances_argmin_min

            return pairwise_distances_argmin_min(X, self.reference_points_, metric=self._metric())
        if "_index" not in self.__dict__:
            import faiss

            self._index = faiss.deserialize_index(serialized)
        squared, found = self._index.search(np.ascontiguousarray(X, dtype=np.float32), 1)
        nearest, distance = found[:, 0].astype(np.int64), np.sqrt(np.maximum(squared[:, 0], 0.0))
        missed = nearest < 0  # every probed list empty: look exactly
        if missed.any():
            from sklearn.metrics import pairwise_distances_argmin_min

            nearest[missed], distance[missed] = pairwise_distances_argmin_min(X[missed], self.reference_points_)
        return nearest, distance

    def predict(self, X: np.ndarray) -> np.ndarray:
        info = REGISTRY[self.algorithm]
        if info.predict is None:
            return self._nearest_labelled(X)
        if info.float64:
            X = np.asarray(X, dtype=np.float64)
        return np.asarray(info.predict(self, X), dtype=np.int64)

    def _nearest_labelled(self, X: np.ndarray) -> np.ndarray:
        out = np.full(len(X), -1, dtype=np.int64)
        if len(self.reference_points_) == 0:
            return out
        nearest, distance = self._nearest(X)
        out[:] = self.reference_labels_[nearest]
        radius = getattr(self, "reference_radius_", None)  # None in models pickled before it existed
        if radius is not None:
            out[distance > radius[nearest]] = -1
        return out
