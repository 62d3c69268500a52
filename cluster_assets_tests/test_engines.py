"""The engine of the per-file work, without Ray: the in-process default, file errors, an unreachable Ray."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import dagster as dg
import pytest

from cluster_assets.stages import PER_FILE
from cluster_assets.stages.engine import FileWorkError, InProcessEngine
from cluster_assets.storage import Storage
from cluster_assets_tests.conftest import REPO, materialize_group, write_definition
from cluster_assets_tests.small import append_blobs, definition, write_blobs


def step_metadata(result: dg.ExecuteInProcessResult, cluster: str, stage: str) -> dict:
    events = [e for e in result.get_asset_materialization_events()
              if e.asset_key == dg.AssetKey([cluster, stage])]
    assert events, f"no materialization of {cluster}/{stage}"
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


def test_in_process_is_the_default_and_imports_no_ray(definitions_dir, storage, dagster_home, monkeypatch):
    monkeypatch.delenv("CLUSTER_ASSETS_RAY_ADDRESS", raising=False)
    write_blobs(storage)
    append_blobs(storage, "points", 10, start=500)
    write_definition(definitions_dir, definition())
    result = materialize_group(definitions_dir, "blobs")
    for stage in PER_FILE:
        meta = step_metadata(result, "blobs", stage)
        assert (meta["engine"], meta["ray_tasks"]) == ("in_process", 0), stage

    env = {k: v for k, v in os.environ.items() if k != "CLUSTER_ASSETS_RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    probe = ("import sys; import cluster_assets.stages; from cluster_assets.resources import engine_resource; "
             "print(engine_resource().get().name, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["in_process", "False"], out.stderr[-2000:]


def test_in_process_engine_keeps_order_and_names_the_failing_file(storage):
    def work(storage, spec, fit_id, partition, suffix):
        if partition.endswith("bad.parquet"):
            raise ValueError("could not decode page")
        return partition + suffix

    engine = InProcessEngine()
    assert engine.map(work, storage, None, "f", ["c/b.parquet", "c/a.parquet"], suffix="!") == \
        ["c/b.parquet!", "c/a.parquet!"]
    with pytest.raises(FileWorkError, match=r"collection 'points', file bad.parquet: ValueError: could not decode"):
        engine.map(work, storage, None, "f", ["points/a.parquet", "points/bad.parquet"], suffix="")
    assert engine.describe() == {"engine": "in_process", "ray_tasks": 0}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_cluster_fails_fast_names_the_address_and_writes_nothing(
        definitions_dir, storage_root, dagster_home, monkeypatch):
    storage = Storage(storage_root)
    write_blobs(storage)
    write_definition(definitions_dir, definition())
    address = f"ray://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("CLUSTER_ASSETS_RAY_ADDRESS", address)
    start = time.monotonic()
    result = materialize_group(definitions_dir, "blobs", raise_on_error=False)
    assert time.monotonic() - start < 30
    assert not result.success
    errors = [e.event_specific_data.error.to_string() for e in result.all_events
              if e.is_failure and getattr(e.event_specific_data, "error", None)]
    assert any(address in text and "unreachable" in text for text in errors), errors
    assert sorted(os.listdir(storage_root)) == ["collections"]
    assert not result.get_asset_materialization_events()
    # ``cluster-assets run`` says why, though no step failed: the run's own failure names the address
    from click.testing import CliRunner

    from cluster_assets.cli import main

    shell = CliRunner().invoke(main, ["run", "blobs"])
    assert shell.exit_code == 1 and "blobs: run " in shell.output and "FAILURE" in shell.output
    said = re.split(r"blobs: run \S+ FAILURE\n", shell.output)[1]  # what it says after the run (Dagster logs before)
    assert address in said and "unreachable" in said, shell.output
