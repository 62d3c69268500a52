"""The production instance (deploy/dagster.yaml) on a real PostgreSQL server and moto's S3: it loads, full runs
record in it, the files' partitions are stored in it, step logs land in S3, and two runs of one definition
never overlap a step."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import dagster as dg
import pytest

from cluster_assets.loader import build_defs
from cluster_assets.runs import run_full
from cluster_assets.spec import load_definitions
from cluster_assets.storage import Storage
from cluster_assets_tests.small import append_blobs, definition, write_blobs

REPO = Path(__file__).resolve().parent.parent
CLUSTER_ASSETS = str(Path(sys.executable).parent / "cluster-assets")
BUCKET = "dagster-logs"


@pytest.fixture
def production(tmp_path, monkeypatch, postgres_db, moto_s3, storage_root, definitions_dir):
    """A DAGSTER_HOME holding the shipped deploy/dagster.yaml, its variables pointing at the test's servers."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    for name, value in {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": postgres_db["hostname"],
                        "DAGSTER_PG_PORT": str(postgres_db["port"]), "DAGSTER_PG_USERNAME": postgres_db["username"],
                        "DAGSTER_PG_PASSWORD": postgres_db["password"], "DAGSTER_PG_DB": postgres_db["db_name"],
                        "DAGSTER_COMPUTE_LOGS_BUCKET": BUCKET}.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    storage = Storage(storage_root)
    write_blobs(storage)
    append_blobs(storage, "points", 20, start=500)
    (definitions_dir / "blobs.json").write_text(json.dumps(definition()))
    return home


def spec_of(definitions_dir):
    return load_definitions(definitions_dir)[0][0].spec


def test_the_shipped_production_instance_on_postgres_and_s3(production, definitions_dir, storage_root):
    """deploy/dagster.yaml loads (PostgreSQL storage, S3 step logs, run monitoring). On it, a full run from the
    shell (`cluster-assets run`) and a short one through ``run_full`` in this process go at once: the definition's pool
    holds one step at a time across both, each run works in its own sample, the files' partitions are stored in
    PostgreSQL and the step logs land in S3. (One scenario: starting runs is what costs here.)"""
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresRunStorage, PostgresScheduleStorage

    from cluster_assets.instance_storage import RaceFreePostgresEventLogStorage

    spec = spec_of(definitions_dir)
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, RaceFreePostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 7200

        shell = subprocess.Popen([CLUSTER_ASSETS, "run", "blobs"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                assert shell.poll() is None and time.monotonic() < deadline, "the shell run never started"
                time.sleep(0.1)
            # a short contender: a waiting step backs off up to 15 s between claims (Dagster's pools).
            # (Two runs in threads of one process are no test of this: their claims race.)
            here = run_full(build_defs(definitions_dir), spec, instance, Storage(storage_root), stages=("sample",))
        finally:
            error = shell.communicate(timeout=240)[1]
        assert shell.returncode == 0, error[-2000:]
        assert here.success

        finished = instance.get_runs()
        assert [r.status for r in finished] == [dg.DagsterRunStatus.SUCCESS] * 2
        stats = {r.run_id: instance.get_run_stats(r.run_id) for r in finished}
        first, second = sorted(stats.values(), key=lambda s: s.start_time)
        assert second.start_time < first.end_time, "the runs did not overlap: nothing was tested"
        spans = [(s.start_time, s.end_time, r.run_id) for r in finished for s in instance.get_run_step_stats(r.run_id)]
        assert len(spans) == 8 + 1
        for start, end, run_id in spans:
            for other_start, other_end, other in spans:
                if other != run_id:
                    assert end <= other_start or other_end <= start, "two steps of one definition overlapped"
        for run in finished:
            records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
            samples = {r.event_log_entry.asset_materialization.metadata["cluster_assets/sample_id"].value
                       for r in records if "cluster_assets/sample_id" in r.event_log_entry.asset_materialization.metadata}
            assert samples == {run.run_id}

        assert instance.get_dynamic_partitions("blobs__files") == ["points/part-0.parquet", "points/part-500.parquet"]
        per_file = instance.fetch_materializations(dg.AssetKey(["blobs", "assignments"]), limit=10).records
        assert sorted(r.partition_key for r in per_file) == ["points/part-0.parquet", "points/part-500.parquet"]

    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(k.startswith(f"dagster/compute-logs/storage/{here.run_id}/") for k in keys), keys
    assert Storage(storage_root).collection_dataset("points_blobs_enriched").count_rows() == 140


def test_without_postgresql_binaries_the_fixture_says_why(tmp_path, monkeypatch):
    from cluster_assets_tests.postgres import start_server

    monkeypatch.setenv("CLUSTER_ASSETS_PG_BIN", str(tmp_path))
    reason = start_server()
    assert isinstance(reason, str) and "apt-get install postgresql" in reason and "CLUSTER_ASSETS_PG_BIN" in reason
