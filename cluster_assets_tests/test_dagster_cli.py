"""The real ``dagster`` command line in subprocesses, with a temporary DAGSTER_HOME, storage and definitions folder."""

from __future__ import annotations

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
from cluster_assets.factory import STAGES  # noqa: E402
KEYS = [dg.AssetKey(["digits_kmeans", stage]) for stage in STAGES]


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

    def dagster(self, *args: str, cwd: Path | None = None, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([DAGSTER, *args], env=self.env(**extra), cwd=cwd or self.home.parent,
                              capture_output=True, text=True, timeout=300)

    def runs(self, monkeypatch) -> list:
        monkeypatch.setenv("DAGSTER_HOME", str(self.home))
        with dg.DagsterInstance.get() as instance:
            return [(run, {key: instance.get_latest_materialization_event(key) for key in KEYS})
                    for run in instance.get_runs()]


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Place:
    return Place(tmp_path_factory.mktemp("cli"))


def check_run(place: Place, run, latest) -> None:
    assert run.status == dg.DagsterRunStatus.SUCCESS
    for key in KEYS:
        assert latest[key] is not None and latest[key].run_id == run.run_id, key
    artifacts = place.storage / "artifacts" / "digits_kmeans" / run.run_id
    assert (artifacts / "centroids.parquet").is_file() and (artifacts / "members.parquet").is_file()
    metadata = latest[dg.AssetKey(["digits_kmeans", "labels"])].asset_materialization.metadata
    assert metadata["centroids_artifact"].value == str(artifacts / "centroids.parquet")
    assert Storage(place.storage).collection_dataset("digits_digits_kmeans_enriched").count_rows() == 1797


def test_materialize_a_group_from_the_shell(place, monkeypatch):
    done = place.dagster("asset", "materialize", "-m", "cluster_assets.definitions", "--select", "group:digits_kmeans")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = place.runs(monkeypatch)
    assert len(runs) == 1
    check_run(place, *runs[0])
    # the run's history lives in the temporary DAGSTER_HOME, as SQLite
    assert (place.home / "history" / "runs.db").is_file()


def test_materialize_by_key_pattern_from_the_shell(place, monkeypatch):
    done = place.dagster("asset", "materialize", "-m", "cluster_assets.definitions", "--select", "key:digits_kmeans/*")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = place.runs(monkeypatch)
    newest, latest = runs[0]  # newest first
    check_run(place, newest, latest)
    assert sorted(p.name for p in (place.storage / "artifacts" / "digits_kmeans").iterdir()) == sorted(
        run.run_id for run, _ in runs)


def test_definitions_validate_with_the_bundled_folder(place):
    env = {k: v for k, v in place.env().items() if k != "CLUSTER_ASSETS_DEFINITIONS_DIR"}
    done = subprocess.run([DAGSTER, "definitions", "validate", "-m", "cluster_assets.definitions"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "All code locations passed validation" in done.stdout + done.stderr
    assert "skipping cluster definition" not in done.stderr


def test_a_broken_definition_is_logged_by_name_and_the_location_still_loads(place, tmp_path):
    folder = tmp_path / "clusters"
    folder.mkdir()
    shutil.copy(REPO / "clusters" / "digits_kmeans.yaml", folder)
    (folder / "broken.yaml").write_text("cluster_name: [\n")
    done = place.dagster("definitions", "validate", "-m", "cluster_assets.definitions",
                         CLUSTER_ASSETS_DEFINITIONS_DIR=str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipping cluster definition: {folder / 'broken.yaml'}: cannot parse YAML" in done.stderr


def readme_step(command: str) -> str:
    """The step of the README's first command (also .ci/run's) that runs ``command``."""
    line = next(l for l in (REPO / "README.md").read_text().splitlines() if l.startswith("python3 -m venv"))
    assert line in (REPO / ".ci" / "run").read_text().splitlines()  # CI runs the README's command verbatim
    steps = line.split(" && ")
    return next(s for s in steps if command in s), steps


def test_after_the_readme_s_instance_step_two_runs_at_once_both_succeed(tmp_path, monkeypatch):
    """On a fresh SQLite instance two runs started at once each create the schema, leaving two migration
    heads that break every later Dagster command; the README creates the instance first."""
    migrate, steps = readme_step("dagster instance migrate")
    assert steps.index(migrate) < steps.index(readme_step("dagster asset materialize")[0])
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "dagster").symlink_to(DAGSTER)
    shutil.copy(REPO / "dagster.yaml", checkout)
    env = {**os.environ, "CLUSTER_ASSETS_STORAGE": str(tmp_path / "storage")}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(["bash", "-c", migrate], cwd=checkout, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (checkout / ".cluster_assets" / "dagster" / "history" / "runs.db").is_file()

    command = [DAGSTER, "asset", "materialize", "-f", str(Path(__file__).with_name("tiny_location.py")),
               "--select", "tiny/sample"]
    env["DAGSTER_HOME"] = str(checkout)
    runs = [subprocess.Popen(command, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    errors = [r.communicate(timeout=120)[1] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], errors
    monkeypatch.chdir(checkout)  # the checkout's dagster.yaml places the instance relative to it
    monkeypatch.setenv("DAGSTER_HOME", str(checkout))
    with dg.DagsterInstance.get() as instance:
        assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.SUCCESS] * 2
