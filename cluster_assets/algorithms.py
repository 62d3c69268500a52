"""The eight clustering algorithms of the reference behind one interface.

Every algorithm is fitted on a sample and then assigns any batch of vectors to
the clusters it found (noise is -1). Estimators that can predict do so; hdbscan
uses ``approximate_predict``; the others give each point the label of its
nearest labelled sample point (for dbscan only within ``eps`` of a core point,
which is DBSCAN's own rule).
"""

from __future__ import annotations

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
        "gaussian_mixture", _sklearn("GaussianMixture"), "n_components", {"random_state": 0}, 50_000, True
    ),
    "mean_shift": AlgorithmInfo("mean_shift", _sklearn("MeanShift"), None, {"bin_seeding": True}, 5_000, True),
    "dbscan": AlgorithmInfo("dbscan", _sklearn("DBSCAN"), None, {}, 20_000),
    "optics": AlgorithmInfo("optics", _sklearn("OPTICS"), None, {}, 10_000),
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
    validate = getattr(estimator, "_validate_params", None)
    if validate is None or not hasattr(estimator, "_parameter_constraints"):
        return
    try:
        validate()
    except ValueError as exc:  # sklearn's InvalidParameterError
        bad = next((k for k in config if f"'{REGISTRY[algorithm].count_param if k == 'num_clusters' else k}'" in str(exc)), None)
        raise AlgorithmConfigError(f"algorithm_config.{bad}" if bad else "algorithm_config", str(exc)) from None


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
        self.estimator_ = info.load()(**self.params)
        self.estimator_.fit(X)
        labels = self.estimator_.predict(X) if info.can_predict else self.estimator_.labels_
        self.labels_ = np.asarray(labels, dtype=np.int64)
        if self.algorithm != "hdbscan" and not info.can_predict:
            keep = self.labels_ >= 0
            if self.algorithm == "dbscan":
                keep = np.zeros(len(X), dtype=bool)
                keep[self.estimator_.core_sample_indices_] = True
            self.reference_points_ = np.ascontiguousarray(X[keep], dtype=np.float32)
            self.reference_labels_ = self.labels_[keep]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        info = REGISTRY[self.algorithm]
        if info.can_predict:
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
        from sklearn.metrics import pairwise_distances_argmin_min

        metric = getattr(self.estimator_, "metric", "euclidean")
        metric = metric if isinstance(metric, str) and metric != "precomputed" else "euclidean"
        nearest, distance = pairwise_distances_argmin_min(X, self.reference_points_, metric=metric)
        out[:] = self.reference_labels_[nearest]
        if self.algorithm == "dbscan":
            out[distance > self.estimator_.eps] = -1
        return out
