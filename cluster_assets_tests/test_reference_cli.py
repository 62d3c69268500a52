"""The reference's list filters, executions per trigger and per definition, and show as written."""

from __future__ import annotations

import json

import dagster as dg
import yaml
from click.testing import CliRunner

from cluster_assets.cli import main
from cluster_assets.loader import build_defs
from cluster_assets.runs import run_full
from cluster_assets.spec import load_definitions
from cluster_assets.triggers import TAG_TRIGGER
from cluster_assets_tests.conftest import write_definition
from cluster_assets_tests.small import definition, write_blobs


def test_definitions_list_filters_and_show_as_written(definitions_dir, storage):
    write_definition(definitions_dir, definition("shop_topics", "products",
                                                 llm_labeling={"provider": "openai_chat_v1"}))
    write_definition(definitions_dir, definition("shop_faces", "images", algorithm="dbscan", algorithm_config={}))
    write_definition(definitions_dir, definition("news", "articles"))
    runner = CliRunner()

    def names(*args):
        done = runner.invoke(main, ["definitions", "list", "--json", *args])
        assert done.exit_code == 0, done.output
        return sorted(r["cluster_name"] for r in json.loads(done.output))

    assert names() == ["news", "shop_faces", "shop_topics"]
    assert names("--name", "SHOP") == ["shop_faces", "shop_topics"]
    assert names("--name", "*topics") == ["shop_topics"]
    assert names("--algorithm", "dbscan") == ["shop_faces"]
    assert names("--source", "articles") == ["news"]
    assert names("--name", "shop", "--algorithm", "kmeans") == ["shop_topics"]
    assert "no definition in" in runner.invoke(main, ["definitions", "list", "--source", "nothing"]).output

    shown = yaml.safe_load(runner.invoke(main, ["definitions", "show", "shop_topics"]).output)
    assert shown["definition"]["llm_labeling"] == {"provider": "openai_chat_v1"}  # as written
    assert "algorithm" in shown["definition"] and "enrichment" not in shown["definition"]
    assert shown["normalised"]["llm_labeling"]["provider"] == "openai"


def test_executions_by_trigger_and_a_definitions_own_step_time(definitions_dir, storage, dagster_home):
    write_blobs(storage)
    write_blobs(storage, "other")
    write_definition(definitions_dir, definition())
    write_definition(definitions_dir, definition("second", "other"))
    loaded = {d.spec.cluster_name: d.spec for d in load_definitions(definitions_dir)[0]}
    instance = dg.DagsterInstance.get()
    defs = build_defs(definitions_dir)
    scheduled = run_full(defs, loaded["blobs"], instance, storage, raise_on_error=True, stages=["sample"],
                         tags={TAG_TRIGGER: "nightly", "dagster/schedule_name": "blobs__nightly"})
    # one run over both definitions' fit-level stages
    both = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey([n, s]) for n in loaded for s in ("sample", "embeddings")])
    assert both.success
    runner = CliRunner()
    runs = {r["run_id"]: r for r in json.loads(runner.invoke(main, ["executions", "blobs", "--json"]).output)}
    assert set(runs) == {scheduled.run_id, both.run_id}
    shared = runs[both.run_id]
    stats = [s for s in instance.get_run_step_stats(both.run_id) if s.step_key.startswith("blobs__")]
    assert len(stats) == 2
    assert abs(shared["duration_s"] - sum(s.end_time - s.start_time for s in stats)) < 0.01
    assert shared["duration_s"] < shared["run_duration_s"]
    assert runs[scheduled.run_id]["duration_s"] == runs[scheduled.run_id]["run_duration_s"]
    for name in ("nightly", "blobs__nightly"):
        listed = json.loads(runner.invoke(main, ["executions", "blobs", "--trigger", name, "--json"]).output)
        assert [r["run_id"] for r in listed] == [scheduled.run_id]
    none = runner.invoke(main, ["executions", "blobs", "--trigger", "hourly"])
    assert none.exit_code == 0 and "no runs of 'blobs'" in none.output


def test_one_bundled_demo_uses_only_the_reference_fields():
    from pathlib import Path

    from cluster_assets.spec.loading import load_definition_file

    path = Path(__file__).resolve().parent.parent / "clusters" / "product_topics_reference.json"
    body = json.loads(path.read_text())
    # the fields of the reference's own create-cluster examples
    assert set(body) <= {"cluster_name", "source_collection_ids", "feature_addresses", "algorithm",
                         "algorithm_config", "dimension_reduction", "llm_labeling", "hierarchical", "sample_size",
                         "enrichment"}
    assert set(body["llm_labeling"]) <= {"provider", "model_name"}
    assert set(body["enrichment"]) <= {"target_collection_id", "fields"}
    spec = load_definition_file(path)
    assert spec.llm_labeling.provider == "openai" and "cluster_id" in spec.enrichment.fields
