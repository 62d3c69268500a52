"""Triggers -> schedules and sensors: names, status, targets, run keys and tags, event sensing, bad input."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pyarrow as pa
import pytest

from cluster_assets import triggers
from cluster_assets.stages import STAGE_NAMES as STAGES
from cluster_assets.loader import build_defs
from cluster_assets.resources import StorageResource
from cluster_assets.spec import load_definitions
from cluster_assets_tests.conftest import launch, write_definition
from cluster_assets_tests.small import append_blobs, blobs_table, definition, write_blobs

GROUP_KEYS = {f"blobs/{s}" for s in STAGES}


@pytest.fixture
def defs_with_triggers(definitions_dir, storage):
    write_blobs(storage)
    write_definition(definitions_dir, definition(triggers=[
        {"type": "cron", "cron": "0 3 * * *", "timezone": "Europe/Paris", "name": "nightly"},
        {"type": "interval", "minutes": 30},
        {"type": "interval", "minutes": 7, "enabled": False},
        {"type": "event", "min_new_documents": 5, "name": "on_arrival"},
    ]))
    return build_defs(definitions_dir)


def event_context(instance, storage, cursor=None):
    return dg.build_sensor_context(cursor=cursor, instance=instance,
                                   resources={"storage": StorageResource(root=storage.root)})


def test_triggers_become_schedules_and_sensors(defs_with_triggers):
    repo = defs_with_triggers.get_repository_def()
    assert sorted(s.name for s in repo.schedule_defs) == ["blobs__interval_1", "blobs__nightly"]
    assert sorted(s.name for s in repo.sensor_defs) == ["blobs__interval_2", "blobs__on_arrival"]

    nightly = defs_with_triggers.resolve_schedule_def("blobs__nightly")
    assert nightly.cron_schedule == "0 3 * * *"
    assert nightly.execution_timezone == "Europe/Paris"
    assert nightly.default_status == dg.DefaultScheduleStatus.RUNNING
    half_hour = defs_with_triggers.resolve_schedule_def("blobs__interval_1")
    assert half_hour.cron_schedule == "*/30 * * * *"

    seven = defs_with_triggers.resolve_sensor_def("blobs__interval_2")
    assert seven.minimum_interval_seconds == 420
    assert seven.default_status == dg.DefaultSensorStatus.STOPPED  # enabled: false
    arrival = defs_with_triggers.resolve_sensor_def("blobs__on_arrival")
    assert arrival.default_status == dg.DefaultSensorStatus.RUNNING

    # Every trigger targets exactly the definition's group, checks included.
    for name in ("blobs__nightly", "blobs__interval_1"):
        job = defs_with_triggers.resolve_job_def(defs_with_triggers.resolve_schedule_def(name).job_name)
        assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == GROUP_KEYS
        assert {c.name for c in job.asset_layer.asset_graph.asset_check_keys} == {"drift", "noise_share",
                                                                                   "cluster_sizes"}
    for name in ("blobs__interval_2", "blobs__on_arrival"):
        sensor = defs_with_triggers.resolve_sensor_def(name)
        job = defs_with_triggers.resolve_job_def(sensor.job_name)
        assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == GROUP_KEYS


@pytest.mark.parametrize("seconds, cron", [
    (30, None), (60, "* * * * *"), (900, "*/15 * * * *"), (420, None), (3600, "0 * * * *"),
    (5400, None), (6 * 3600, "0 */6 * * *"), (5 * 3600, None), (86400, "0 0 * * *"), (7 * 86400, "0 0 * * 0"),
    (2 * 86400, None),
])
def test_interval_as_cron_only_when_the_clock_divides_evenly(seconds, cron):
    assert triggers.interval_cron(seconds) == cron


def test_schedule_tick_has_run_key_and_tags(defs_with_triggers, storage, tmp_path):
    nightly = defs_with_triggers.resolve_schedule_def("blobs__nightly")
    when = dt.datetime(2024, 5, 1, 3, 0, tzinfo=dt.timezone.utc)
    instance = dg.DagsterInstance.local_temp(str(tmp_path))  # a schedule needs a persistent instance

    def tick(at):
        # `with`: the context opens the instance from its ref and must close it, or the instance's
        # defs-state storage stays Dagster's current one after the instance is gone
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                       resources={"storage": StorageResource(root=storage.root)}) as context:
            return nightly.evaluate_tick(context).run_requests

    first, again, later = tick(when), tick(when), tick(when + dt.timedelta(days=1))
    assert len(first) == 1
    assert first[0].run_key == again[0].run_key  # a retried tick is the same run
    assert first[0].run_key != later[0].run_key
    assert first[0].tags[triggers.TAG_DEFINITION] == "blobs"
    assert first[0].tags[triggers.TAG_TRIGGER] == "nightly"
    assert first[0].tags[triggers.TAG_TRIGGER_TYPE] == "cron"
    assert first[0].tags["dagster/schedule_name"] == "blobs__nightly"
    # a full run: every file registered as a partition and covered by one range
    assert instance.get_dynamic_partitions("blobs__files") == ["points/part-0.parquet"]
    assert first[0].tags["dagster/asset_partition_range_start"] == "points/part-0.parquet"
    assert {k.to_user_string() for k in first[0].asset_selection} == GROUP_KEYS


def test_interval_sensor_requests_one_run_per_interval(defs_with_triggers, storage, monkeypatch):
    sensor = defs_with_triggers.resolve_sensor_def("blobs__interval_2")
    now = [420 * 1000 + 5.0]
    monkeypatch.setattr(triggers, "clock", lambda: now[0])
    instance = dg.DagsterInstance.ephemeral()
    first = sensor.evaluate_tick(event_context(instance, storage))
    assert [r.run_key for r in first.run_requests] == ["blobs__interval_2:1000"]
    assert first.run_requests[0].tags[triggers.TAG_TRIGGER] == "interval_2"
    now[0] += 60  # same interval: nothing new
    same = sensor.evaluate_tick(event_context(instance, storage, first.cursor))
    assert not same.run_requests and "already requested" in same.skip_message
    now[0] += 420
    nxt = sensor.evaluate_tick(event_context(instance, storage, first.cursor))
    assert [r.run_key for r in nxt.run_requests] == ["blobs__interval_2:1001"]


def file_hashes(storage, collection_id):
    import hashlib
    from pathlib import Path

    folder = Path(storage.root) / "collections" / collection_id
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.parquet")}


def test_event_sensor_fits_first_then_assigns_only_new_files_with_the_current_fit(defs_with_triggers, storage):
    sensor = defs_with_triggers.resolve_sensor_def("blobs__on_arrival")
    instance = dg.DagsterInstance.ephemeral()

    # Never clustered: all 120 documents are new, and the first run is a full one (it fits).
    first = sensor.evaluate_tick(event_context(instance, storage))
    [request] = first.run_requests
    assert request.tags[triggers.TAG_NEW_DOCUMENTS] == "120"
    assert request.tags[triggers.TAG_TRIGGER] == "on_arrival"
    assert request.tags[triggers.TAG_TRIGGER_TYPE] == "event"
    assert {k.to_user_string() for k in request.asset_selection} == GROUP_KEYS
    # A tick that runs again before the run happened asks with the same run key: Dagster launches it once.
    again = sensor.evaluate_tick(event_context(instance, storage))
    assert [r.run_key for r in again.run_requests] == [request.run_key]
    [full] = launch(defs_with_triggers, instance, first)
    assert full.success
    fit_id = full.run_id
    quiet = sensor.evaluate_tick(event_context(instance, storage))
    assert quiet.skip_message.startswith("no new") and quiet.cursor
    # the next tick with that cursor sees the same listings and skips without opening a file
    assert "nothing changed in points since the last tick" in \
        sensor.evaluate_tick(event_context(instance, storage, quiet.cursor)).skip_message
    enriched_before = file_hashes(storage, "points_blobs_enriched")

    # 3 new documents in a new file: below min_new_documents=5, nothing registered, no run.
    append_blobs(storage, "points", 3, start=1000)
    few = sensor.evaluate_tick(event_context(instance, storage, quiet.cursor))
    assert not few.run_requests and "3 new or removed documents" in few.skip_message
    assert few.cursor != quiet.cursor
    # 3 more in another file: 6 new, one run over both new files and only their per-file stages.
    append_blobs(storage, "points", 3, start=2000, seed=2)
    enough = sensor.evaluate_tick(event_context(instance, storage))
    [incremental] = enough.run_requests
    assert incremental.tags[triggers.TAG_NEW_DOCUMENTS] == "6"
    assert {k.path[-1] for k in incremental.asset_selection} == {"assignments", "reduced_coords", "enriched_collection"}
    assert [list(r.partition_keys) for r in enough.dynamic_partitions_requests] == [
        ["points/part-1000.parquet", "points/part-2000.parquet"]]
    [run] = launch(defs_with_triggers, instance, enough)
    assert run.success
    materialized = {(e.asset_key.path[-1], e.partition) for e in run.get_asset_materialization_events()}
    assert materialized == {(stage, f"points/part-{n}.parquet") for stage in
                            ("assignments", "reduced_coords", "enriched_collection") for n in (1000, 2000)}
    # assigned by the fit of the first run, without a refit; the files done before are untouched
    fits = {e.materialization.metadata["cluster_assets/fit_id"].value
            for e in run.get_asset_materialization_events()}
    assert fits == {fit_id}
    after = file_hashes(storage, "points_blobs_enriched")
    assert {k: v for k, v in after.items() if k in enriched_before} == enriched_before
    assert set(after) == set(enriched_before) | {"part-1000.parquet", "part-2000.parquet"}
    new_docs = storage.read_table("collections", "points_blobs_enriched", "part-2000.parquet")
    assert new_docs.num_rows == 3 and new_docs.column("cluster_id").null_count == 0
    assert sensor.evaluate_tick(event_context(instance, storage)).skip_message.startswith("no new")


def test_new_files_that_drift_from_the_fit_make_the_sensor_refit(defs_with_triggers, storage):
    sensor = defs_with_triggers.resolve_sensor_def("blobs__on_arrival")
    instance = dg.DagsterInstance.ephemeral()
    [full] = launch(defs_with_triggers, instance, sensor.evaluate_tick(event_context(instance, storage)))
    assert full.success
    # like the fit's documents: assigned, no refit
    append_blobs(storage, "points", 60, start=1000, seed=3)
    [same] = launch(defs_with_triggers, instance, sensor.evaluate_tick(event_context(instance, storage)))
    assert same.success
    assert sensor.evaluate_tick(event_context(instance, storage)).skip_message.startswith("no new")
    # documents of a topic the fit never saw (a far-away blob): assigned first, then they drift it
    storage.write_table(blobs_table(per_blob=150, start=5000, seed=4, centers=(-9.0,)), "collections", "points",
                        "part-5000.parquet")
    [far] = launch(defs_with_triggers, instance, sensor.evaluate_tick(event_context(instance, storage)))
    assert far.success
    refit = sensor.evaluate_tick(event_context(instance, storage))
    [request] = refit.run_requests
    assert {k.to_user_string() for k in request.asset_selection} == GROUP_KEYS  # a full run: a refit
    assert "farther from their centroids" in request.tags[triggers.TAG_REFIT_REASON]


def test_event_sensor_fires_at_exactly_min_new_documents(definitions_dir, storage):
    write_blobs(storage, per_blob=2)  # 6 documents, never clustered
    write_definition(definitions_dir, definition(triggers=[{"type": "event", "min_new_documents": 6}]))
    sensor = build_defs(definitions_dir).resolve_sensor_def("blobs__event_0")
    result = sensor.evaluate_tick(event_context(dg.DagsterInstance.ephemeral(), storage))
    assert [r.tags[triggers.TAG_NEW_DOCUMENTS] for r in result.run_requests] == ["6"]


def test_event_sensor_counts_removed_and_rewritten_files(defs_with_triggers, storage):
    sensor = defs_with_triggers.resolve_sensor_def("blobs__on_arrival")
    instance = dg.DagsterInstance.ephemeral()
    append_blobs(storage, "points", 4, start=1000)
    assert launch(defs_with_triggers, instance, sensor.evaluate_tick(event_context(instance, storage)))[0].success
    assert storage.exists("collections", "points_blobs_enriched", "part-1000.parquet")

    storage.fs.delete_file(storage.path("collections", "points", "part-1000.parquet"))  # 4 documents gone
    few = sensor.evaluate_tick(event_context(instance, storage))
    assert not few.run_requests and "4 new or removed documents" in few.skip_message
    append_blobs(storage, "points", 1, start=3000)  # and 1 new: 5 = min_new_documents
    enough = sensor.evaluate_tick(event_context(instance, storage))
    assert [r.tags[triggers.TAG_NEW_DOCUMENTS] for r in enough.run_requests] == ["5"]
    [run] = launch(defs_with_triggers, instance, enough)
    assert run.success
    # the gone file lost its partition and its enriched file
    assert "points/part-1000.parquet" not in instance.get_dynamic_partitions("blobs__files")
    assert not storage.exists("collections", "points_blobs_enriched", "part-1000.parquet")

    # a file rewritten in place (same name, other documents) is assigned again with the same fit
    table = storage.read_table("collections", "points", "part-3000.parquet")
    storage.write_table(pa.concat_tables([table] * 6).set_column(
        0, "document_id", pa.array([f"re-{i}" for i in range(6)])), "collections", "points", "part-3000.parquet")
    rewritten = sensor.evaluate_tick(event_context(instance, storage))
    [request] = rewritten.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "points/part-3000.parquet"
    assert request.tags["dagster/asset_partition_range_end"] == "points/part-3000.parquet"
    assert launch(defs_with_triggers, instance, rewritten)[0].success
    redone = storage.read_table("collections", "points_blobs_enriched", "part-3000.parquet")
    assert redone.column("document_id").to_pylist() == [f"re-{i}" for i in range(6)]


def test_event_sensor_skips_unreadable_collection(definitions_dir, storage, capfd):
    write_blobs(storage)
    write_definition(definitions_dir, definition(triggers=[{"type": "event"}]))
    write_definition(definitions_dir, definition("ghost", collection="missing", triggers=[{"type": "event"}]))
    defs = build_defs(definitions_dir)
    instance = dg.DagsterInstance.ephemeral()

    missing = defs.resolve_sensor_def("ghost__event_0").evaluate_tick(event_context(instance, storage))
    assert not missing.run_requests
    assert "unreadable" in missing.skip_message and "'missing'" in missing.skip_message
    assert missing.cursor is None  # nothing remembered: the next tick tries again

    # A corrupt file: the listing works, reading the ids does not.
    storage.write_bytes(b"not parquet at all", "collections", "points", "part-9.parquet")
    capfd.readouterr()
    corrupt = defs.resolve_sensor_def("blobs__event_0").evaluate_tick(event_context(instance, storage))
    assert not corrupt.run_requests and "unreadable" in corrupt.skip_message
    logged = capfd.readouterr().err
    assert "ERROR" in logged and "part-9.parquet" in logged  # the tick's log names the bad file

    # Once repaired, the same sensor requests its run.
    storage.fs.delete_file(storage.path("collections", "points", "part-9.parquet"))
    repaired = defs.resolve_sensor_def("blobs__event_0").evaluate_tick(event_context(instance, storage))
    assert len(repaired.run_requests) == 1


@pytest.mark.parametrize("trigger, field, words", [
    ({"type": "cron", "cron": "61 * * * *"}, "triggers.0.cron", "not a valid cron"),
    ({"type": "cron", "cron": "every day"}, "triggers.0.cron", "not a valid cron"),
    ({"type": "cron", "cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "triggers.0.timezone", "unknown timezone"),
    ({"type": "interval", "minutes": 0}, "triggers.0.minutes", "greater than 0"),
    ({"type": "interval", "hours": -2}, "triggers.0.hours", "greater than 0"),
    ({"type": "interval"}, "triggers.0", "needs a positive"),
    ({"type": "interval", "seconds": 0.2}, "triggers.0", "less than 1 s"),
    ({"type": "event", "min_new_documents": 0}, "triggers.0.min_new_documents", "greater than or equal to 1"),
    ({"type": "cron", "cron": "0 3 * * *", "name": "bad name!"}, "triggers.0.name", "letters, digits"),
])
def test_bad_trigger_is_an_error_naming_file_and_field(definitions_dir, trigger, field, words):
    path = write_definition(definitions_dir, definition(triggers=[trigger]))
    loaded, problems = load_definitions(definitions_dir)
    assert not loaded
    assert len(problems) >= 1
    message = str(problems[0])
    assert message.startswith(f"{path}: {field}: "), message
    assert words in message
    # The code location still loads, without the broken definition's schedules.
    assert not build_defs(definitions_dir).get_repository_def().schedule_defs


def test_deleted_definition_file_takes_its_schedules_along(definitions_dir, storage):
    write_blobs(storage)
    keep = write_definition(definitions_dir, definition("keep", triggers=[{"type": "cron", "cron": "0 * * * *"}]))
    gone = write_definition(definitions_dir, definition("gone", triggers=[
        {"type": "cron", "cron": "0 4 * * *"}, {"type": "event"}]))
    repo = build_defs(definitions_dir).get_repository_def()
    assert {s.name for s in repo.schedule_defs} == {"keep__cron_0", "gone__cron_0"}
    assert {s.name for s in repo.sensor_defs} == {"gone__event_1"}

    gone.unlink()
    repo = build_defs(definitions_dir).get_repository_def()
    assert {s.name for s in repo.schedule_defs} == {"keep__cron_0"}
    assert not repo.sensor_defs
    assert not any(k.path[0] == "gone" for k in repo.asset_graph.get_all_asset_keys())
    assert keep.exists()


def test_editing_what_the_fit_does_not_follow_never_refits_and_editing_what_it_does_refits(
        defs_with_triggers, definitions_dir, storage):
    instance = dg.DagsterInstance.ephemeral()
    sensor = defs_with_triggers.resolve_sensor_def("blobs__on_arrival")
    [full] = launch(defs_with_triggers, instance, sensor.evaluate_tick(event_context(instance, storage)))
    assert full.success
    body = json.loads((definitions_dir / "blobs.json").read_text())

    def tick_after(**edits):
        write_definition(definitions_dir, {**body, **edits})
        edited = build_defs(definitions_dir).resolve_sensor_def("blobs__on_arrival")
        return edited.evaluate_tick(event_context(instance, storage))

    # a new description, webhook, check threshold or LLM prompt: the fit still holds
    quiet = tick_after(description="renamed", webhooks=[{"url": "http://127.0.0.1:9/hook"}],
                       checks={"max_noise_share": 0.4},
                       triggers=body["triggers"] + [{"type": "cron", "cron": "0 4 * * *", "name": "later"}])
    assert not quiet.run_requests and quiet.skip_message.startswith("no new"), quiet.skip_message
    # a new cluster count: the next tick refits, naming why
    [refit] = tick_after(algorithm_config={"num_clusters": 4}).run_requests
    assert {k.to_user_string() for k in refit.asset_selection} == GROUP_KEYS
    assert refit.tags[triggers.TAG_REFIT_REASON] == "a field the fit follows changed since the fit"


def test_a_quiet_tick_s_cursor_changes_when_the_trigger_or_checks_change(storage):
    """The quiet-tick cursor covers what the tick's decision follows beyond the fit: lowering
    min_new_documents or tightening a drift limit is seen at the next tick, before any file changes."""
    from cluster_assets.changes import snapshot
    from cluster_assets.spec import parse_definition

    write_blobs(storage)
    trigger = {"type": "event", "min_new_documents": 50}
    body = definition(triggers=[trigger])
    with dg.DagsterInstance.ephemeral() as instance:
        def digest(**changes) -> str:
            return snapshot(instance, storage, parse_definition({**body, **changes})).digest

        quiet = digest()
        assert digest() == quiet
        assert digest(triggers=[{**trigger, "min_new_documents": 10}]) != quiet
        assert digest(checks={"new_files_max_cohesion_drop": 0.01}) != quiet
