"""Retention: ``cluster-assets prune`` on a storage root with several fits made by real (plain) runs."""

from __future__ import annotations

import json
import os
import time

import dagster as dg
from click.testing import CliRunner

from cluster_assets import taxonomy
from cluster_assets.cli import main
from cluster_assets.spec import load_definitions
from cluster_assets.stages import run_plain
from cluster_assets.stages.outputs import read_output
from cluster_assets_tests.small import definition, write_blobs

DAY = 86_400


def age(root, days: float) -> None:
    """Every file under ``root`` last written ``days`` ago."""
    when = time.time() - days * DAY
    for folder, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(folder, name), (when, when))


def prune(*args: str):
    return CliRunner().invoke(main, ["prune", *args], catch_exceptions=False)


def test_prune_keeps_what_the_current_fit_a_taxonomy_and_a_run_in_progress_need(
        storage, definitions_dir, dagster_home, storage_root):
    write_blobs(storage)
    (definitions_dir / "blobs.json").write_text(json.dumps(definition(retention={"keep_fits": 1, "keep_days": 2})))
    spec = load_definitions(definitions_dir)[0][0].spec
    for run_id in ("run1", "run2", "run3", "run4"):
        run_plain(storage, spec, run_id, until="model" if run_id == "run2" else "labels")
        if run_id == "run1":
            taxonomy.promote(storage, "blobs", "run1", "topics")
    # an incremental run's artifacts (no fit of its own), and a run still going
    for run_id in ("run5", "run6"):
        storage.write_bytes(b"x", "artifacts", "blobs", run_id, "members.parquet")
    with dg.DagsterInstance.get() as instance:
        instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id="run6", status=dg.DagsterRunStatus.STARTED))
    assets, artifacts = os.path.join(storage_root, "assets", "blobs"), os.path.join(storage_root, "artifacts", "blobs")
    for i, run_id in enumerate(("run1", "run2", "run3", "run4", "run5", "run6")):
        for folder in (os.path.join(assets, "fits", run_id), os.path.join(assets, "samples", run_id),
                       os.path.join(artifacts, run_id)):
            age(folder, 20 - i)  # all older than keep_days, run1 the oldest
    before = {p: sorted(os.listdir(os.path.join(assets, p))) for p in ("fits", "samples")}
    before["artifacts"] = sorted(os.listdir(artifacts))

    dry = prune("--dry-run")
    assert dry.exit_code == 0, dry.output
    gone = {("fit", "run2"), ("sample", "run2"), ("artifacts", "run5")}
    listed = {tuple(line.split()[3:5]) for line in dry.output.splitlines() if " would delete " in line}
    assert listed == gone, dry.output
    assert "3 folders to delete (dry run)" in dry.output
    after_dry = {p: sorted(os.listdir(os.path.join(assets, p))) for p in ("fits", "samples")}
    after_dry["artifacts"] = sorted(os.listdir(artifacts))
    assert after_dry == before

    done = prune("blobs")
    assert done.exit_code == 0, done.output
    assert [line.replace(" deleted ", " would delete ").split() for line in done.output.splitlines()
            if " deleted " in line] == [line.split() for line in dry.output.splitlines() if " would delete " in line]
    # current (run4), previous (run3, the drift check's), promoted (run1); run6 still running
    assert sorted(os.listdir(os.path.join(assets, "fits"))) == ["run1", "run3", "run4"]
    assert sorted(os.listdir(os.path.join(assets, "samples"))) == ["run1", "run3", "run4"]
    assert sorted(os.listdir(artifacts)) == ["run1", "run3", "run4", "run6"]
    # what is left still works: the taxonomy classifies, the current fit's outputs read back, a run goes on
    assert taxonomy.load_taxonomy(storage, "topics").leaves.num_rows == 3
    assert read_output(storage, "blobs", "labels.parquet").num_rows == 3
    assert read_output(storage, "blobs", "assignments.parquet").num_rows == 120


def test_prune_keeps_everything_younger_than_keep_days_and_needs_the_instance(
        storage, definitions_dir, storage_root, monkeypatch):
    write_blobs(storage)
    (definitions_dir / "blobs.json").write_text(json.dumps(definition(retention={"keep_fits": 1})))
    spec = load_definitions(definitions_dir)[0][0].spec
    assert (spec.retention.keep_fits, spec.retention.keep_days) == (1, 30)
    for run_id in ("run1", "run2", "run3"):
        run_plain(storage, spec, run_id, until="model")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    refused = prune()
    assert refused.exit_code == 1 and "DAGSTER_HOME is not set" in refused.output
    monkeypatch.setenv("DAGSTER_HOME", str(storage_root))
    with open(os.path.join(storage_root, "dagster.yaml"), "w") as f:
        f.write("telemetry:\n  enabled: false\n")
    done = prune()
    assert done.exit_code == 0 and "0 folders deleted" in done.output, done.output
    assert sorted(os.listdir(os.path.join(storage_root, "assets", "blobs", "fits"))) == ["run1", "run2", "run3"]


def test_one_prune_of_several_definitions_reads_each_taxonomy_once_and_keeps_each_its_promoted_fits(
        storage, definitions_dir, dagster_home, storage_root, monkeypatch):
    import pyarrow as pa

    from cluster_assets.storage import Storage

    for name in ("blobs", "other"):
        (definitions_dir / f"{name}.json").write_text(
            json.dumps(definition(name, retention={"keep_fits": 1, "keep_days": 2})))
        for run_id in (f"{name}_old", f"{name}_mid", f"{name}_new"):
            storage.write_bytes(json.dumps({"fit_id": run_id, "sample_id": run_id}).encode(),
                                "assets", name, "fits", run_id, "fit.json")
            storage.write_bytes(b"x", "assets", name, "samples", run_id, "sample.parquet")
        for days, run_id in ((12, f"{name}_old"), (11, f"{name}_mid"), (10, f"{name}_new")):
            for kind in ("fits", "samples"):
                age(os.path.join(storage_root, "assets", name, kind, run_id), days)
    storage.write_table(pa.table({"source_cluster": ["blobs"], "source_run_id": ["blobs_old"]}),
                        "taxonomies", "topics", "nodes.parquet")
    storage.write_table(pa.table({"source_cluster": ["blobs"], "source_run_id": ["blobs_old"]}),
                        "taxonomies", "zoo", "nodes.parquet")
    storage.write_bytes(json.dumps({"promotions": [{"cluster": "other", "run_id": "other_old"}]}).encode(),
                        "taxonomies", "zoo", "taxonomy.json")
    read_table, nodes_read = Storage.read_table, []

    def counting_read_table(self, *parts, **kwargs):
        if parts[-1] == "nodes.parquet":
            nodes_read.append(parts)
        return read_table(self, *parts, **kwargs)

    monkeypatch.setattr(Storage, "read_table", counting_read_table)

    dry = prune("--dry-run", "--show-kept")
    assert dry.exit_code == 0, dry.output
    assert len(nodes_read) == 2, nodes_read  # once per taxonomy, not once per taxonomy and definition
    rows = [line.split() for line in dry.output.splitlines()]
    doomed = {(r[0], r[3], r[4]) for r in rows if r[1:3] == ["would", "delete"]}
    assert doomed == {("blobs", "fit", "blobs_mid"), ("blobs", "sample", "blobs_mid"),
                      ("other", "fit", "other_mid"), ("other", "sample", "other_mid")}, dry.output
    promoted = {(r[0], r[2], r[3]): " ".join(r[6:]) for r in rows if r[1] == "kept" and "promoted" in r}
    assert promoted == {("blobs", "fit", "blobs_old"): "promoted to taxonomy topics",
                        ("blobs", "sample", "blobs_old"): "promoted to taxonomy topics",
                        ("other", "fit", "other_old"): "promoted to taxonomy zoo",
                        ("other", "sample", "other_old"): "promoted to taxonomy zoo"}, dry.output


def test_a_dead_run_is_no_run_in_progress_for_prune(storage, definitions_dir, dagster_home, storage_root):
    """STARTED runs whose process on this host is gone (`executions` shows them DEAD) write nothing more:
    their outputs go. A live one, one of another host (no telling) and a CANCELING one are kept."""
    import subprocess
    import sys

    from dagster._core.events import DagsterEvent, DagsterEventType

    from cluster_assets.history import TAG_HOST
    from cluster_assets.processes import this_host

    (definitions_dir / "blobs.json").write_text(json.dumps(definition(retention={"keep_fits": 1, "keep_days": 2})))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    started = {"dead": (int(finished.stdout), this_host()), "live": (os.getpid(), this_host()),
               "elsewhere": (int(finished.stdout), "another-host")}
    with dg.DagsterInstance.get() as instance:
        for run_id, (pid, host) in started.items():
            instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                           tags={TAG_HOST: host}))
            instance.report_dagster_event(DagsterEvent(DagsterEventType.RUN_START.value, "__ASSET_JOB", pid=pid),
                                          run_id)
        for run_id, status in (("canceling", dg.DagsterRunStatus.CANCELING), ("done", dg.DagsterRunStatus.SUCCESS),
                               ("not_started", dg.DagsterRunStatus.NOT_STARTED)):
            instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=status))
    for run_id in (*started, "canceling", "done", "not_started"):
        storage.write_bytes(b"x", "artifacts", "blobs", run_id, "members.parquet")
    age(os.path.join(storage_root, "artifacts"), 5)

    dry = prune("--dry-run", "--show-kept")
    assert dry.exit_code == 0, dry.output
    rows = [line.split() for line in dry.output.splitlines()]
    assert sorted(r[4] for r in rows if r[1:3] == ["would", "delete"]) == ["dead", "done", "not_started"]
    assert sorted(r[3] for r in rows if r[1] == "kept" and r[-3:] == ["run", "in", "progress"]) == [
        "canceling", "elsewhere", "live"]


def test_prune_finds_a_definition_by_its_group_name_too(storage, definitions_dir, dagster_home, storage_root):
    (definitions_dir / "blob-set.json").write_text(json.dumps(definition("blob-set", retention={"keep_days": 2})))
    storage.write_bytes(b"x", "artifacts", "blob-set", "run1", "members.parquet")
    age(os.path.join(storage_root, "artifacts"), 5)

    by_group = prune("blob_set", "--dry-run")  # the Dagster group name the UI shows
    assert by_group.exit_code == 0, by_group.output
    assert [line.split()[:5] for line in by_group.output.splitlines() if " would delete " in line] == [
        ["blob-set", "would", "delete", "artifacts", "run1"]]
    missing = prune("blob", "--dry-run")
    assert missing.exit_code == 1 and "no valid definition named 'blob' (valid: blob-set)" in missing.output


def test_prune_and_upgrade_on_s3(moto_s3):
    """The same folders go on S3 (prefixes deleted, objects moved with a managed copy)."""
    import boto3

    from cluster_assets import retention, upgrade
    from cluster_assets.spec import ClusterDefinition
    from cluster_assets.storage import Storage

    boto3.client("s3").create_bucket(Bucket="store")
    storage = Storage("s3://store/root")
    for fit_id in ("old", "new"):
        storage.write_bytes(json.dumps({"fit_id": fit_id, "sample_id": fit_id}).encode(),
                            "assets", "blobs", "fits", fit_id, "fit.json")
        storage.write_bytes(b"x", "assets", "blobs", "samples", fit_id, "sample.parquet")
        storage.write_bytes(b"x", "artifacts", "blobs", fit_id, "centroids.parquet")
    storage.write_bytes(json.dumps({"fit_id": "new", "sample_id": "new"}).encode(), "assets", "blobs", "current.json")
    storage.write_bytes(b"old model", "assets", "blobs", "model.pkl")  # the previous release's flat output

    spec = ClusterDefinition.model_validate(definition(retention={"keep_fits": 1, "keep_days": 0}))
    plan = retention.plan(storage, spec)
    assert sorted((e.kind, e.id) for e in plan.doomed) == [("artifacts", "old"), ("fit", "old"), ("sample", "old")]
    retention.prune(storage, plan.doomed)
    assert storage.list_dir("assets", "blobs", "fits") == ["new"]
    assert storage.list_dir("assets", "blobs", "samples") == ["new"]
    assert storage.list_dir("artifacts", "blobs") == ["new"]

    moves = upgrade.plan_moves(storage)
    assert [m.name for m in moves] == ["model.pkl"]
    upgrade.apply(storage, moves)
    assert storage.read_bytes("assets", "blobs", "legacy", "model.pkl") == b"old model"
    assert not storage.exists("assets", "blobs", "model.pkl") and storage.exists("assets", "blobs", "current.json")


def test_a_retention_policy_is_no_change_of_the_definition_s_code_version():
    from cluster_assets.spec.versions import code_version
    from cluster_assets.spec import ClusterDefinition

    plain = ClusterDefinition.model_validate(definition())
    kept_longer = ClusterDefinition.model_validate(definition(retention={"keep_fits": 10, "keep_days": 365}))
    assert code_version(plain) == code_version(kept_longer)
    assert code_version(plain) != code_version(ClusterDefinition.model_validate(definition(sample_size=50)))
