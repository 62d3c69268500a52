"""The eight clustering algorithms of the reference behind one interface.

Every algorithm is fitted on a sample and then assigns any batch of vectors to
the clusters it found (noise is -1). Estimators that can predict do so; hdbscan
uses ``approximate_predict``; the others give each point the label of its
nearest labelled sample point (for dbscan only within ``eps`` of a core point,
which is DBSCAN's own rule).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable

import numpy as np

ALGORITHMS = (
    "kmeans",
    "dbscan",
    "hdbscan",
    "agglomerative",
    "spectral",
    "gaussian_mixture",
    "mean_shift",
    "optics",
)


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


REGISTRY: dict[str, AlgorithmInfo] = {
    "kmeans": AlgorithmInfo(
        "kmeans", _sklearn("KMeans"), "n_clusters", {"random_state": 0, "n_init": "auto"}, 50_000, True
    ),
    "gaussian_mixture": AlgorithmInfo(
        "gaussian_mixture", _sklearn("GaussianMixture"), "n_components", {"random_state": 0}, 50_000, True, True
    ),
    "mean_shift": AlgorithmInfo(
        "mean_shift", _sklearn("MeanShift"), None, {"bin_seeding": True}, 5_000, True, serial=True
    ),
    "dbscan": AlgorithmInfo("dbscan", _sklearn("DBSCAN"), None, {}, 20_000),
    "optics": AlgorithmInfo("optics", _sklearn("OPTICS"), None, {}, 10_000, serial=True),
    "agglomerative": AlgorithmInfo("agglomerative", _sklearn("AgglomerativeClustering"), "n_clusters", {}, 10_000),
    "spectral": AlgorithmInfo(
        "spectral", _sklearn("SpectralClustering"), "n_clusters", {"random_state": 0}, 5_000
    ),
    "hdbscan": AlgorithmInfo("hdbscan", _hdbscan, None, {"prediction_data": True}, 20_000),
}


@cache
def valid_params(algorithm: str) -> tuple[str, ...]:
    cls = REGISTRY[algorithm].load()
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    if REGISTRY[algorithm].count_param:
        names.append("num_clusters")
    return tuple(sorted(names))


def estimator_params(algorithm: str, config: dict[str, Any]) -> dict[str, Any]:
    """Map a definition's ``algorithm_config`` to estimator keyword arguments, or raise."""
    if algorithm not in REGISTRY:
        raise AlgorithmConfigError("algorithm", f"unknown algorithm {algorithm!r}; valid: {', '.join(ALGORITHMS)}")
    info = REGISTRY[algorithm]
    allowed = valid_params(algorithm)
    params = dict(info.defaults)
    for key, value in config.items():
        if key not in allowed:
            hint = " (it does not take a cluster count)" if key == "num_clusters" else ""
            raise AlgorithmConfigError(
                f"algorithm_config.{key}",
                f"unknown parameter {key!r} for {algorithm}{hint}; valid: {', '.join(allowed)}",
            )
        params[info.count_param if key == "num_clusters" else key] = value
    if "num_clusters" in config and info.count_param in config:
        raise AlgorithmConfigError(
            "algorithm_config.num_clusters", f"give either num_clusters or {info.count_param}, not both"
        )
    return params


def check_config(algorithm: str, config: dict[str, Any]) -> None:
    """Validate keys and, where scikit-learn declares constraints, values, without fitting."""
    params = estimator_params(algorithm, config)
    estimator = REGISTRY[algorithm].load()(**params)
    _refuse_booleans(algorithm, config, getattr(estimator, "_parameter_constraints", {}))
    validate = getattr(estimator, "_validate_params", None)
    if validate is None or not hasattr(estimator, "_parameter_constraints"):
        return
    try:
        validate()
    except ValueError as exc:  # sklearn's InvalidParameterError
        bad = next((k for k in config if f"'{REGISTRY[algorithm].count_param if k == 'num_clusters' else k}'" in str(exc)), None)
        raise AlgorithmConfigError(f"algorithm_config.{bad}" if bad else "algorithm_config", str(exc)) from None


def _refuse_booleans(algorithm: str, config: dict[str, Any], constraints: dict[str, Any]) -> None:
    """``true`` is an integer to Python and passes scikit-learn's range checks: refuse it where a number is meant."""
    for key, value in config.items():
        if not isinstance(value, bool):
            continue
        param = REGISTRY[algorithm].count_param if key == "num_clusters" else key
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


def requested_clusters(algorithm: str, config: dict[str, Any]) -> int | None:
    info = REGISTRY[algorithm]
    if info.count_param is None:
        return None
    params = estimator_params(algorithm, config)
    value = params.get(info.count_param)
    if value is None:
        default = inspect.signature(info.load().__init__).parameters[info.count_param].default
        value = default
    return int(value) if isinstance(value, (int, np.integer)) else None


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
        n_clusters = self.params.get(info.count_param) if info.count_param else None
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
        self.estimator_ = info.load()(**self.params)
        try:
            self.estimator_.fit(X)
        except ValueError as exc:
            # MeanShift's bin seeding places seeds on a grid of the bandwidth's size; in more than
            # a few dimensions no point is near any grid point. Seed from the data itself instead.
            if self.algorithm != "mean_shift" or "seeds" in self.params or "No point was within" not in str(exc):
                raise
            rng = np.random.default_rng(0)
            seeds = X[np.sort(rng.choice(len(X), min(len(X), MEAN_SHIFT_SEEDS), replace=False))]
            self.estimator_ = info.load()(**{**self.params, "bin_seeding": False, "seeds": seeds})
            self.estimator_.fit(X)
        labels = self.estimator_.predict(X) if info.can_predict else self.estimator_.labels_
        self.labels_ = np.asarray(labels, dtype=np.int64)
        if self.algorithm != "hdbscan" and not info.can_predict:
            # Every fitted point, noise included: a document nearest a point the fit called
            # noise (optics) is noise too, and the sample keeps its fitted labels.
            keep = np.ones(len(X), dtype=bool)
            if self.algorithm == "dbscan":
                keep = np.zeros(len(X), dtype=bool)
                keep[self.estimator_.core_sample_indices_] = True
            self.reference_points_ = np.ascontiguousarray(X[keep], dtype=np.float32)
            self.reference_labels_ = self.labels_[keep]
            self.reference_radius_ = self._reach(keep)
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
        if info.can_predict:
            if info.float64:
                X = np.asarray(X, dtype=np.float64)
            return np.asarray(self.estimator_.predict(X), dtype=np.int64)
        if self.algorithm == "hdbscan":
            import hdbscan

            labels, _ = hdbscan.approximate_predict(self.estimator_, X)
            return np.asarray(labels, dtype=np.int64)
        return self._nearest_labelled(X)

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

    def _reach(self, keep: np.ndarray) -> np.ndarray | None:
        """How far from each reference point a new point may lie and still join its cluster.

        dbscan: ``eps`` from a core point, its own rule. optics: the widest core distance
        among the cluster's fitted members, the density level at which OPTICS drew the
        cluster; a point farther out is noise. Others: any distance.
        """
        labels = self.labels_[keep]
        if self.algorithm == "dbscan":
            return np.full(len(labels), self.estimator_.eps, dtype=np.float64)
        if self.algorithm == "optics":
            core = np.asarray(self.estimator_.core_distances_, dtype=np.float64)[keep]
            radius = np.zeros(len(labels), dtype=np.float64)
            for c in np.unique(labels[labels >= 0]):
                members = labels == c
                finite = core[members][np.isfinite(core[members])]
                radius[members] = finite.max() if len(finite) else 0.0
            return radius
        return None
