"""The whole graph through Dagster's own test API, on real data (scikit-learn's digits) and the demo products.

One module-scoped run materializes four definitions that together cover UMAP and
PCA in 2 and 3 components, a sample smaller than the collection, kmeans,
agglomerative and hdbscan, the default and a named enrichment target. The tests
then read what that run left: assets, artifacts, enriched collections, metadata.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
import yaml
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from cluster_assets.demo import DIGIT_NAMES, write_demo_collections
from cluster_assets.loader import build_defs
from cluster_assets.stages.outputs import read_output
from cluster_assets.storage import Storage
from cluster_assets_tests.conftest import materialize_group

REPO = Path(__file__).resolve().parent.parent
from cluster_assets.stages import STAGE_NAMES as STAGES  # the six stages of the issue, model and cluster_map
SAMPLED = 500

DEFINITIONS = {
    # digits_kmeans: the bundled definition, verbatim (kmeans, 10 clusters, UMAP 2-D, default target
    # digits_digits_kmeans_enriched)
    "digits_sampled": {
        "cluster_name": "digits_sampled",
        "source_collection_ids": ["digits"],
        "feature_addresses": ["mixpeek://image_extractor@v1/pixels"],
        "algorithm": "kmeans",
        "algorithm_config": {"num_clusters": 10},
        "sample_size": SAMPLED,
        "dimension_reduction": {"method": "umap", "components": 3},
        "enrichment": {"target_collection_id": "digits_by_sample", "fields": ["label"]},
    },
    "digits_agglomerative": {
        "cluster_name": "digits_agglomerative",
        "source_collection_ids": ["digits"],
        "feature_addresses": ["pixels"],
        "algorithm": "agglomerative",
        "algorithm_config": {"num_clusters": 10},
        "dimension_reduction": {"method": "pca", "components": 2},
        "enrichment": {"target_collection_id": "digits_agglomerative",
                       "fields": ["label", "keywords", "confidence", "representative"]},
    },
    # product_topics: the bundled reference-API JSON, verbatim (hdbscan, PCA 3-D, products_enriched)
}
GROUPS = ("digits_kmeans", "digits_sampled", "digits_agglomerative", "product_topics")


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Run:
    """What the module's materialization left behind."""

    def __init__(self, root: Path, folder: Path, results: dict[str, dg.ExecuteInProcessResult], sources_before,
                 sources_after):
        self.root = root
        self.storage = Storage(root)
        self.folder = folder
        self.results = results
        self.run_ids = {group: result.run_id for group, result in results.items()}
        self.sources_before = sources_before
        self.sources_after = sources_after
        self.metadata: dict[str, dict] = {}
        for result in results.values():
            for event in result.get_asset_materialization_events():
                materialization = event.event_specific_data.materialization
                self.metadata[materialization.asset_key.to_user_string()] = {
                    k: v.value for k, v in materialization.metadata.items()}

    def asset(self, cluster: str, name: str, fit_id: str | None = None) -> pa.Table:
        return read_output(self.storage, cluster, name, fit_id)

    def artifact(self, cluster: str, name: str, run_id: str | None = None) -> pa.Table:
        return self.storage.read_table("artifacts", cluster, run_id or self.run_ids[cluster], name)

    def collection(self, collection_id: str) -> pa.Table:
        return self.storage.collection_dataset(collection_id).to_table()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    base = tmp_path_factory.mktemp("pipeline")
    root, folder = base / "storage", base / "clusters"
    folder.mkdir()
    shutil.copy(REPO / "clusters" / "digits_kmeans.yaml", folder)
    shutil.copy(REPO / "clusters" / "product_topics.json", folder)
    for name, body in DEFINITIONS.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(body))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLUSTER_ASSETS_STORAGE", str(root))
        env.setenv("CLUSTER_ASSETS_DEFINITIONS_DIR", str(folder))
        for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
            env.delenv(key, raising=False)
        write_demo_collections(Storage(root))
        before = {cid: file_hashes(root / "collections" / cid) for cid in ("digits", "products")}
        instance = dg.DagsterInstance.ephemeral()
        results = {group: materialize_group(folder, group, instance) for group in GROUPS}
        after = {cid: file_hashes(root / "collections" / cid) for cid in ("digits", "products")}
        yield Run(root, folder, results, before, after)


# --- the Dagster graph ------------------------------------------------------------------------

def test_asset_keys_groups_and_external_collections(run):
    graph = build_defs(run.folder).resolve_asset_graph()
    for group in GROUPS:
        keys = {dg.AssetKey([group, stage]) for stage in STAGES}
        assert keys <= graph.get_all_asset_keys()
        for key in keys:
            assert graph.get(key).group_name == group
            assert graph.get(key).is_materializable
    for cluster, collection in (("digits_kmeans", "digits"), ("product_topics", "products")):
        source = dg.AssetKey(["collections", collection])
        assert source in graph.get(dg.AssetKey([cluster, "sample"])).parent_keys
        assert not graph.get(source).is_materializable  # external: written by someone else
    parents = lambda stage: graph.get(dg.AssetKey(["digits_kmeans", stage])).parent_keys  # noqa: E731
    key = lambda stage: dg.AssetKey(["digits_kmeans", stage])  # noqa: E731
    source = dg.AssetKey(["collections", "digits"])
    # the edges are what each stage reads
    assert parents("embeddings") == {key("sample"), source}
    assert parents("model") == {key("embeddings")}
    assert parents("assignments") == {key("model"), source}
    assert parents("reduced_coords") == {key("model"), key("assignments"), source}
    assert parents("labels") == {key("embeddings"), key("model"), key("assignments"), source}
    assert parents("enriched_collection") == {key("assignments"), key("labels"), source}
    assert parents("cluster_map") == {key("reduced_coords"), key("labels")}
    # the per-file stages are partitioned by the definition's files, the rest not
    for stage in STAGES:
        partitioned = graph.get(key(stage)).partitions_def is not None
        assert partitioned == (stage in ("assignments", "reduced_coords", "enriched_collection")), stage


def test_every_asset_of_every_group_materialized_in_one_run_per_definition(run):
    assert all(result.success for result in run.results.values())
    for group, result in run.results.items():
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert materialized == {f"{group}/{stage}" for stage in STAGES}
    expected = {f"{group}/{stage}" for group in GROUPS for stage in STAGES}
    assert set(run.metadata) == expected


def test_materialization_metadata(run):
    m = run.metadata
    assert m["digits_kmeans/sample"]["documents"] == 1797
    assert m["digits_kmeans/embeddings"]["dimensions"] == 64
    assigned = m["digits_kmeans/assignments"]
    assert assigned["dagster/row_count"] == assigned["documents"] == assigned["file_documents"] == 1797
    assert assigned["num_clusters"] == 10 and assigned["noise_share"] == 0.0
    assert assigned["cluster_assets/fit_id"] == run.run_ids["digits_kmeans"]
    [(file, fingerprint)] = assigned["cluster_assets/source_files"].items()
    assert file == "digits/part-0.parquet" and fingerprint["size"] == (run.root / "collections/digits/part-0.parquet").stat().st_size
    labelled = m["digits_kmeans/labels"]
    assert len(labelled["cluster_sizes"]) == 10 and sum(labelled["cluster_sizes"].values()) == 1797
    assert 0.0 < labelled["silhouette"] < 1.0
    assert m["digits_kmeans/model"]["cluster_assets/fit_id"] == run.run_ids["digits_kmeans"]
    for group in GROUPS:
        for stage in STAGES:
            assert m[f"{group}/{stage}"]["duration_s"] >= 0.0
            assert m[f"{group}/{stage}"]["peak_rss_mb"] > 0
    # noise, where there is noise, is counted and shared out of the documents
    topics = m["product_topics/labels"]
    assert topics["noise_share"] == round(topics["noise_documents"] / topics["documents"], 4)
    # artifact paths point at this run's files
    for group in GROUPS:
        assert m[f"{group}/labels"]["centroids_artifact"] == str(
            run.root / "artifacts" / group / run.run_ids[group] / "centroids.parquet")
        assert m[f"{group}/reduced_coords"]["members_artifact"] == str(
            run.root / "artifacts" / group / run.run_ids[group] / "members.parquet")
        assert Path(m[f"{group}/labels"]["centroids_artifact"]).is_file()
        assert Path(m[f"{group}/reduced_coords"]["members_artifact"]).is_file()
    assert m["digits_kmeans/enriched_collection"]["dagster/uri"] == str(
        run.root / "collections" / "digits_digits_kmeans_enriched")
    assert m["digits_kmeans/enriched_collection"]["enriched_file"] == str(
        run.root / "collections" / "digits_digits_kmeans_enriched" / "part-0.parquet")


# --- ground truth -----------------------------------------------------------------------------

def test_kmeans_on_digits_matches_scikit_learn_against_the_true_digits(run):
    digits = load_digits()
    enriched = run.collection("digits_digits_kmeans_enriched").sort_by("document_id")
    ours = np.asarray(enriched.column("cluster_id").to_pylist())
    truth = np.asarray(enriched.column("true_digit").to_pylist())
    assert (truth == digits.target).all()
    direct = KMeans(n_clusters=10, random_state=0, n_init="auto").fit_predict(digits.data)
    ours_nmi, direct_nmi = normalized_mutual_info_score(truth, ours), normalized_mutual_info_score(truth, direct)
    ours_ari, direct_ari = adjusted_rand_score(truth, ours), adjusted_rand_score(truth, direct)
    assert ours_nmi > 0.6 and ours_ari > 0.45
    assert abs(ours_nmi - direct_nmi) < 0.02, (ours_nmi, direct_nmi)
    assert abs(ours_ari - direct_ari) < 0.03, (ours_ari, direct_ari)


def test_data_labels_name_the_digit_a_cluster_holds(run):
    # The captions say "handwritten digit seven": c-TF-IDF must put the digit's name first.
    enriched = run.collection("digits_digits_kmeans_enriched")
    truth = enriched.column("true_digit").to_pylist()
    clusters = enriched.column("cluster_id").to_pylist()
    majority = {c: Counter(t for t, k in zip(truth, clusters) if k == c).most_common(1)[0][0] for c in set(clusters)}
    labels = run.asset("digits_kmeans", "labels.parquet").to_pylist()
    assert len(labels) == 10
    # keywords may be phrases now ("digit seven"): the digit's name is a word of the first one
    named = sum(DIGIT_NAMES[majority[label["cluster_id"]]] in label["keywords"][0].split() for label in labels)
    assert named >= 8, [(label["cluster_id"], label["keywords"][:3]) for label in labels]
    for label in labels:
        assert label["label"] and label["summary"] and label["representative_ids"]


# --- fit on a sample, assign everything -------------------------------------------------------

def test_a_sample_smaller_than_the_collection_still_assigns_every_document(run):
    m = run.metadata
    assert m["digits_sampled/sample"]["sample_size"] == SAMPLED
    assert m["digits_sampled/model"]["fitted_on"] == SAMPLED
    assert m["digits_sampled/assignments"]["documents"] == 1797
    assigned = run.asset("digits_sampled", "assignments.parquet")
    assert assigned.num_rows == 1797 and min(assigned.column("cluster_id").to_pylist()) >= 0
    enriched = run.collection("digits_by_sample")
    assert enriched.num_rows == 1797 and enriched.column("cluster_id").null_count == 0
    # a model fitted on 500 digits still finds the digits
    assert normalized_mutual_info_score(enriched.column("true_digit").to_pylist(),
                                        enriched.column("cluster_id").to_pylist()) > 0.6


def test_same_definition_same_data_same_result(run):
    first_assignments = run.asset("digits_sampled", "assignments.parquet")
    first_members = run.artifact("digits_sampled", "members.parquet")
    first_sample = run.asset("digits_sampled", "sample.parquet")
    first_fit = run.run_ids["digits_sampled"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLUSTER_ASSETS_STORAGE", str(run.root))
        again = materialize_group(run.folder, "digits_sampled")
    assert again.run_id != first_fit
    assert run.asset("digits_sampled", "sample.parquet").equals(first_sample)
    assert run.asset("digits_sampled", "assignments.parquet").equals(first_assignments)
    second_members = run.artifact("digits_sampled", "members.parquet", again.run_id)
    assert second_members.equals(first_members)
    # each run keeps its own artifacts, each fit its own outputs: the first fit's are still readable
    assert sorted(run.storage.list_dir("artifacts", "digits_sampled")) == sorted([first_fit, again.run_id])
    assert run.asset("digits_sampled", "assignments.parquet", first_fit).equals(first_assignments)


# --- reduction and the run's artifacts --------------------------------------------------------

@pytest.mark.parametrize("group,method,axes,documents", [
    ("digits_kmeans", "umap", ("x", "y"), 1797),
    ("digits_sampled", "umap", ("x", "y", "z"), 1797),
    ("digits_agglomerative", "pca", ("x", "y"), 1797),
    ("product_topics", "pca", ("x", "y", "z"), 1200),
])
def test_members_have_coordinates_for_every_document(run, group, method, axes, documents):
    members = run.artifact(group, "members.parquet")
    assert members.column_names == ["document_id", "cluster_id", *axes, "collection_id"]
    assert members.num_rows == documents
    assigned = run.asset(group, "assignments.parquet")
    assert members.column("document_id").equals(assigned.column("document_id"))
    assert members.column("cluster_id").equals(assigned.column("cluster_id"))
    coords = np.column_stack([members.column(a).to_numpy() for a in axes])
    assert np.isfinite(coords).all() and (coords.std(axis=0) > 0).all()
    assert run.metadata[f"{group}/reduced_coords"]["method"] == method
    assert run.metadata[f"{group}/reduced_coords"]["components"] == len(axes)


def test_umap_map_separates_the_digits(run):
    # members' 2-D coordinates keep digits apart: a point's nearest neighbour on the map is mostly the same digit
    from sklearn.neighbors import KNeighborsClassifier

    members = run.artifact("digits_kmeans", "members.parquet").sort_by("document_id")
    xy = np.column_stack([members.column("x").to_numpy(), members.column("y").to_numpy()])
    truth = load_digits().target
    accuracy = KNeighborsClassifier(5).fit(xy[::2], truth[::2]).score(xy[1::2], truth[1::2])
    assert accuracy > 0.85


def test_centroids_artifact(run):
    centroids = run.artifact("digits_kmeans", "centroids.parquet")
    for column in ("cluster_id", "centroid", "count", "label", "summary", "keywords"):
        assert column in centroids.column_names
    assert sorted(centroids.column("cluster_id").to_pylist()) == list(range(10))
    assert sum(centroids.column("count").to_pylist()) == 1797
    matrix = np.asarray(centroids.column("centroid").to_pylist())
    assert matrix.shape == (10, 64)
    # a centroid is the mean of its members' vectors
    digits = load_digits().data
    assigned = run.asset("digits_kmeans", "assignments.parquet").column("cluster_id").to_numpy()
    for row, c in enumerate(centroids.column("cluster_id").to_pylist()):
        np.testing.assert_allclose(matrix[row], digits[assigned == c].mean(axis=0), rtol=1e-4, atol=1e-4)
    labels = run.asset("digits_kmeans", "labels.parquet")
    assert centroids.sort_by("cluster_id").column("label").equals(labels.sort_by("cluster_id").column("label"))


# --- enrichment -------------------------------------------------------------------------------

@pytest.mark.parametrize("group,source,target,fields", [
    ("digits_kmeans", "digits", "digits_digits_kmeans_enriched", ["label", "summary", "keywords"]),
    ("digits_agglomerative", "digits", "digits_agglomerative", ["label", "keywords", "confidence", "representative"]),
    ("product_topics", "products", "products_enriched", ["label", "summary", "keywords"]),
])
def test_enriched_collection_has_every_source_column_but_the_vectors_plus_cluster_and_fields(
        run, group, source, target, fields):
    original = run.collection(source)
    carried = [c for c in original.column_names if c not in ("pixels", "text_embedding")]
    enriched = run.collection(target)
    assert enriched.column_names == carried + ["cluster_id", *fields]
    assert enriched.select(carried).equals(original.select(carried))
    assigned = run.asset(group, "assignments.parquet")
    assert enriched.column("cluster_id").to_pylist() == assigned.column("cluster_id").to_pylist()
    labels = {row["cluster_id"]: row for row in run.asset(group, "labels.parquet").to_pylist()}
    representatives = {i for row in labels.values() for i in row["representative_ids"]}
    for row in enriched.select(["document_id", "cluster_id", *fields]).to_pylist():
        label = labels.get(row["cluster_id"])
        if label is None:  # noise: no label fields
            assert row["cluster_id"] == -1 and row["label"] is None
            continue
        for name in fields:
            if name == "representative":
                assert row[name] == (row["document_id"] in representatives)
            elif name == "confidence":
                assert row[name] == pytest.approx(label[name])
            else:
                assert row[name] == label[name]
    assert run.metadata[f"{group}/enriched_collection"]["fields"] == ["cluster_id", *fields]


def test_noise_documents_are_minus_one_in_the_enriched_collection(run):
    enriched = run.collection("products_enriched")
    noise = enriched.column("cluster_id").to_pylist().count(-1)
    assert noise == run.metadata["product_topics/assignments"]["noise_documents"]


def test_source_collections_are_byte_identical_afterwards(run):
    assert run.sources_before == run.sources_after
    assert run.sources_before["digits"] and run.sources_before["products"]
    assert sorted(run.storage.list_collections()) == sorted(
        ["digits", "products", "digits_digits_kmeans_enriched", "digits_by_sample", "digits_agglomerative",
         "products_enriched"])


# --- streaming in batches ---------------------------------------------------------------------

def run_stages(root: Path, algorithm: str, config: dict) -> dict[str, pa.Table]:
    from cluster_assets import stages
    from cluster_assets.demo import digits_table
    from cluster_assets.spec import parse_definition

    storage = Storage(root)
    table = digits_table()  # three files of uneven sizes, as another tool may write them
    for name, start, length in (("a", 0, 700), ("b", 700, 97), ("c", 797, 1000)):
        storage.write_table(table.slice(start, length), "collections", "digits", f"{name}.parquet")
    spec = parse_definition({"cluster_name": "streamed", "source_collection_ids": ["digits"],
                             "feature_addresses": ["pixels"], "algorithm": algorithm, "algorithm_config": config,
                             "sample_size": 600, "dimension_reduction": {"method": "pca", "components": 2}})
    ctx = stages.plain_context(storage, spec, "run")
    assert ctx.partitions == ["digits/a.parquet", "digits/b.parquet", "digits/c.parquet"]
    stages.run_plain(storage, spec, ctx=ctx)
    out = {name: read_output(storage, "streamed", name)
           for name in ("assignments.parquet", "coords.parquet", "clusters.parquet", "labels.parquet")}
    out["enriched"] = storage.collection_dataset("digits_streamed_enriched").to_table()
    return out


@pytest.mark.parametrize("algorithm,config", [("kmeans", {"num_clusters": 10}), ("hdbscan", {"min_cluster_size": 10})])
def test_small_batches_give_the_same_result_as_one_batch(tmp_path, monkeypatch, algorithm, config):
    # The stages stream every document in batches of BATCH rows; with 1,797 documents a run is one
    # batch, so shrink it to exercise the batch boundaries (and the files' own boundaries).
    import cluster_assets.stages.embed
    import cluster_assets.stages.enrich

    whole = run_stages(tmp_path / "whole", algorithm, config)
    for module in (cluster_assets.stages.embed, cluster_assets.stages.enrich):
        monkeypatch.setattr(module, "BATCH", 100)
    batched = run_stages(tmp_path / "batched", algorithm, config)
    for name in whole:
        assert whole[name].column_names == batched[name].column_names, name
        for column in whole[name].column_names:
            a, b = whole[name].column(column), batched[name].column(column)
            if pa.types.is_floating(a.type):  # sums accumulated batch by batch: equal up to rounding
                np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5, err_msg=f"{name}.{column}")
            elif pa.types.is_fixed_size_list(a.type) or (pa.types.is_list(a.type) and pa.types.is_floating(a.type.value_type)):
                np.testing.assert_allclose(np.asarray(a.to_pylist()), np.asarray(b.to_pylist()), rtol=1e-5, atol=1e-6)
            else:
                assert a.equals(b), f"{name}.{column}"
    assert whole["enriched"].num_rows == 1797
