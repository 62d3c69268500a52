"""The per-file work on a real local Ray (one per test session): same assignments, fan-out, faults."""

from __future__ import annotations

import pytest

from cluster_assets.stages import PER_FILE, layout, outputs
from cluster_assets.stages.assign import assign_file
from cluster_assets.stages.engine import InProcessEngine
from cluster_assets.spec import load_definitions
from cluster_assets_tests.conftest import materialize_group, write_definition
from cluster_assets_tests.faults import assign_dying_once
from cluster_assets_tests.small import append_blobs, definition, write_blobs
from cluster_assets_tests.test_engines import step_metadata

FILES = 4


def four_files(storage) -> list[str]:
    write_blobs(storage)
    for i in range(1, FILES):
        append_blobs(storage, "points", 15, start=1000 * i, seed=i)
    return sorted(f"points/{name}" for name in storage.list_dir("collections", "points") if not name.startswith("_"))


def assignments(storage, cluster: str) -> dict[str, int]:
    table = outputs.read_output(storage, cluster, layout.ASSIGNMENTS)
    return dict(zip(table.column("document_id").to_pylist(), table.column("cluster_id").to_pylist()))


@pytest.mark.parametrize("algorithm", ["kmeans", "agglomerative"])  # predict, and nearest labelled point
def test_ray_gives_the_in_process_assignments_one_task_per_file(algorithm, ray_local, definitions_dir, storage,
                                                                dagster_home, monkeypatch):
    four_files(storage)
    write_definition(definitions_dir, definition(algorithm=algorithm))
    monkeypatch.delenv("CLUSTER_ASSETS_RAY_ADDRESS", raising=False)
    materialize_group(definitions_dir, "blobs")
    in_process = assignments(storage, "blobs")

    monkeypatch.setenv("CLUSTER_ASSETS_RAY_ADDRESS", "local")
    result = materialize_group(definitions_dir, "blobs")
    assert assignments(storage, "blobs") == in_process
    assert len(in_process) == 120 + 15 * (FILES - 1)
    for stage in PER_FILE:
        meta = step_metadata(result, "blobs", stage)
        assert (meta["engine"], meta["ray_tasks"]) == ("ray", FILES), stage


def test_a_killed_worker_is_retried_and_a_bad_file_is_named(ray_local, definitions_dir, storage, dagster_home,
                                                             tmp_path, monkeypatch):
    from cluster_assets.engines.ray_engine import RayEngine

    files = four_files(storage)
    write_definition(definitions_dir, definition())
    monkeypatch.delenv("CLUSTER_ASSETS_RAY_ADDRESS", raising=False)
    materialize_group(definitions_dir, "blobs")
    spec = load_definitions(definitions_dir)[0][0].spec
    fit_id = outputs.current_fit_id(storage, "blobs")
    expected = InProcessEngine().map(assign_file, storage, spec, fit_id, files)

    engine = RayEngine()
    got = engine.map(assign_dying_once, storage, spec, fit_id, files, victim=files[1], marker_dir=str(tmp_path))
    pids = (tmp_path / "attempts").read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]  # the first attempt died with its worker; Ray ran it again
    assert [(rows, stats.counts, fp) for rows, stats, fp in got] == \
        [(rows, stats.counts, fp) for rows, stats, fp in expected]
    assert engine.describe() == {"engine": "ray", "ray_tasks": FILES}

    bad = files[2].split("/", 1)[1]
    (tmp_path / "bad").write_bytes(b"not parquet at all")
    storage.fs.copy_file(str(tmp_path / "bad"), storage.path("collections", "points", bad))
    with pytest.raises(Exception) as failure:
        RayEngine().map(assign_file, storage, spec, fit_id, files)
    assert "'points'" in str(failure.value) and bad in str(failure.value)
    for partition in files:
        if not partition.endswith(bad):
            table = storage.read_table(*layout.file_parts(spec, fit_id, partition, layout.ASSIGNMENTS))
            assert table.num_rows == expected[files.index(partition)][0]
