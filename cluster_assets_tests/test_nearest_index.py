"""Assignment without predict through the fit's nearest-neighbour index: the exact search's labels, faster."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from cluster_assets import algorithms
from cluster_assets.algorithms import ClusterModel

pytest.importorskip("faiss", reason="faiss-cpu is not installed")


def blobs(n: int, seed: int, dim: int = 24, centres: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    C = np.random.default_rng(99).standard_normal((centres, dim)).astype(np.float32) * 2
    return (C[rng.integers(0, centres, n)] + rng.standard_normal((n, dim), dtype=np.float32) * 0.8)


@pytest.mark.parametrize("algorithm, params", [("agglomerative", {"n_clusters": 6}),
                                               ("dbscan", {"eps": 4.5, "min_samples": 5})])
def test_the_index_gives_the_exact_search_labels(algorithm, params, monkeypatch):
    monkeypatch.setattr(algorithms, "INDEX_MIN_POINTS", 500)
    model = ClusterModel(algorithm, params).fit(blobs(800, 0))
    assert model.reference_index_ is not None
    X = blobs(5000, 1)
    shipped = pickle.loads(pickle.dumps(model))  # as load_fit and the Ray workers get it
    with_index = shipped.predict(X)
    assert "_index" in shipped.__dict__ and "_index" not in pickle.loads(pickle.dumps(shipped)).__dict__

    shipped.reference_index_ = None
    shipped.__dict__.pop("_index")
    exact = shipped.predict(X)
    assert len(np.unique(exact)) >= 3
    assert (with_index == exact).mean() >= 0.995


def test_small_fits_and_other_metrics_stay_exact():
    assert ClusterModel("agglomerative", {"n_clusters": 3}).fit(blobs(300, 0)).reference_index_ is None
    model = ClusterModel("agglomerative", {"n_clusters": 3, "metric": "cosine", "linkage": "average"})
    assert model.fit(blobs(300, 0)).reference_index_ is None
