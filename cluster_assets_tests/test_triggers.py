"""Triggers -> schedules and sensors: names, status, targets, run keys and tags, event sensing, bad input."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest

from cluster_assets import triggers
from cluster_assets.factory import STAGES
from cluster_assets.loader import build_defs
from cluster_assets.resources import StorageResource
from cluster_assets.spec import load_definitions
from cluster_assets_tests.conftest import write_definition
from cluster_assets_tests.small import append_blobs, definition, write_blobs

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


def test_schedule_tick_has_run_key_and_tags(defs_with_triggers):
    nightly = defs_with_triggers.resolve_schedule_def("blobs__nightly")
    when = dt.datetime(2024, 5, 1, 3, 0, tzinfo=dt.timezone.utc)
    first = nightly.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=when)).run_requests
    again = nightly.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=when)).run_requests
    later = nightly.evaluate_tick(dg.build_schedule_context(
        scheduled_execution_time=when + dt.timedelta(days=1))).run_requests
    assert len(first) == 1
    assert first[0].run_key == again[0].run_key  # a retried tick is the same run
    assert first[0].run_key != later[0].run_key
    assert first[0].tags[triggers.TAG_DEFINITION] == "blobs"
    assert first[0].tags[triggers.TAG_TRIGGER] == "nightly"
    assert first[0].tags[triggers.TAG_TRIGGER_TYPE] == "cron"
    assert first[0].tags["dagster/schedule_name"] == "blobs__nightly"


def test_interval_sensor_requests_one_run_per_interval(defs_with_triggers, monkeypatch):
    sensor = defs_with_triggers.resolve_sensor_def("blobs__interval_2")
    now = [420 * 1000 + 5.0]
    monkeypatch.setattr(triggers, "clock", lambda: now[0])
    first = sensor.evaluate_tick(dg.build_sensor_context())
    assert [r.run_key for r in first.run_requests] == ["blobs__interval_2:1000"]
    assert first.run_requests[0].tags[triggers.TAG_TRIGGER] == "interval_2"
    now[0] += 60  # same interval: nothing new
    same = sensor.evaluate_tick(dg.build_sensor_context(cursor=first.cursor))
    assert not same.run_requests and "already requested" in same.skip_message
    now[0] += 420
    nxt = sensor.evaluate_tick(dg.build_sensor_context(cursor=first.cursor))
    assert [r.run_key for r in nxt.run_requests] == ["blobs__interval_2:1001"]


def test_event_sensor_same_change_never_two_runs(defs_with_triggers, storage, definitions_dir):
    sensor = defs_with_triggers.resolve_sensor_def("blobs__on_arrival")
    instance = dg.DagsterInstance.ephemeral()

    # Never clustered: all 120 documents are new.
    first = sensor.evaluate_tick(event_context(instance, storage))
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.tags[triggers.TAG_NEW_DOCUMENTS] == "120"
    assert request.tags[triggers.TAG_TRIGGER] == "on_arrival"
    assert request.tags[triggers.TAG_TRIGGER_TYPE] == "event"

    # The next tick sees the same files: no request at all.
    unchanged = sensor.evaluate_tick(event_context(instance, storage, first.cursor))
    assert not unchanged.run_requests and "no change" in unchanged.skip_message
    # A tick that lost its cursor (an earlier tick raised) asks again with the same run key,
    # which Dagster refuses to launch twice.
    retried = sensor.evaluate_tick(event_context(instance, storage))
    assert [r.run_key for r in retried.run_requests] == [request.run_key]

    # The requested run happens: the assignments now know every document.
    job = defs_with_triggers.resolve_job_def(sensor.job_name)
    assert job.execute_in_process(instance=instance, tags=request.tags).success
    after_run = sensor.evaluate_tick(event_context(instance, storage, first.cursor))
    assert not after_run.run_requests

    # 3 new documents: below min_new_documents=5, no run, but the cursor moves on.
    append_blobs(storage, "points", 3, start=1000)
    few = sensor.evaluate_tick(event_context(instance, storage, first.cursor))
    assert not few.run_requests
    assert "3 new or removed documents" in few.skip_message
    assert json.loads(few.cursor)["changed"] == 3
    # 3 more: 6 new since the last assignments, one run with a new key.
    append_blobs(storage, "points", 3, start=2000, seed=2)
    enough = sensor.evaluate_tick(event_context(instance, storage, few.cursor))
    assert len(enough.run_requests) == 1
    assert enough.run_requests[0].tags[triggers.TAG_NEW_DOCUMENTS] == "6"
    assert enough.run_requests[0].run_key != request.run_key


def test_event_sensor_fires_at_exactly_min_new_documents(definitions_dir, storage):
    write_blobs(storage, per_blob=2)  # 6 documents, never clustered
    write_definition(definitions_dir, definition(triggers=[{"type": "event", "min_new_documents": 6}]))
    sensor = build_defs(definitions_dir).resolve_sensor_def("blobs__event_0")
    result = sensor.evaluate_tick(event_context(dg.DagsterInstance.ephemeral(), storage))
    assert [r.tags[triggers.TAG_NEW_DOCUMENTS] for r in result.run_requests] == ["6"]


def test_event_sensor_counts_removed_documents(defs_with_triggers, storage):
    sensor = defs_with_triggers.resolve_sensor_def("blobs__on_arrival")
    instance = dg.DagsterInstance.ephemeral()
    first = sensor.evaluate_tick(event_context(instance, storage))
    job = defs_with_triggers.resolve_job_def(sensor.job_name)
    assert job.execute_in_process(instance=instance, tags=first.run_requests[0].tags).success
    points = storage.collection_dataset("points").to_table()

    storage.write_collection("points", points.schema, [points.slice(4)])  # 4 documents gone
    few = sensor.evaluate_tick(event_context(instance, storage, first.cursor))
    assert not few.run_requests and "4 new or removed documents" in few.skip_message
    storage.write_collection("points", points.schema, [points.slice(5)])  # 5 gone: min_new_documents
    enough = sensor.evaluate_tick(event_context(instance, storage, few.cursor))
    assert [r.tags[triggers.TAG_NEW_DOCUMENTS] for r in enough.run_requests] == ["5"]


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
