"""Every registry entry through the same checks (scikit-learn's common-checks idea), and the
fit-level options: the cluster space, outlier reassignment, EVoC's layers as the hierarchy."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.cluster.hierarchy import is_valid_linkage
from sklearn.datasets import load_digits

from cluster_assets import algorithms, checks, hierarchy, stages
from cluster_assets.algorithms import REGISTRY, ClusterModel
from cluster_assets.spec import parse_definition
from cluster_assets.stages import layout
from cluster_assets.stages.model import fit_space, load_fit
from cluster_assets.stages.outputs import read_output
from cluster_assets_tests.conftest import algorithm_params

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(3, 8))
    return np.vstack([rng.normal(c, 0.5, size=(60, 8)) for c in centres]).astype(np.float32)


@pytest.mark.parametrize("name", algorithm_params(REGISTRY))
def test_registry_entry_contract(name, blobs):
    info = REGISTRY[name]
    assert name in algorithms.ALGORITHMS and info.name == name and info.why
    algorithms.check_config(name, {})  # its defaults are valid for its estimator
    if info.param_defaults:  # parameters and defaults read from the source agree with the imported estimator's
        assert info.param_defaults() == {n: p.default for n, p in inspect.signature(info.load().__init__).parameters.items()
                                         if n != "self"}
    config = {"num_clusters": 3} if info.count_param else {}
    params = algorithms.estimator_params(name, config)
    # in the space the algorithm clusters in by default, as the model stage fits it
    _, blobs = fit_space(digits_definition(f"contract_{name}", algorithm=name, algorithm_config=config), blobs)
    model = ClusterModel(name, params).fit(blobs)
    labels = model.labels_
    assert labels.shape == (len(blobs),) and labels.dtype == np.int64 and labels.min() >= -1
    # three well-separated blobs: no cluster straddles two blobs, and most documents are clustered;
    # an algorithm given num_clusters finds exactly the blobs (mean_shift's bandwidth, estimated for
    # data of many topics, may split a blob: the digits test holds it to the right granularity)
    found = sorted({int(l) for l in labels if l >= 0})
    blob = np.repeat(np.arange(3), 60)
    for c in found:
        assert np.bincount(blob[labels == c]).max() >= 0.95 * (labels == c).sum(), (name, c)
    assert (labels >= 0).mean() >= 0.9, name
    if info.count_param:
        assert len(found) == 3, (name, found)
    # assigning the fitted points agrees with the fit; the pickled model assigns the same
    predicted = model.predict(blobs)
    assert predicted.dtype == np.int64 and (predicted == labels).mean() >= 0.95, name
    again = pickle.loads(pickle.dumps(model))
    assert np.array_equal(again.predict(blobs[:20]), predicted[:20])
    # seeded: the same data gives the same clustering
    assert np.array_equal(ClusterModel(name, params).fit(blobs).labels_, labels), name
    # its own tree, when it has one, is a valid linkage over its clusters
    if info.tree:
        Z, source = info.tree(model.estimator_, labels, found)
        assert Z is None or is_valid_linkage(Z), source
    # the README's algorithm table gives its defaults and why
    assert re.search(rf"^\| `{name}` \|", README.read_text(), re.M), f"{name} missing from the README's table"


def test_validating_an_evoc_definition_imports_no_evoc():
    """EVoC's import compiles numba kernels (minutes on a fresh install): loading and validating a definition
    that names it must not import it; only its fit does."""
    code = ("import sys\nfrom cluster_assets.spec import parse_definition\n"
            "parse_definition({'cluster_name': 'e', 'source_collection_ids': ['c'], 'feature_addresses': ['v'], "
            "'algorithm': 'evoc', 'algorithm_config': {'num_clusters': 5, 'noise_level': 0.3}})\n"
            "parse_definition({'cluster_name': 'e', 'source_collection_ids': ['c'], 'feature_addresses': ['v'], "
            "'algorithm': 'evoc', 'sample_size': 100})\n"
            "try:\n    parse_definition({'cluster_name': 'e', 'source_collection_ids': ['c'], "
            "'feature_addresses': ['v'], 'algorithm': 'evoc', 'algorithm_config': {'noise': 0.3}})\n"
            "except ValueError as exc:\n    print('refused:', exc)\n"
            "print('evoc imported:', 'evoc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert "refused:" in out and "unknown parameter 'noise' for evoc" in out, out
    assert "evoc imported: False" in out, out


def test_names_are_not_branched_on_outside_the_registry():
    source = (Path(algorithms.__file__).parent / "hierarchy.py").read_text()
    assert '"hdbscan"' not in source and "'hdbscan'" not in source
    model_code = Path(algorithms.__file__).read_text().split("class ClusterModel")[1]
    assert not re.search(r'self\.algorithm (==|!=|in)', model_code)


# --- the fit-level options on digits ----------------------------------------------------------

def digits_definition(name: str, **extra):
    return parse_definition({
        "cluster_name": name, "source_collection_ids": ["digits"],
        "feature_addresses": ["mixpeek://image_extractor@v1/pixels"], "sample_size": 600, **extra,
    })


def test_outliers_are_reassigned_for_every_file_and_reported_before_and_after(digits_storage):
    # hdbscan on the raw 64-d vectors leaves many documents as noise: the case outlier reassignment is for
    spec = digits_definition("outliers", algorithm="hdbscan", cluster_space={"method": "none"},
                             outliers={"reassign": True})
    results = stages.run_plain(digits_storage, spec, "run", until="labels")
    assignments = results["assignments"].metadata
    assert assignments["noise_share_before_reassignment"] > 0.2
    assert assignments["noise_share"] == 0.0
    assert results["labels"].metadata["noise_share_before_reassignment"] == assignments["noise_share_before_reassignment"]
    assert results["labels"].metadata["noise_share"] == 0.0
    assert results["model"].metadata["sample_noise_share"] == 0.0 < results["model"].metadata[
        "sample_noise_share_before_reassignment"]
    labels = read_output(digits_storage, spec.cluster_name, layout.ASSIGNMENTS, "run").column("cluster_id").to_numpy()
    assert (labels >= 0).all()
    # the noise-share check reads the share after reassignment
    noise = next(r for r in checks.evaluate(digits_storage, spec, "run", None) if r.check_name == "noise_share")
    assert noise.metadata["noise_share"].value == 0.0 and noise.passed
    # a new file is assigned by the fit: reassigned too (Fit.predict does it)
    fit = load_fit(digits_storage, spec, "run")
    far_from_everything = load_digits().data[:50].astype(np.float32) * 1.3
    raw, before = fit.assign(far_from_everything)[0], fit.model.predict(far_from_everything)
    assert (before < 0).any() and (raw >= 0).all()

    capped = digits_definition("outliers_capped", algorithm="hdbscan", cluster_space={"method": "none"},
                               outliers={"reassign": True, "max_distance": 1e-3})
    capped_results = stages.run_plain(digits_storage, capped, "run", until="assignments")["assignments"].metadata
    assert capped_results["noise_share"] == capped_results["noise_share_before_reassignment"] == \
        assignments["noise_share_before_reassignment"]


def test_density_algorithms_cluster_in_a_umap_space_fitted_on_the_sample(digits_storage):
    from sklearn.metrics import adjusted_rand_score

    spec = digits_definition("space", algorithm="hdbscan")
    results = stages.run_plain(digits_storage, spec, "run", until="assignments")
    assert results["model"].metadata["cluster_space"].startswith("umap 5-d")
    fit = load_fit(digits_storage, spec, "run")
    assert fit.space is not None and fit.space.n_components == 5
    labels = read_output(digits_storage, spec.cluster_name, layout.ASSIGNMENTS, "run").column("cluster_id").to_numpy()
    truth = load_digits().target
    assert (labels >= 0).mean() > 0.8 and adjusted_rand_score(truth, labels) > 0.5
    with pytest.raises(ValueError, match="cluster_space.method"):
        digits_definition("bad", algorithm="hdbscan", cluster_space={"method": "tsne"})


@pytest.mark.slow
def test_evoc_layers_become_the_hierarchy():
    X = load_digits().data.astype(np.float32)
    params = algorithms.estimator_params("evoc", {"num_clusters": 10}, hierarchical=True)
    assert params == {"random_state": 0, "base_n_clusters": 10}
    assert algorithms.estimator_params("evoc", {"num_clusters": 10})["approx_n_clusters"] == 10
    model = ClusterModel("evoc", params).fit(X)
    ids = sorted(int(c) for c in np.unique(model.labels_) if c >= 0)
    assert len(ids) == 10  # the finest layer holds the clusters asked for
    assert len(model.estimator_.cluster_layers_) >= 2
    counts = [int((model.labels_ == c).sum()) for c in ids]
    centroids = np.array([X[model.labels_ == c].mean(axis=0) for c in ids])
    tree = hierarchy.cluster_hierarchy(ids, counts, centroids, algorithm="evoc", estimator=model.estimator_,
                                       point_labels=model.labels_)
    assert tree.source == "evoc_layers" and tree.depth >= 2
