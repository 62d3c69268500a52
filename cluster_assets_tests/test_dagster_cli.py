"""The real ``dagster`` command line in subprocesses, with a temporary DAGSTER_HOME, storage and definitions folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from cluster_assets.demo import write_demo_collections
from cluster_assets.storage import Storage

REPO = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).parent / "dagster")
CLUSTER_ASSETS = str(Path(sys.executable).parent / "cluster-assets")
from cluster_assets.stages import STAGE_NAMES  # noqa: E402
KEYS = [dg.AssetKey(["digits_kmeans", stage]) for stage in STAGE_NAMES]


class Place:
    def __init__(self, base: Path):
        self.home = base / "dagster_home"
        self.storage = base / "storage"
        self.definitions = base / "clusters"
        self.home.mkdir()
        self.definitions.mkdir()
        # the instance's own dagster.yaml: SQLite under DAGSTER_HOME, no telemetry
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        shutil.copy(REPO / "clusters" / "digits_kmeans.yaml", self.definitions)
        write_demo_collections(Storage(self.storage))

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")}
        env.update(DAGSTER_HOME=str(self.home), CLUSTER_ASSETS_STORAGE=str(self.storage),
                   CLUSTER_ASSETS_DEFINITIONS_DIR=str(self.definitions))
        env.update(extra)
        return env

    def dagster(self, *args: str, cwd: Path | None = None, program: str = DAGSTER,
                **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([program, *args], env=self.env(**extra), cwd=cwd or self.home.parent,
                              capture_output=True, text=True, timeout=300)

    def runs(self, monkeypatch) -> list:
        monkeypatch.setenv("DAGSTER_HOME", str(self.home))
        with dg.DagsterInstance.get() as instance:
            return [(run, {key: instance.get_latest_materialization_event(key) for key in KEYS})
                    for run in instance.get_runs()]


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Place:
    return Place(tmp_path_factory.mktemp("cli"))


def validate_bundled(place: Place, workdir: Path) -> subprocess.Popen:
    env = {k: v for k, v in place.env(DAGSTER_HOME=str(own_home(workdir))).items()
           if k != "CLUSTER_ASSETS_DEFINITIONS_DIR"}
    return subprocess.Popen([DAGSTER, "definitions", "validate", "-m", "cluster_assets.definitions"], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def validate_with_a_broken_definition(place: Place, workdir: Path) -> subprocess.Popen:
    folder = workdir / "clusters"
    folder.mkdir()
    shutil.copy(REPO / "clusters" / "digits_kmeans.yaml", folder)
    (folder / "broken.yaml").write_text("cluster_name: [\n")
    env = place.env(DAGSTER_HOME=str(own_home(workdir)), CLUSTER_ASSETS_DEFINITIONS_DIR=str(folder))
    return subprocess.Popen([DAGSTER, "definitions", "validate", "-m", "cluster_assets.definitions"], env=env,
                            cwd=place.home.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def materialize_the_whole_group(place: Place, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen([DAGSTER, "asset", "materialize", "-m", "cluster_assets.definitions",
                             "--select", "group:digits_kmeans"], env=place.env(DAGSTER_HOME=str(own_home(workdir))),
                            cwd=place.home.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def own_home(workdir: Path) -> Path:
    """A DAGSTER_HOME of its own: a command started beside the full run never creates the SQLite schema
    of the instance that run is creating."""
    home = workdir / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


# Commands that read nothing the other tests write (`dagster definitions validate`, and a selection
# Dagster refuses before any run): they start together when the module starts (each costs seconds of
# imports) and run beside the full run, each in a DAGSTER_HOME of its own; each test reads its own.
STARTED_AT_ONCE = {"test_definitions_validate_with_the_bundled_folder": validate_bundled,
                   "test_a_broken_definition_is_logged_by_name_and_the_location_still_loads":
                       validate_with_a_broken_definition,
                   "test_plain_dagster_materialize_takes_one_stage_or_one_file": materialize_the_whole_group}


@pytest.fixture(scope="module", autouse=True)
def started(request, tmp_path_factory) -> dict[str, tuple[subprocess.Popen, Path]]:
    """The commands of ``STARTED_AT_ONCE`` whose tests were selected, started, with the folder each works
    in, by test name; killed at the end if still running."""
    selected = {item.originalname for item in request.session.items if item.module is request.module}
    if not selected & set(STARTED_AT_ONCE):
        yield {}
        return
    place = request.getfixturevalue("place")
    processes = {}
    for name, start in STARTED_AT_ONCE.items():
        if name in selected:
            workdir = tmp_path_factory.mktemp("started")
            processes[name] = (start(place, workdir), workdir)
    try:
        yield processes
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                process.kill()
            process.communicate()


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def check_run(place: Place, run, latest) -> None:
    assert run.status == dg.DagsterRunStatus.SUCCESS
    for key in KEYS:
        assert latest[key] is not None and latest[key].run_id == run.run_id, key
    artifacts = place.storage / "artifacts" / "digits_kmeans" / run.run_id
    assert (artifacts / "centroids.parquet").is_file() and (artifacts / "members.parquet").is_file()
    metadata = latest[dg.AssetKey(["digits_kmeans", "labels"])].asset_materialization.metadata
    assert metadata["centroids_artifact"].value == str(artifacts / "centroids.parquet")
    assert Storage(place.storage).collection_dataset("digits_digits_kmeans_enriched").count_rows() == 1797


def test_a_full_run_from_the_shell_is_one_dagster_run_over_every_file(place, monkeypatch):
    done = place.dagster("run", "digits_kmeans", program=CLUSTER_ASSETS)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = place.runs(monkeypatch)
    assert len(runs) == 1
    check_run(place, *runs[0])
    assert "digits_kmeans: run " in done.stdout and "SUCCESS" in done.stdout
    # the run's history lives in the temporary DAGSTER_HOME, as SQLite, with the files as partitions
    assert (place.home / "history" / "runs.db").is_file()
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("digits_kmeans__files") == ["digits/part-0.parquet"]


def test_plain_dagster_materialize_takes_one_stage_or_one_file(place, started, monkeypatch):
    # Checked on Dagster 1.13: a group mixing per-file and per-fit assets needs a partition.
    refused = finish(started["test_plain_dagster_materialize_takes_one_stage_or_one_file"][0])
    assert refused.returncode != 0 and "partition" in (refused.stdout + refused.stderr).lower()
    # one per-fit stage again (new labels) reads the fit of the full run before
    labels = place.dagster("asset", "materialize", "-m", "cluster_assets.definitions",
                           "--select", "key:digits_kmeans/labels")
    assert labels.returncode == 0, labels.stderr[-3000:]
    # one file's enrichment again
    one = place.dagster("asset", "materialize", "-m", "cluster_assets.definitions",
                        "--select", "key:digits_kmeans/enriched_collection", "--partition", "digits/part-0.parquet")
    assert one.returncode == 0, one.stderr[-3000:]
    monkeypatch.setenv("DAGSTER_HOME", str(place.home))
    with dg.DagsterInstance.get() as instance:
        full = instance.get_latest_materialization_event(dg.AssetKey(["digits_kmeans", "model"])).run_id
        for stage in ("labels", "enriched_collection"):
            event = instance.get_latest_materialization_event(dg.AssetKey(["digits_kmeans", stage]))
            assert event.run_id != full
            assert event.asset_materialization.metadata["cluster_assets/fit_id"].value == full


def test_definitions_validate_with_the_bundled_folder(started):
    done = finish(started["test_definitions_validate_with_the_bundled_folder"][0])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "All code locations passed validation" in done.stdout + done.stderr
    assert "skipping cluster definition" not in done.stderr


def test_a_broken_definition_is_logged_by_name_and_the_location_still_loads(started):
    process, workdir = started["test_a_broken_definition_is_logged_by_name_and_the_location_still_loads"]
    done = finish(process)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipping cluster definition: {workdir / 'clusters' / 'broken.yaml'}: cannot parse YAML" in done.stderr


def readme_step(command: str) -> str:
    """The step of the README's first command (also .ci/run's) that runs ``command``."""
    line = next(l for l in (REPO / "README.md").read_text().splitlines() if l.startswith("python3 -m venv"))
    assert line in (REPO / ".ci" / "run").read_text().splitlines()  # CI runs the README's command verbatim
    steps = line.split(" && ")
    return next(s for s in steps if command in s), steps


def test_two_full_runs_at_once_after_the_readme_s_instance_step_never_overlap_a_step(tmp_path, monkeypatch):
    """On a fresh SQLite instance two runs started at once each create the schema, leaving two migration
    heads that break every later Dagster command; the README creates the instance first. And with the
    checkout's dagster.yaml, two runs of one definition never run two of its steps at once (its pool),
    and each run's outputs come from its own fit."""
    from cluster_assets_tests.small import definition, write_blobs

    migrate, steps = readme_step("dagster instance migrate")
    assert steps.index(migrate) < steps.index(readme_step("cluster-assets run")[0])
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "dagster").symlink_to(DAGSTER)
    shutil.copy(REPO / "dagster.yaml", checkout)
    folder = tmp_path / "clusters"
    folder.mkdir()
    (folder / "blobs.json").write_text(json.dumps(definition()))
    write_blobs(Storage(tmp_path / "storage"))
    env = {**os.environ, "CLUSTER_ASSETS_STORAGE": str(tmp_path / "storage"),
           "CLUSTER_ASSETS_DEFINITIONS_DIR": str(folder)}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(["bash", "-c", migrate], cwd=checkout, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (checkout / ".cluster_assets" / "dagster" / "history" / "runs.db").is_file()

    env["DAGSTER_HOME"] = str(checkout)
    runs = [subprocess.Popen([CLUSTER_ASSETS, "run", "blobs"], cwd=checkout, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [r.communicate(timeout=240)[1] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [e[-2000:] for e in errors]
    monkeypatch.chdir(checkout)  # the checkout's dagster.yaml places the instance relative to it
    monkeypatch.setenv("DAGSTER_HOME", str(checkout))
    with dg.DagsterInstance.get() as instance:
        finished = instance.get_runs()
        assert [r.status for r in finished] == [dg.DagsterRunStatus.SUCCESS] * 2
        spans = [(s.start_time, s.end_time, r.run_id) for r in finished for s in instance.get_run_step_stats(r.run_id)]
        for start, end, run_id in spans:
            for other_start, other_end, other in spans:
                if other != run_id:
                    assert end <= other_start or other_end <= start, "two steps of one definition overlapped"
        for run in finished:
            records = instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
            fits = {r.event_log_entry.asset_materialization.metadata[key].value for r in records
                    for key in ("cluster_assets/fit_id",) if key in r.event_log_entry.asset_materialization.metadata}
            assert fits == {run.run_id}
