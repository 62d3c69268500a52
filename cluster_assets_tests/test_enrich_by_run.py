"""Enrichment as its own operation, tied to a run: `cluster-assets enrich --run-id/--target/--fields` and the
reference's request body, through Dagster (the run shows in the history)."""

from __future__ import annotations

import json

import dagster as dg
import pyarrow.parquet as pq
from click.testing import CliRunner

from cluster_assets import enrich_runs, history, ownership
from cluster_assets.cli import main
from cluster_assets.loader import build_defs
from cluster_assets.runs import run_full
from cluster_assets.spec import load_definitions
from cluster_assets.stages import layout
from cluster_assets_tests.conftest import write_definition
from cluster_assets_tests.small import append_blobs, definition, write_blobs


def test_enrich_from_a_past_incremental_run_into_a_new_target(tmp_path, definitions_dir, storage, dagster_home):
    write_blobs(storage)
    write_definition(definitions_dir, definition())
    spec = load_definitions(definitions_dir)[0][0].spec
    instance = dg.DagsterInstance.get()
    defs = build_defs(definitions_dir)
    fit = ["sample", "embeddings", "model", "assignments", "labels"]  # what enrichment needs of a fit
    first = run_full(defs, spec, instance, storage, raise_on_error=True, stages=fit)
    append_blobs(storage, "points", 5, 900)
    incremental = run_full(defs, spec, instance, storage, stages=["assignments"], raise_on_error=True)
    second = run_full(defs, spec, instance, storage, raise_on_error=True, stages=fit)
    assert layout.read_current(storage, spec).fit_id == second.run_id

    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["executions", "blobs", "--json"]).output)
    assert incremental.run_id in [r["run_id"] for r in listed]
    # the reference's body as it is written, from a file; an option overrides its fields
    body = tmp_path / "enrich.json"
    body.write_text(json.dumps({"run_id": incremental.run_id, "target_collection_id": "by_run",
                                "fields": ["cluster_id", "label", "summary", "keywords"]}))
    done = runner.invoke(main, ["enrich", "blobs", "--body", str(body), "--fields", "cluster_id,label"])
    assert done.exit_code == 0, done.output
    target = storage.root + "/collections/by_run"
    owner = ownership.read_owner(storage, "by_run")
    assert owner.cluster_name == "blobs" and owner.fit_id == first.run_id  # the fit the incremental run used
    assert sorted(owner.files) == ["part-0.parquet", "part-900.parquet"]
    for name in owner.files:
        table = pq.read_table(f"{target}/{name}")
        assert {"cluster_id", "label"} <= set(table.column_names) and "summary" not in table.column_names
        expected = storage.read_table(*layout.file_parts(spec, first.run_id, f"points/{name}", layout.ASSIGNMENTS))
        assert dict(zip(table.column("document_id").to_pylist(), table.column("cluster_id").to_pylist())) == \
            dict(zip(expected.column("document_id").to_pylist(), expected.column("cluster_id").to_pylist()))
    latest = history.runs_of(instance, "blobs", limit=1)[0].as_dict()
    assert set(latest["materialized"]) == {"enriched_collection"} and latest["status"] == "SUCCESS"
    assert latest["enriched_collections"] == {"by_run": storage.uri("collections", "by_run")}
    assert enrich_runs.fit_of_run(instance, spec, second.run_id) == second.run_id  # a full run: its own fit

    count = len(instance.get_run_records())
    body.write_text(json.dumps({"run_id": second.run_id, "target": "x"}))
    wrong = runner.invoke(main, ["enrich", "blobs", "--body", str(body)])
    assert wrong.exit_code == 1 and f"{body}: not an enrich request body" in wrong.output and "'target'" in wrong.output
    missing = runner.invoke(main, ["enrich", "blobs", "--run-id", "no-such-run", "--target", "nope"])
    assert missing.exit_code == 1 and "run 'no-such-run' is not in the Dagster instance" in missing.output
    storage.fs.delete_dir(storage.path(*layout.cluster_parts(spec, "fits", first.run_id)))
    gone = runner.invoke(main, ["enrich", "blobs", "--run-id", first.run_id, "--target", "nope"])
    assert gone.exit_code == 1 and f"the outputs of its fit {first.run_id} are gone" in gone.output
    bad = runner.invoke(main, ["enrich", "blobs", "--target", "points"])
    assert bad.exit_code == 1 and "must differ from the source collections" in bad.output
    assert not storage.exists("collections", "nope") and len(instance.get_run_records()) == count


def test_the_enrich_request_is_run_config_a_program_submits(definitions_dir, storage):
    """What GraphQL submits: the asset's run config; a target another definition reads is refused by ownership."""

    write_blobs(storage)
    write_blobs(storage, "other")
    write_definition(definitions_dir, definition())
    spec = load_definitions(definitions_dir)[0][0].spec
    instance = dg.DagsterInstance.ephemeral()
    defs = build_defs(definitions_dir)
    full = run_full(defs, spec, instance, storage, raise_on_error=True)
    config = enrich_runs.EnrichConfig(run_id=full.run_id, target_collection_id="other", fields=["cluster_id"])
    refused = run_full(defs, spec, instance, storage, stages=[enrich_runs.STAGE],
                       run_config=enrich_runs.run_config(spec, defs, config))
    assert not refused.success
    assert ownership.read_owner(storage, "other") is None
    ok = run_full(defs, spec, instance, storage, stages=[enrich_runs.STAGE],
                  run_config=enrich_runs.run_config(spec, defs, config.model_copy(update={"target_collection_id":
                                                                                          "mine"})))
    assert ok.success
    assert pq.read_table(f"{storage.root}/collections/mine/part-0.parquet").column_names[-1] == "cluster_id"


def test_the_request_body_pasted_into_a_definition_says_where_run_id_goes():
    import pytest

    from cluster_assets.spec import DefinitionError, parse_definition

    body = {"cluster_name": "x", "source_collection_ids": ["c"], "feature_addresses": ["v"],
            "enrichment": {"run_id": "r", "target_collection_id": "t", "fields": ["cluster_id", "label"]}}
    with pytest.raises(DefinitionError, match=r"x.json: enrichment: run_id: a run is chosen per enrich request, "
                                              r"not in the definition: `cluster-assets enrich CLUSTER --run-id R`"):
        parse_definition(body, "x.json")
    del body["enrichment"]["run_id"]
    assert parse_definition(body).enrichment.fields == ["cluster_id", "label"]
