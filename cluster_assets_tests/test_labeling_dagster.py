"""LLM labeling inside Dagster, end to end: a definition's group materialized against a fake provider."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pytest

from cluster_assets.stages.outputs import read_output
from cluster_assets_tests.conftest import REPO, materialize_group, write_definition
from cluster_assets_tests.llm_servers import (  # noqa: F401 - fixtures
    GATEWAY_KEY, KEY, Answer, Status, documents, no_llm_environment, openai_server, user_text,
)

pytestmark = pytest.mark.usefixtures("no_llm_environment")
GROUP = "products_llm"
SHAPE = {"sentiment": "positive | negative | neutral"}


def write_products_definition(folder: Path, base_url: str, **llm) -> None:
    write_definition(folder, {
        "cluster_name": GROUP,
        "source_collection_ids": ["products"],
        "feature_addresses": ["mixpeek://text_extractor@v1/text_embedding"],
        "algorithm": "kmeans",
        "algorithm_config": {"num_clusters": 8},
        "dimension_reduction": {"method": "pca", "components": 2},
        "llm_labeling": {
            "provider": "openai_chat_v1", "model_name": "fake-model", "base_url": base_url,
            "labeling_inputs": {"input_mappings": [
                {"input_key": "text", "source_type": "payload", "path": "title"},
                {"input_key": "text", "source_type": "payload", "path": "metadata.department"},
            ]},
            "response_shape": SHAPE, "max_samples_per_cluster": 4, **llm,
        },
        "enrichment": {"fields": ["label", "summary", "keywords", "confidence", "sentiment"]},
    })


def labels_metadata(instance: dg.DagsterInstance) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey([GROUP, "labels"]))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def run_log_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(dg.serialize_value(record) for record in instance.all_logs(run_id))


def files_containing(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_group_materializes_with_llm_labels_end_to_end(openai_server, demo_storage, definitions_dir, dagster_home,
                                                       monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    write_products_definition(definitions_dir, openai_server.base_url)
    instance = dg.DagsterInstance.get()
    result = materialize_group(definitions_dir, GROUP, instance)
    assert result.success

    # What was sent: one request per cluster, the mapped fields of its most central documents, in order.
    requests = openai_server.completions()
    assert len(requests) == 8
    labels = read_output(demo_storage, GROUP, "labels.parquet")
    assert labels.column("labeling_source").to_pylist() == ["llm"] * 8
    products = demo_storage.collection_dataset("products").to_table(columns=["document_id", "title", "metadata"])
    by_id = {r["document_id"]: r for r in products.to_pylist()}
    sent = {tuple(documents(r.body)) for r in requests}
    for reps in labels.column("representative_ids").to_pylist():
        assert 1 <= len(reps) <= 4
        expected = tuple(f"{by_id[i]['title']}\n{by_id[i]['metadata']['department']}" for i in reps)
        assert expected in sent  # the central documents, nearest first, title then department

    # The answers: labels, the response_shape column in labels, the run's centroids artifact and the enriched copy.
    assert all(label.startswith("About ") for label in labels.column("label").to_pylist())
    assert set(labels.column("sentiment").to_pylist()) <= set(SHAPE["sentiment"].split(" | "))
    centroids = demo_storage.read_table("artifacts", GROUP, result.run_id, "centroids.parquet")
    assert centroids.column("sentiment").to_pylist() == [
        dict(zip(labels.column("cluster_id").to_pylist(), labels.column("sentiment").to_pylist()))[c]
        for c in centroids.column("cluster_id").to_pylist()]
    enriched = demo_storage.collection_dataset(f"products_{GROUP}_enriched").to_table()
    assert {"label", "sentiment", "confidence"} <= set(enriched.column_names)
    assert pc.all(pc.is_valid(enriched.column("sentiment"))).as_py()
    assert pc.unique(enriched.column("confidence")).to_pylist() == [pytest.approx(0.9)]

    meta = labels_metadata(instance)
    assert meta["labeling_source"] == "llm" and meta["llm_calls"] == 8 and meta["fallbacks"] == 0
    assert (meta["cache_hits"], meta["cache_misses"]) == (0, 8)
    assert meta["input_tokens"] == sum(r.input_tokens for r in requests) > 0  # what the server reported
    assert meta["output_tokens"] == sum(r.output_tokens for r in requests) > 0 and meta["labeling_wall_s"] > 0

    # A second run: every cluster from the cache, no call.
    again = materialize_group(definitions_dir, GROUP, instance)
    assert again.success and len(openai_server.completions()) == 8
    meta = labels_metadata(instance)
    assert (meta["cache_hits"], meta["cache_misses"], meta["llm_calls"]) == (8, 0, 0)

    # The key is nowhere: logs, the event log, metadata, artifacts, the cache, the instance's files.
    needle = KEY.encode()
    assert KEY not in caplog.text
    assert KEY not in run_log_text(instance, result.run_id) + run_log_text(instance, again.run_id)
    assert files_containing(Path(demo_storage.root), needle) == []
    assert files_containing(dagster_home, needle) == []


def test_without_a_key_the_run_succeeds_with_data_labels_and_says_why(openai_server, demo_storage, definitions_dir):
    write_products_definition(definitions_dir, openai_server.base_url)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_group(definitions_dir, GROUP, instance)
    assert result.success and openai_server.requests == []
    meta = labels_metadata(instance)
    assert meta["labeling_source"] == "fallback" and "OPENAI_API_KEY" in meta["fallback_reason"]
    labels = read_output(demo_storage, GROUP, "labels.parquet")
    assert labels.column("labeling_source").to_pylist() == ["fallback"] * 8
    assert labels.column("sentiment").null_count == 8  # the shape's column exists, empty
    assert all(label for label in labels.column("label").to_pylist())  # data labels from keywords
    warnings = [r.user_message for r in instance.all_logs(result.run_id)
                if r.level == logging.WARNING and "fall back" in r.user_message]
    assert len(warnings) == 1 and "OPENAI_API_KEY" in warnings[0]
    enriched = demo_storage.collection_dataset(f"products_{GROUP}_enriched").to_table()
    assert "sentiment" in enriched.column_names and enriched.column("sentiment").null_count == enriched.num_rows


def test_a_refused_key_quoted_by_the_provider_never_reaches_dagster(openai_server, demo_storage, definitions_dir,
                                                                     dagster_home, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    openai_server.queue(Status(401, f"Incorrect API key provided: {KEY}"))
    write_products_definition(definitions_dir, openai_server.base_url, max_concurrency=1)
    instance = dg.DagsterInstance.get()
    result = materialize_group(definitions_dir, GROUP, instance)
    assert result.success and len(openai_server.completions()) == 1
    meta = labels_metadata(instance)
    assert meta["labeling_source"] == "fallback" and "HTTP 401" in meta["fallback_reason"]
    assert KEY not in caplog.text and KEY not in run_log_text(instance, result.run_id)
    assert files_containing(Path(demo_storage.root), KEY.encode()) == []
    assert files_containing(dagster_home, KEY.encode()) == []


def test_a_gateway_key_echoed_by_the_provider_is_nowhere_in_dagster_or_storage(
        openai_server, demo_storage, definitions_dir, dagster_home, monkeypatch, caplog):
    """A key no pattern recognises, quoted whole and by its suffix in an error body and in an answer,
    and a password in the endpoint URL: none reaches the logs, the run database or any artifact."""
    caplog.set_level(logging.DEBUG)
    suffix, password = GATEWAY_KEY[-12:], "pa55-w0rd-9d41c7"
    monkeypatch.setenv("OPENAI_API_KEY", GATEWAY_KEY)
    openai_server.queue(
        Status(500, f"upstream rejected key {GATEWAY_KEY} (the key ending ...{suffix})"),
        Answer({"label": f"Gateway {GATEWAY_KEY}", "summary": f"Plans for ...{suffix}", "keywords": [suffix, "plans"],
                "confidence": 0.8, "sentiment": "neutral"}))
    endpoint = openai_server.base_url.replace("://", f"://alice:{password}@")
    write_products_definition(definitions_dir, endpoint, max_concurrency=1, max_retries=0)
    instance = dg.DagsterInstance.get()
    result = materialize_group(definitions_dir, GROUP, instance)
    assert result.success and len(openai_server.completions()) == 8

    labels = read_output(demo_storage, GROUP, "labels.parquet")
    assert "Gateway [redacted]" in labels.column("label").to_pylist()  # the answer was kept, scrubbed
    meta = labels_metadata(instance)
    assert meta["labeling_source"] == "mixed"
    assert "HTTP 500: upstream rejected key [redacted]" in meta["fallback_reason"]
    root = Path(demo_storage.root)
    assert [p.name for p in root.rglob("map.html")] and list((root / "cache" / "llm_labels").glob("*.json"))
    tables = [labels, demo_storage.read_table("artifacts", GROUP, result.run_id, "centroids.parquet"),
              demo_storage.collection_dataset(f"products_{GROUP}_enriched").to_table(columns=["label", "summary", "keywords"])]
    shown = "\n".join([caplog.text, run_log_text(instance, result.run_id), *(str(t.to_pylist()) for t in tables)])
    for secret in (GATEWAY_KEY, suffix, password):
        assert secret not in shown
        assert files_containing(root, secret.encode()) == []  # cache entries, map.html, every Parquet file
        assert files_containing(dagster_home, secret.encode()) == []  # the run database


def test_the_cli_run_labels_with_the_key_from_the_environment(
        openai_server, demo_storage, definitions_dir, dagster_home):
    write_products_definition(definitions_dir, openai_server.base_url)
    env = {**os.environ, "OPENAI_API_KEY": KEY, "DAGSTER_HOME": str(dagster_home),
           "CLUSTER_ASSETS_DEFINITIONS_DIR": str(definitions_dir), "CLUSTER_ASSETS_STORAGE": demo_storage.root}
    command = Path(sys.executable).parent / "cluster-assets"
    done = subprocess.run([str(command), "run", GROUP], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert len(openai_server.completions()) == 8
    assert KEY not in output
    meta = labels_metadata(dg.DagsterInstance.get())  # the run the CLI recorded in DAGSTER_HOME
    assert meta["labeling_source"] == "llm" and meta["llm_calls"] == 8
    labels = read_output(demo_storage, GROUP, "labels.parquet")
    assert labels.column("labeling_source").to_pylist() == ["llm"] * 8
    assert files_containing(dagster_home, KEY.encode()) == []


def test_hierarchy_parents_are_named_by_the_llm_from_their_childrens_labels(
        openai_server, demo_storage, definitions_dir, dagster_home, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    write_definition(definitions_dir, {
        "cluster_name": "products_tree",
        "source_collection_ids": ["products"],
        "feature_addresses": ["text_embedding"],
        "algorithm": "kmeans",
        "algorithm_config": {"num_clusters": 8},
        "hierarchical": True,
        "hierarchy": {"levels": 2, "top_nodes": 3},
        "dimension_reduction": {"method": "pca"},
        "llm_labeling": {"provider": "openai", "model_name": "fake-model", "base_url": openai_server.base_url,
                         "labeling_inputs": {"input_mappings": [
                             {"input_key": "text", "source_type": "payload", "path": "title"}]}},
    })
    result = materialize_group(definitions_dir, "products_tree", dg.DagsterInstance.get())
    assert result.success
    run = result.run_id
    nodes = demo_storage.read_table("artifacts", "products_tree", run, "hierarchy.parquet").to_pylist()
    leaves = {n["node_id"]: n for n in nodes if n["is_leaf"]}
    parents = [n for n in nodes if not n["is_leaf"]]
    assert leaves and 1 <= len(parents) <= 3

    requests = openai_server.completions()
    parent_requests = [r for r in requests if "sub-clusters listed below" in user_text(r.body)]
    assert len(parent_requests) == len(parents) and len(requests) == len(leaves) + len(parents)
    for request in parent_requests:
        text = user_text(request.body)
        assert "Document 1:" not in text  # children's labels and keywords, never raw documents
        named_children = [l["label"] for l in leaves.values() if f"- {l['label']} (" in text]
        assert named_children  # each parent prompt lists its children by their (LLM) labels
    # the parents carry the LLM's answers (the fake server labels a parent "About media": it saw no document)
    assert all(p["label"] == "About media" for p in parents)
    metadata = {k: v.value for k, v in dg.DagsterInstance.get().get_latest_materialization_event(
        dg.AssetKey(["products_tree", "labels"])).asset_materialization.metadata.items()}
    assert metadata["parent_labeling_source"] == "llm"
