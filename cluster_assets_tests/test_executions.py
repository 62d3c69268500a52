"""``cluster-assets executions`` and the run sections of ``definitions show``, over a real Dagster instance."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from cluster_assets.cli import main
from cluster_assets.loader import build_defs
from cluster_assets.resources import StorageResource
from cluster_assets.spec import load_definitions
from cluster_assets.storage import Storage
from cluster_assets_tests.conftest import launch, materialize_group, write_definition
from cluster_assets_tests.small import definition, write_blobs


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def recorded_history(tmp_path_factory):
    """Three runs in a Dagster instance of its own (SQLite): manual, scheduled, and another definition's.
    Made once; each test gets a copy (``history``), as some add runs or change the definitions."""
    base = tmp_path_factory.mktemp("history")
    home, folder, root = base / "dagster_home", base / "clusters", base / "storage"
    for path in (home, folder, root):
        path.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    storage = Storage(str(root))
    write_blobs(storage)
    write_definition(folder, definition(triggers=[{"type": "cron", "cron": "0 3 * * *", "name": "nightly"}]))
    write_definition(folder, definition("other"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAGSTER_HOME", str(home))
        env.setenv("CLUSTER_ASSETS_STORAGE", str(root))
        env.setenv("CLUSTER_ASSETS_DEFINITIONS_DIR", str(folder))
        defs = build_defs(folder)
        with dg.DagsterInstance.get() as instance:
            manual = materialize_group(folder, "blobs", instance)
            materialize_group(folder, "other", instance)
            schedule = defs.resolve_schedule_def("blobs__nightly")
            with dg.build_schedule_context(instance=instance, resources={"storage": StorageResource(root=storage.root)},
                                           scheduled_execution_time=dt.datetime(2024, 1, 1, 3, tzinfo=dt.timezone.utc)) as context:
                tick = schedule.evaluate_tick(context)
            [scheduled] = launch(defs, instance, tick)
    return base, {"manual": manual.run_id, "scheduled": scheduled.run_id}


@pytest.fixture
def history(recorded_history, dagster_home, definitions_dir, storage):
    """A copy of the recorded instance, definitions and storage in this test's DAGSTER_HOME, definitions
    folder and storage root (the run ids are the recorded ones)."""
    base, run_ids = recorded_history
    for source, target in ((base / "dagster_home", dagster_home), (base / "clusters", definitions_dir),
                           (base / "storage", Path(storage.root))):
        shutil.copytree(source, target, dirs_exist_ok=True)
    return {**run_ids, "defs": build_defs(definitions_dir), "instance": dg.DagsterInstance.get(), "storage": storage}


def test_executions_lists_the_definitions_runs_newest_first(history, definitions_dir):
    result = run("executions", "blobs", "--json", "--dir", definitions_dir)
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)
    assert [r["run_id"] for r in runs] == [history["scheduled"], history["manual"]]  # not "other"'s run
    scheduled, manual = runs
    assert scheduled["trigger"] == "nightly" and manual["trigger"] == "manual"
    for r in runs:
        assert r["status"] == "SUCCESS"
        assert r["counts"] == {"documents": 120, "num_clusters": 3, "noise_documents": 0}
        assert r["duration_s"] > 0
    assert dt.datetime.fromisoformat(scheduled["started_at"]) > dt.datetime.fromisoformat(manual["started_at"])

    table = run("executions", "blobs", "--dir", definitions_dir).output.splitlines()
    assert table[0].split() == ["run", "status", "started", "duration", "trigger", "documents", "clusters"]
    assert table[2].startswith(history["scheduled"][:8]) and "nightly" in table[2] and " 120 " in table[2]
    assert table[3].startswith(history["manual"][:8]) and "manual" in table[3]


def test_failed_runs_are_listed_and_deleted_definitions_keep_their_history(history, definitions_dir, storage):
    (definitions_dir / "blobs.json").write_text(json.dumps(definition(feature_addresses=["missing_column"])))
    failed = materialize_group(definitions_dir, "blobs", history["instance"], raise_on_error=False)
    assert not failed.success
    runs = json.loads(run("executions", "blobs", "--json", "--dir", definitions_dir).output)
    assert runs[0]["run_id"] == failed.run_id and runs[0]["status"] == "FAILURE"
    assert runs[0]["counts"]["documents"] is None

    (definitions_dir / "blobs.json").unlink()
    runs = json.loads(run("executions", "blobs", "--json", "--limit", "2", "--dir", definitions_dir).output)
    assert [r["run_id"] for r in runs] == [failed.run_id, history["scheduled"]]


def test_definitions_show_has_triggers_latest_run_and_enrichment_status(history, definitions_dir):
    result = run("definitions", "show", "blobs", "--json", "--dir", definitions_dir)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["triggers"] == [{"name": "nightly", "type": "cron", "dagster_name": "blobs__nightly",
                                   "enabled": True, "kind": "schedule", "cron": "0 3 * * *", "timezone": "UTC"}]
    latest = report["latest_run"]
    assert latest["run_id"] == history["scheduled"] and latest["trigger"] == "nightly"
    assert latest["documents"] == 120 and latest["clusters"] == 3
    assert latest["artifacts"]["members"].endswith(f"{history['scheduled']}/members.parquet")
    status = report["enrichment_status"]
    assert status["status"] == "up to date" and status["run_id"] == history["scheduled"]
    assert status["documents"] == 120

    # Assignments re-materialized alone: the enriched collection is now behind.
    from cluster_assets.runs import run_full

    spec = load_definitions(definitions_dir)[0][0].spec
    assert run_full(history["defs"], spec, history["instance"], history["storage"], stages=["assignments"]).success
    report = json.loads(run("definitions", "show", "blobs", "--json", "--dir", definitions_dir).output)
    assert report["enrichment_status"]["status"] == "behind the latest assignments"


def test_executions_without_dagster_home_says_what_to_do(definitions_dir, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = CliRunner().invoke(main, ["executions", "blobs", "--dir", str(definitions_dir)])
    assert result.exit_code == 1
    assert "DAGSTER_HOME is not set" in result.output


def test_a_killed_run_shows_dead_and_is_marked_failed_on_request(tmp_path, dagster_home, definitions_dir, storage):
    """A real `dagster asset materialize` killed with SIGKILL mid-run stays STARTED in Dagster."""
    started = tmp_path / "started"
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
               "-f", str(Path(__file__).with_name("tiny_location.py")), "--select", "tiny/sample"]
    with open(tmp_path / "run.log", "wb") as log:
        process = subprocess.Popen(command, env={**os.environ, "TINY_BLOCK": str(started)}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert process.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "the run never reached its asset"
            time.sleep(0.05)
        alive = json.loads(run("executions", "tiny", "--json", "--dir", definitions_dir).output)
        assert [(r["status"], r["dead_process"]) for r in alive] == [("STARTED", None)]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    dead = json.loads(run("executions", "tiny", "--json", "--dir", definitions_dir).output)
    assert [(r["run_id"], r["status"]) for r in dead] == [(alive[0]["run_id"], "DEAD")]
    assert dead[0]["dead_process"].startswith(f"pid {process.pid} on ")
    time.sleep(0.2)
    again = json.loads(run("executions", "tiny", "--json", "--dir", definitions_dir).output)
    assert again[0]["duration_s"] == dead[0]["duration_s"]  # no longer growing
    table = run("executions", "tiny", "--dir", definitions_dir).output.splitlines()
    assert table[2].split()[:2] == [alive[0]["run_id"][:8], "DEAD"]

    marked = CliRunner().invoke(main, ["executions", "tiny", "--json", "--mark-dead-failed",
                                          "--dir", str(definitions_dir)])
    assert marked.exit_code == 0, marked.output
    assert f"marked run {alive[0]['run_id']} failed" in marked.stderr
    assert [(r["status"], r["dead_process"]) for r in json.loads(marked.stdout)] == [("FAILURE", None)]
    assert dg.DagsterInstance.get().get_run_by_id(alive[0]["run_id"]).status == dg.DagsterRunStatus.FAILURE
