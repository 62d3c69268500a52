"""The nine algorithms on scikit-learn's digits: fit on a sample, assign every document.

These run the stage functions the Dagster assets call (``run_sample``,
``run_embeddings``, ``run_assignments``) on a real collection, without Dagster,
so that each algorithm costs what its fit costs.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import normalized_mutual_info_score

from cluster_assets import algorithms, stages
from cluster_assets.algorithms import AlgorithmConfigError, ClusterModel
from cluster_assets.demo import digits_table
from cluster_assets.spec import parse_definition
from cluster_assets.stages import layout
from cluster_assets.stages.outputs import read_output
from cluster_assets.storage import Storage
from cluster_assets_tests.conftest import COMPILES_ON_FIRST_USE, algorithm_params

SAMPLE = 600
DENSITY = {"dbscan", "hdbscan", "optics"}
# Every algorithm with its defaults (plus num_clusters where it takes one), and the NMI floor against
# the true digits it must reach: the defaults must work on real vectors without tuning.
CASES = {
    "kmeans": ({"num_clusters": 10}, 0.6),
    "gaussian_mixture": ({"num_clusters": 10}, 0.45),
    "agglomerative": ({"num_clusters": 10}, 0.7),
    "spectral": ({"num_clusters": 10}, 0.7),
    "dbscan": ({}, 0.6),
    "hdbscan": ({}, 0.6),
    "optics": ({}, 0.3),
    "mean_shift": ({}, 0.4),
    "evoc": ({"num_clusters": 10}, 0.6),
}


def definition(algorithm: str, config: dict, **extra):
    return parse_definition({
        "cluster_name": f"digits_{algorithm}",
        "source_collection_ids": ["digits"],
        "feature_addresses": ["mixpeek://image_extractor@v1/pixels"],
        "algorithm": algorithm,
        "algorithm_config": config,
        "sample_size": SAMPLE,
        **extra,
    })


def assign(storage: Storage, spec, run_id: str = "run"):
    results = stages.run_plain(storage, spec, run_id, until="assignments")
    assigned = read_output(storage, spec.cluster_name, layout.ASSIGNMENTS, run_id)
    return results, assigned


@pytest.mark.parametrize("algorithm", algorithm_params(CASES))
def test_every_algorithm_fits_a_sample_and_assigns_every_document(digits_storage, algorithm):
    config, floor = CASES[algorithm]
    spec = definition(algorithm, config)
    results, assigned = assign(digits_storage, spec)
    result = results["assignments"]

    truth = load_digits().target
    ids = assigned.column("document_id").to_pylist()
    labels = np.asarray(assigned.column("cluster_id").to_pylist())
    assert ids == [f"digit-{i:04d}" for i in range(len(truth))]  # every document, in collection order
    assert result.metadata["documents"] == len(truth) == 1797
    assert results["model"].metadata["fitted_on"] == SAMPLE
    if algorithm in DENSITY or algorithm == "evoc":
        assert labels.min() >= -1
    else:
        assert labels.min() >= 0, f"{algorithm} left documents without a cluster"
    assert normalized_mutual_info_score(truth, labels) > floor

    model: ClusterModel = pickle.loads(digits_storage.read_bytes(*layout.fit_parts(spec, "run", layout.MODEL))).model
    count_param = algorithms.REGISTRY[algorithm].count_param
    if count_param:  # num_clusters reached the estimator under its own name
        assert getattr(model.estimator_, count_param) == 10
        if algorithm != "evoc":  # approx_n_clusters: about 10
            assert result.metadata["num_clusters"] == 10
    for key, value in config.items():
        if key != "num_clusters":
            assert getattr(model.estimator_, key) == value

    # The sampled documents keep the labels the fit gave them (noise stays noise).
    sample_rows = read_output(digits_storage, spec.cluster_name, layout.SAMPLE, "run").column("row").to_numpy()
    agreement = (labels[sample_rows] == model.labels_).mean()
    # dbscan: a border point may join either neighbour; in a UMAP cluster space a sample point is placed
    # from its neighbours, almost exactly where the fit put it
    assert agreement >= (0.97 if algorithms.REGISTRY[algorithm].cluster_space != "none" else 1.0)
    assert result.metadata["noise_documents"] == int((labels == -1).sum())


@pytest.mark.parametrize("algorithm", ["kmeans", "hdbscan", "spectral"])
def test_same_definition_same_data_same_assignments(digits_storage, algorithm):
    spec = definition(algorithm, CASES[algorithm][0])
    _, first = assign(digits_storage, spec, "first")
    _, second = assign(digits_storage, spec, "second")
    assert first.equals(second)


def test_mean_shift_with_its_defaults_works_on_high_dimensional_data(digits_storage):
    # scikit-learn's bin seeding finds no seed near any point in 64 dimensions; the model seeds
    # from the data instead of failing.
    results, assigned = assign(digits_storage, definition("mean_shift", {}))
    assert assigned.num_rows == 1797
    assert min(assigned.column("cluster_id").to_pylist()) >= 0
    assert results["assignments"].metadata["num_clusters"] >= 1



def test_mean_shift_seeds_from_the_data_only_where_bin_seeding_finds_no_point():
    """In 64 dimensions no document is within the bandwidth of a bin seed (MeanShift would fail): the
    seeds are sampled documents. In 2 dimensions bin seeding stays."""
    from sklearn.datasets import make_blobs

    params = algorithms.estimator_params("mean_shift", {})
    digits = ClusterModel("mean_shift", params).fit(load_digits().data[:500])
    assert digits.fitted_params_["bin_seeding"] is False and len(digits.fitted_params_["seeds"]) == 200
    assert len(np.unique(digits.labels_)) > 1
    X, truth = make_blobs(600, centers=[[0, 0], [10, 0], [0, 10]], cluster_std=0.5, random_state=0)
    blobs = ClusterModel("mean_shift", params).fit(X)
    assert blobs.fitted_params_["bin_seeding"] is True and "seeds" not in blobs.fitted_params_
    assert all(len(set(truth[blobs.labels_ == c])) == 1 for c in np.unique(blobs.labels_))  # no cluster spans blobs
    # a min_bin_freq no bin reaches leaves no grid seed at all (scikit-learn fails): seeds from the data
    sparse_bins = ClusterModel("mean_shift", {**params, "min_bin_freq": 1000}).fit(X)
    assert sparse_bins.fitted_params_["bin_seeding"] is False and len(np.unique(sparse_bins.labels_)) >= 3

def test_gaussian_mixture_fits_float32_vectors_with_constant_dimensions():
    # digits has pixels that are always 0: full covariances are singular in float32.
    X = load_digits().data.astype(np.float32)
    model = ClusterModel("gaussian_mixture", algorithms.estimator_params("gaussian_mixture", {"num_clusters": 10}))
    labels = model.fit(X[:500]).predict(X)
    assert len(np.unique(labels)) == 10


def test_density_noise_is_minus_one_and_kept():
    rng = np.random.default_rng(0)
    blobs = np.vstack([rng.normal(c, 0.05, size=(60, 2)) for c in ((0, 0), (3, 3))])
    far = np.array([[10.0, -10.0], [-8.0, 9.0]])
    X = np.vstack([blobs, far]).astype(np.float32)
    for algorithm, config in (("dbscan", {"eps": 0.3}), ("hdbscan", {"min_cluster_size": 10}),
                              ("optics", {"min_samples": 10, "cluster_method": "dbscan", "eps": 0.3})):
        model = ClusterModel(algorithm, algorithms.estimator_params(algorithm, config)).fit(X)
        labels = model.predict(X)
        assert (labels[-2:] == -1).all(), algorithm
        assert len(set(labels[:60].tolist())) == 1 and labels[0] >= 0, algorithm
        assert (model.predict(np.array([[20.0, 20.0]], np.float32)) == -1).all(), algorithm


# --- algorithm_config: mapped and checked before any fit ---------------------------------------

@pytest.mark.parametrize("algorithm,param", [("kmeans", "n_clusters"), ("agglomerative", "n_clusters"),
                                             ("spectral", "n_clusters"), ("gaussian_mixture", "n_components")])
def test_num_clusters_maps_to_the_estimators_count(algorithm, param):
    params = algorithms.estimator_params(algorithm, {"num_clusters": 7})
    assert params[param] == 7 and "num_clusters" not in params


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(AlgorithmConfigError) as caught:
        algorithms.estimator_params("kmeans", {"n_cluster": 3})
    assert caught.value.field == "algorithm_config.n_cluster"
    message = str(caught.value)
    assert "'n_cluster'" in message and "kmeans" in message
    for valid in ("n_clusters", "num_clusters", "max_iter", "random_state"):
        assert valid in message


def test_num_clusters_for_an_algorithm_without_a_count_is_refused():
    with pytest.raises(AlgorithmConfigError, match="does not take a cluster count"):
        algorithms.estimator_params("dbscan", {"num_clusters": 5})


def test_num_clusters_and_its_alias_together_are_refused():
    with pytest.raises(AlgorithmConfigError, match="either num_clusters or n_clusters"):
        algorithms.estimator_params("kmeans", {"num_clusters": 5, "n_clusters": 5})


def test_invalid_value_is_caught_before_fitting_and_names_the_key():
    with pytest.raises(AlgorithmConfigError) as caught:
        algorithms.check_config("kmeans", {"num_clusters": 0})
    assert caught.value.field == "algorithm_config.num_clusters"


def test_every_registered_algorithm_is_loadable_with_defaults():
    assert set(algorithms.ALGORITHMS) == set(algorithms.REGISTRY) and len(algorithms.ALGORITHMS) == 9
    for name in algorithms.ALGORITHMS:
        algorithms.check_config(name, {})


# --- every algorithm through Dagster ----------------------------------------------------------

DAGSTER_PASS = [n for n in algorithms.ALGORITHMS if n not in COMPILES_ON_FIRST_USE]


@pytest.mark.parametrize("names", [pytest.param(DAGSTER_PASS, id="every-algorithm"),
                                   pytest.param(sorted(COMPILES_ON_FIRST_USE), id="compiled", marks=pytest.mark.slow)])
def test_every_algorithm_through_one_code_location_and_dagster_runs(names, storage, definitions_dir):
    """One folder holding a definition per algorithm (only the algorithm and num_clusters) loads as one code
    location; each definition's full run, through Dagster, fits, assigns every document, passes its checks,
    labels and enriches, and its clusters follow the true digits."""
    import dagster as dg

    from cluster_assets.loader import build_defs
    from cluster_assets.runs import run_full
    from cluster_assets.spec import load_definitions
    from cluster_assets_tests.conftest import write_definition

    table = digits_table().slice(0, 600)
    storage.write_collection("digits", table.schema, [table])
    for name in names:
        write_definition(definitions_dir, {
            "cluster_name": f"every_{name}", "source_collection_ids": ["digits"], "feature_addresses": ["pixels"],
            "algorithm": name, "algorithm_config": {"num_clusters": 10} if "num_clusters" in CASES[name][0] else {}})
    defs = build_defs(definitions_dir)
    specs = {d.spec.algorithm: d.spec for d in load_definitions(definitions_dir)[0]}
    assert sorted(specs) == sorted(names)
    truth = np.asarray(table.column("true_digit").to_pylist())
    instance = dg.DagsterInstance.ephemeral()
    for name in names:
        spec = specs[name]
        result = run_full(defs, spec, instance, storage)
        assert result.success, name
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), (name, [(c.check_name, c.passed) for c in checks])
        assigned = read_output(storage, spec.cluster_name, layout.ASSIGNMENTS, result.run_id)
        labels = np.asarray(assigned.column("cluster_id").to_pylist())
        assert len(labels) == len(truth), name
        assert normalized_mutual_info_score(truth, labels) > CASES[name][1], name
        named = read_output(storage, spec.cluster_name, layout.LABELS, result.run_id)
        assert set(named.column("cluster_id").to_pylist()) == {int(c) for c in labels if c >= 0}, name
        enriched = storage.collection_dataset(spec.target_collection_ids()["digits"]).to_table()
        assert enriched.num_rows == len(truth) and "label" in enriched.column_names, name
