"""2-D/3-D map coordinates: UMAP or PCA, fitted on a sample, applied to every document.

UMAP's own ``transform`` re-optimises a layout for every new point (about 4 ms a
point here), far too slow for a million documents. ``MapReducer`` instead places
a new point at the distance-weighted mean of its nearest fitted points, which is
UMAP's own initialisation of ``transform`` without the optimisation epochs. The
neighbour search runs in a PCA space of at most 50 dimensions, as does the UMAP
fit, so that it costs a few seconds per 100k documents.

UMAP leaves three of the numba kernels its fit runs uncached, so every fresh
process compiled them again (about 7 s here, whatever NUMBA_CACHE_DIR says).
``cache_umap_kernels`` swaps them for ``cache=True`` twins of the same Python
functions with the same options: the first process compiles and stores them,
every later one loads them in a fraction of a second; the layout is unchanged.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

PRE_PCA_DIMS = 50

# (module, attribute) of the numba kernels UMAP's fit compiles on every fresh process
# (found with numba's compile events; umap-learn 0.5.x). The serial layout epoch is
# the one used, because a random_state makes UMAP run single-threaded.
UMAP_UNCACHED_KERNELS = (
    ("umap.umap_", "smooth_knn_dist"),
    ("umap.umap_", "compute_membership_strengths"),
    ("umap.layouts", "_nb_optimize_layout_euclidean_single_epoch"),
)


def cache_umap_kernels() -> list[str]:
    """Make UMAP's uncached kernels ``cache=True`` (idempotent); returns the names swapped now.

    Skips anything that is not a plain uncached numba dispatcher, so another
    umap-learn version degrades to compiling as before rather than failing.
    """
    import importlib

    import numba
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    swapped = []
    for module_name, name in UMAP_UNCACHED_KERNELS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        kernel = getattr(module, name, None)
        if not isinstance(kernel, CPUDispatcher) or not isinstance(kernel._cache, NullCache):
            continue
        options = {k: v for k, v in kernel.targetoptions.items() if k != "nopython"}
        try:
            twin = numba.njit(cache=True, locals=kernel.locals, **options)(kernel.py_func)
        except RuntimeError:  # no writable cache location: keep compiling per process
            continue
        setattr(module, name, twin)
        swapped.append(f"{module_name}.{name}")
    return swapped


class MapReducer:
    """scikit-learn style: ``fit`` on a sample, ``transform`` batches of any size."""

    def __init__(self, method: str = "umap", n_components: int = 2, config: dict[str, Any] | None = None,
                 random_state: int = 0, n_neighbors_transform: int = 10):
        self.method = method
        self.n_components = n_components
        self.config = config or {}
        self.random_state = random_state
        self.n_neighbors_transform = n_neighbors_transform

    def fit(self, X: np.ndarray) -> "MapReducer":
        from sklearn.decomposition import PCA

        X = np.asarray(X, dtype=np.float32)
        n, d = X.shape
        self.method_ = self.method
        if self.method == "umap" and n < 10:
            self.method_ = "pca"  # UMAP needs a neighbourhood; a handful of points is better shown by PCA
        if self.method_ == "pca":
            k = min(self.n_components, n, d)
            self.pca_ = PCA(n_components=k, random_state=self.random_state, **self.config).fit(X)
            return self
        self.pre_ = PCA(n_components=min(PRE_PCA_DIMS, n, d), random_state=self.random_state).fit(X)
        Z = self.pre_.transform(X).astype(np.float32)
        self.embedding_ = self._fit_umap(Z)
        from sklearn.neighbors import NearestNeighbors

        self.index_ = NearestNeighbors(n_neighbors=min(self.n_neighbors_transform, n)).fit(Z)
        return self

    def _fit_umap(self, Z: np.ndarray) -> np.ndarray:
        import umap
        from sklearn.neighbors import NearestNeighbors

        cache_umap_kernels()
        params = {"n_neighbors": 15, "init": "pca", "n_epochs": 200, "random_state": self.random_state}
        params.update(self.config)
        params["n_components"] = self.n_components
        k = min(int(params["n_neighbors"]), len(Z) - 1)
        params["n_neighbors"] = k
        if params.get("metric", "euclidean") == "euclidean":
            # Exact neighbours by BLAS: faster than compiling and running pynndescent at this size.
            dist, ind = NearestNeighbors(n_neighbors=k).fit(Z).kneighbors(Z)
            params["precomputed_knn"] = (ind, dist, None)
        with warnings.catch_warnings():
            # "n_jobs overridden by random_state" and "no NNDescent index": both expected here.
            warnings.filterwarnings("ignore", category=UserWarning, module="umap")
            return umap.UMAP(**params).fit_transform(Z).astype(np.float32)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if self.method_ == "pca":
            out = self.pca_.transform(X).astype(np.float32)
            if out.shape[1] < self.n_components:  # fewer dimensions than components: pad with zeros
                out = np.hstack([out, np.zeros((len(out), self.n_components - out.shape[1]), np.float32)])
            return out
        Z = self.pre_.transform(X).astype(np.float32)
        dist, ind = self.index_.kneighbors(Z)
        weights = 1.0 / (dist + 1e-6)
        weights /= weights.sum(axis=1, keepdims=True)
        return np.einsum("nk,nkd->nd", weights, self.embedding_[ind]).astype(np.float32)
