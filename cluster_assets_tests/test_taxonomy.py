"""Taxonomies: promotion from real runs (stability check, Dagster lineage) and classification of new documents."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits
from sklearn.metrics.pairwise import cosine_similarity

from cluster_assets.stages.outputs import read_output
from cluster_assets import taxonomy as tx
from cluster_assets.cli import main
from cluster_assets.demo import DIGIT_NAMES
from cluster_assets.loader import build_defs
from cluster_assets_tests.conftest import materialize_group, write_definition, write_table

# the console script of the environment running the tests (a checkout may have no .venv of its own)
SCRIPT = Path(sys.executable).parent / "cluster-assets"


def members(labels, ids=None) -> pa.Table:
    ids = ids if ids is not None else [f"d{i}" for i in range(len(labels))]
    return pa.table({"document_id": ids, "cluster_id": pa.array(labels, pa.int32())})


def test_membership_change_matches_renamed_clusters_and_counts_churn():
    before = members([0] * 10 + [1] * 10 + [2] * 10)
    # renamed (0<->1), cluster 2 half replaced by new documents
    after = members([1] * 10 + [0] * 10 + [2] * 5, [f"d{i}" for i in range(25)])
    after = pa.concat_tables([after, members([2] * 5, [f"new{i}" for i in range(5)])])
    changes = tx.membership_changes(before, after)
    assert changes[1].previous_cluster_id == 0 and changes[1].change == pytest.approx(0.0)
    assert changes[0].previous_cluster_id == 1 and changes[0].change == pytest.approx(0.0)
    # 5 kept of 10 before and 10 after: Jaccard 5 / 15
    assert changes[2].previous_cluster_id == 2 and changes[2].jaccard == pytest.approx(5 / 15)
    brand_new = tx.membership_changes(before, members([7] * 3, ["x", "y", "z"]))
    assert brand_new[7].previous_cluster_id is None and brand_new[7].change == 1.0


def digits_definition(name="digits_tax", seed=0, **extra):
    body = {
        "cluster_name": name, "source_collection_ids": ["digits"], "feature_addresses": ["pixels"],
        "algorithm": "kmeans", "algorithm_config": {"num_clusters": 10, "random_state": seed},
        "dimension_reduction": {"method": "pca", "components": 2},
        "hierarchical": True, "hierarchy": {"levels": 2},
    }
    body.update(extra)
    return body


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def two_runs(demo_storage, definitions_dir, dagster_home):
    """The same definition materialized twice in a real instance, with another k-means seed the second time."""
    instance = dg.DagsterInstance.get()
    write_definition(definitions_dir, digits_definition(seed=0))
    first = materialize_group(definitions_dir, "digits_tax", instance)
    write_definition(definitions_dir, digits_definition(seed=7))
    second = materialize_group(definitions_dir, "digits_tax", instance)
    return demo_storage, instance, first.run_id, second.run_id


def test_promote_checks_stability_records_lineage_and_classifies_new_documents(two_runs, definitions_dir, tmp_path):
    storage, instance, first, second = two_runs
    # the membership each cluster kept between the two runs, computed here from the members artifacts
    changes = tx.membership_changes(storage.read_table("artifacts", "digits_tax", first, "members.parquet"),
                                    storage.read_table("artifacts", "digits_tax", second, "members.parquet"))
    unstable = sorted(c for c, ch in changes.items() if ch.change > 0.05)
    stable = sorted(c for c, ch in changes.items() if ch.change <= 0.05)
    assert unstable and stable, changes

    refused = run("taxonomy", "promote", "digits_tax", "--taxonomy", "digits", "--max-change", "0.05")
    assert refused.exit_code == 1
    assert f"cluster {unstable[0]}:" in refused.output and "--force" in refused.output and first in refused.output
    assert not storage.exists("taxonomies", "digits", "nodes.parquet")

    done = run("taxonomy", "promote", "digits_tax", "--taxonomy", "digits", "--max-change", "0.05",
               "--clusters", ",".join(map(str, stable)))
    assert done.exit_code == 0, done.output
    nodes = storage.read_table("taxonomies", "digits", "nodes.parquet")
    leaves = nodes.filter(nodes.column("is_leaf"))
    assert sorted(leaves.column("source_cluster_id").to_pylist()) == stable
    assert set(leaves.column("source_run_id").to_pylist()) == {second}
    # the parents of the promoted clusters came along, and every parent id names a node
    ids = set(nodes.column("node_id").to_pylist())
    assert nodes.filter(pa.compute.invert(nodes.column("is_leaf"))).num_rows > 0
    assert {p for p in nodes.column("parent_id").to_pylist() if p} <= ids
    centroids = storage.read_table("artifacts", "digits_tax", second, "centroids.parquet")
    label_of = dict(zip(centroids.column("cluster_id").to_pylist(), centroids.column("label").to_pylist()))
    assert dict(zip(leaves.column("source_cluster_id").to_pylist(), leaves.column("label").to_pylist())) == \
        {c: label_of[c] for c in stable}
    # lineage and history in Dagster
    event = instance.get_latest_materialization_event(dg.AssetKey(["taxonomies", "digits"]))
    assert event is not None and event.asset_materialization.metadata["promoted_clusters"].value == len(stable)
    defs = build_defs(definitions_dir)
    spec = defs.resolve_all_asset_specs()
    taxonomy_spec = next(s for s in spec if s.key == dg.AssetKey(["taxonomies", "digits"]))
    assert {d.asset_key for d in taxonomy_spec.deps} == {dg.AssetKey(["digits_tax", "labels"])}

    forced = run("taxonomy", "promote", "digits_tax", "--taxonomy", "digits", "--max-change", "0.05", "--force",
                 "--min-size", "100")
    assert forced.exit_code == 0 and "--force" in forced.output
    nodes = storage.read_table("taxonomies", "digits", "nodes.parquet")
    promoted = nodes.filter(nodes.column("is_leaf")).column("source_cluster_id").to_pylist()
    counts = dict(zip(centroids.column("cluster_id").to_pylist(), centroids.column("count").to_pylist()))
    assert sorted(promoted) == sorted(c for c, n in counts.items() if n >= 100)  # replaced, not appended
    listed = run("taxonomy", "list")
    assert "digits" in listed.output and "digits_tax" in listed.output

    # classify a collection the taxonomy was not built from: other ids, noisy pixels, plus junk vectors
    digits = load_digits()
    rng = np.random.default_rng(3)
    noisy = np.clip(digits.data + rng.normal(scale=1.0, size=digits.data.shape), 0, 16).astype(np.float32)
    junk = rng.uniform(-16, 0, size=(20, 64)).astype(np.float32)  # opposite sign: dissimilar to every centroid
    vectors = np.vstack([noisy, junk])
    ids = [f"scan-{i:05d}" for i in range(len(vectors))]
    write_table(storage, "scans", pa.table({
        "document_id": ids, "caption": ["scan"] * len(vectors),
        "pixels": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 64)}))
    write_definition(definitions_dir, {
        "cluster_name": "scans_tax", "source_collection_ids": ["scans"], "feature_addresses": ["pixels"],
        "algorithm": "kmeans", "algorithm_config": {"num_clusters": 5},
        "taxonomy": {"name": "digits", "similarity_threshold": 0.6}, "enrichment": {"fields": ["label"]}})
    defs = build_defs(definitions_dir)
    enriched_key = dg.AssetKey(["scans_tax", "enriched_collection"])
    deps = defs.resolve_asset_graph().get(enriched_key).parent_keys
    assert dg.AssetKey(["taxonomies", "digits"]) in deps
    result = materialize_group(definitions_dir, "scans_tax", instance)
    enriched = storage.collection_dataset("scans_scans_tax_enriched").to_table()
    node = enriched.column("taxonomy_node_id").to_pylist()
    # the same decision computed independently with scikit-learn
    leaves = nodes.filter(nodes.column("is_leaf"))
    C = np.array(leaves.column("centroid").to_pylist())
    sim = cosine_similarity(vectors, C)
    order = {d: i for i, d in enumerate(enriched.column("document_id").to_pylist())}
    expected = [leaves.column("node_id")[int(sim[i].argmax())].as_py() if sim[i].max() >= 0.6 else None
                for i in range(len(ids))]
    assert [node[order[d]] for d in ids] == expected
    assert all(node[order[d]] is None for d in ids[-20:])  # junk stays unassigned
    # and the nodes mean something: scans of a digit land mostly in nodes whose label names it
    label = enriched.column("taxonomy_label").to_pylist()
    right = sum(1 for i, t in enumerate(digits.target) if label[order[ids[i]]] and
                DIGIT_NAMES[t] in label[order[ids[i]]])
    assigned = sum(1 for i in range(len(digits.target)) if label[order[ids[i]]])
    assert assigned > 0.5 * len(digits.target) and right > 0.6 * assigned
    meta = next(e.materialization.metadata for e in result.get_asset_materialization_events()
                if e.materialization.asset_key == enriched_key)
    assert meta["taxonomy"].value == "digits" and meta["taxonomy_unassigned_documents"].value >= 20


def test_promotion_without_an_earlier_run_and_refusals_named(demo_storage, definitions_dir, dagster_home):
    write_definition(definitions_dir, digits_definition(name="once", hierarchical=False))
    run_id = materialize_group(definitions_dir, "once").run_id
    bad = run("taxonomy", "promote", "once", "--taxonomy", "t", "--clusters", "3,99")
    assert bad.exit_code == 1 and "no cluster 99" in bad.output
    bad = run("taxonomy", "promote", "once", "--taxonomy", "t", "--run-id", "nope")
    assert bad.exit_code == 1 and "nope" in bad.output
    # through the installed console script, as a user runs it
    done = subprocess.run([str(SCRIPT), "taxonomy", "promote", "once", "--taxonomy", "t", "--clusters", "1",
                           "--clusters", "2"], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert "stability not checked" in done.stderr and "promoted 2 clusters" in done.stdout
    nodes = demo_storage.read_table("taxonomies", "t", "nodes.parquet")
    assert nodes.column("parent_id").null_count == 2  # no hierarchy: no parents
    manifest = tx.read_manifest(demo_storage, "t")
    assert manifest["promotions"][0]["run_id"] == run_id and manifest["feature_addresses"] == {"once": ["pixels"]}
    shown = run("taxonomy", "show", "t")
    assert shown.exit_code == 0 and "once:" in shown.output
    missing = run("taxonomy", "show", "nothing")
    assert missing.exit_code == 1 and "no taxonomy 'nothing'" in missing.output


def test_classifying_with_other_features_fails_naming_the_taxonomy(demo_storage, definitions_dir, dagster_home):
    write_definition(definitions_dir, digits_definition(name="src", hierarchical=False))
    materialize_group(definitions_dir, "src")
    assert run("taxonomy", "promote", "src", "--taxonomy", "dig").exit_code == 0
    write_definition(definitions_dir, {
        "cluster_name": "prod", "source_collection_ids": ["products"],
        "feature_addresses": ["text_embedding"], "algorithm": "kmeans", "algorithm_config": {"num_clusters": 4},
        "taxonomy": "dig"})
    result = materialize_group(definitions_dir, "prod", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.to_string()
    assert "taxonomy 'dig' has 64-dimensional centroids" in message and "32 dimensions" in message


from cluster_assets_tests.test_cli import s3_root  # noqa: E402,F401  (moto's S3 server on loopback)


def test_promote_classify_and_map_on_s3(s3_root, definitions_dir, dagster_home, monkeypatch, tmp_path):
    from cluster_assets.demo import write_demo_collections
    from cluster_assets.storage import Storage

    monkeypatch.setenv("CLUSTER_ASSETS_STORAGE", s3_root)
    monkeypatch.chdir(tmp_path)
    storage = Storage(s3_root)
    write_demo_collections(storage)
    write_definition(definitions_dir, digits_definition(name="s3digits"))
    run_id = materialize_group(definitions_dir, "s3digits").run_id
    done = run("taxonomy", "promote", "s3digits", "--taxonomy", "s3tax")
    assert done.exit_code == 0, done.output
    assert "s3://clusters/team/taxonomies/s3tax/nodes.parquet" in done.output
    write_definition(definitions_dir, {
        "cluster_name": "again", "source_collection_ids": ["digits"], "feature_addresses": ["pixels"],
        "algorithm": "kmeans", "algorithm_config": {"num_clusters": 3}, "taxonomy": "s3tax",
        "enrichment": {"target_collection_id": "digits_again"}})
    materialize_group(definitions_dir, "again")
    enriched = storage.collection_dataset("digits_again").to_table()
    # the taxonomy was promoted from these very documents: each lands on its own cluster's node
    source = read_output(storage, "s3digits", "assignments.parquet")
    cluster_of = dict(zip(source.column("document_id").to_pylist(), source.column("cluster_id").to_pylist()))
    nodes = [n for n in enriched.column("taxonomy_node_id").to_pylist()]
    agree = sum(1 for d, n in zip(enriched.column("document_id").to_pylist(), nodes)
                if n == f"s3digits:{run_id[:8]}:{cluster_of[d]}")
    assert agree > 0.9 * enriched.num_rows
    # the map command writes the artifact to S3 and a local copy it can print
    shown = run("map", "s3digits")
    assert shown.exit_code == 0, shown.output
    local = Path(shown.stdout.strip().splitlines()[-1])
    assert local.parent == tmp_path and local.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert storage.exists("artifacts", "s3digits", run_id, "map.html")
