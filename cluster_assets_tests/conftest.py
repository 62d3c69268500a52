"""Shared fixtures: a temporary storage root, the demo collections, a temporary Dagster home."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from cluster_assets.demo import write_demo_collections
from cluster_assets.loader import build_defs
from cluster_assets.spec import load_definitions
from cluster_assets.storage import Storage

REPO = Path(__file__).resolve().parent.parent
# EVoC's numba kernels compile on first import in a fresh environment: about 2.5 min of CPU here
# (measured: 2m18 user, 3m23 wall under load), more than the whole suite's budget. Its cases are marked
# slow and run with `pytest -m slow`; `pytest` alone runs everything else.
COMPILES_ON_FIRST_USE = {"evoc"}


def algorithm_params(names):
    """Parametrize over algorithm names, marking those whose first use compiles for minutes as slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in COMPILES_ON_FIRST_USE else n for n in names]
SKIP_BROWSER_ENV = "CLUSTER_ASSETS_SKIP_BROWSER"


def no_browser(reason: str):
    """A UI test without its browser: skipped on a workstation, an error in CI (``CI`` set) unless
    ``CLUSTER_ASSETS_SKIP_BROWSER=1`` says the browser is left out on purpose."""
    in_ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    if in_ci and os.environ.get(SKIP_BROWSER_ENV) != "1":
        pytest.fail(f"{reason}; in CI the UI tests must run (set {SKIP_BROWSER_ENV}=1 to skip them)", pytrace=False)
    pytest.skip(reason)


def chromium_executable() -> str:
    """Debian's chromium ($CLUSTER_ASSETS_CHROMIUM, /usr/bin/chromium or on PATH), or ``no_browser``."""
    path = os.environ.get("CLUSTER_ASSETS_CHROMIUM") or "/usr/bin/chromium"
    found = path if Path(path).exists() else shutil.which("chromium")
    if not found:
        no_browser(f"no Chromium at {path} (apt-get install chromium); the UI tests need a real browser")
    return found


@pytest.fixture
def storage_root(tmp_path, monkeypatch) -> str:
    root = tmp_path / "storage"
    root.mkdir()
    monkeypatch.setenv("CLUSTER_ASSETS_STORAGE", str(root))
    return str(root)


@pytest.fixture
def storage(storage_root) -> Storage:
    return Storage(storage_root)


@pytest.fixture(scope="module")
def digits_storage(tmp_path_factory) -> Storage:
    """scikit-learn's digits as the collection ``digits``, once per module (read-only for its tests)."""
    from cluster_assets.demo import digits_table

    storage = Storage(tmp_path_factory.mktemp("digits") / "storage")
    table = digits_table()
    storage.write_collection("digits", table.schema, [table])
    return storage


@pytest.fixture
def demo_storage(storage) -> Storage:
    write_demo_collections(storage)
    return storage


@pytest.fixture
def definitions_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "clusters"
    folder.mkdir()
    monkeypatch.setenv("CLUSTER_ASSETS_DEFINITIONS_DIR", str(folder))
    return folder


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def write_definition(folder: Path, body: dict, name: str | None = None) -> Path:
    path = folder / (name or f"{body['cluster_name']}.json")
    path.write_text(json.dumps(body))
    return path


def write_table(storage: Storage, collection_id: str, table: pa.Table) -> None:
    storage.write_collection(collection_id, table.schema, [table])


def materialize_group(definitions_dir: Path, group: str, instance: dg.DagsterInstance | None = None,
                      raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Load the definitions folder as Dagster would and run one definition in full (every file), as
    ``cluster-assets run`` does."""
    from cluster_assets.places import default_storage_root
    from cluster_assets.runs import run_full

    defs = build_defs(definitions_dir)
    spec = next(d.spec for d in load_definitions(definitions_dir)[0] if d.spec.group_name == group)
    return run_full(defs, spec, instance or dg.DagsterInstance.ephemeral(), Storage(default_storage_root()),
                    raise_on_error=raise_on_error)


def launch(defs: dg.Definitions, instance: dg.DagsterInstance, tick) -> list[dg.ExecuteInProcessResult]:
    """Do what the daemon does with a sensor or schedule tick: apply its partition requests, then run its requests."""
    from cluster_assets.runs import launch_tick

    return launch_tick(defs, instance, tick)


@pytest.fixture
def moto_s3(tmp_path, monkeypatch) -> str:
    """moto's S3 server on 127.0.0.1 with the AWS variables (boto3, pyarrow, dagster-aws) pointed at it;
    yields the endpoint URL. Nothing is read from the user's AWS configuration."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its buckets in the process, shared by every server it starts: each test starts empty
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials")}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _shared_webserver_boot(request, tmp_path_factory):
    """Starts the session's webserver at the start of the session, in the background, when a collected
    test uses ``shared_webserver``: its start and the runs it is given overlap the tests before."""
    if not any("shared_webserver" in item.fixturenames for item in request.session.items):
        yield None
        return
    from cluster_assets_tests.webserver import shared_place_webserver

    with shared_place_webserver(tmp_path_factory.mktemp("webserver")) as ready:
        yield ready


@pytest.fixture(scope="session")
def shared_webserver(_shared_webserver_boot):
    """One real ``dagster-webserver`` for the session (cluster_assets_tests/webserver.py), shared by the UI,
    map and GraphQL-client tests: each has its own definition (group) in it and its own run."""
    return _shared_webserver_boot()


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session (cluster_assets_tests/postgres.py); skips, saying why,
    when the server binaries are absent."""
    from cluster_assets_tests.postgres import start_server

    server = start_server()
    if isinstance(server, str):
        pytest.skip(server)
    yield server
    server.stop()


@pytest.fixture
def postgres_db(postgres_server, request) -> dict:
    """A fresh database on the session's server: the ``postgres_db`` fields of dagster-postgres."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:6]
    postgres_server.create_database(name)
    return {"hostname": postgres_server.host, "port": postgres_server.port, "username": postgres_server.user,
            "password": "", "db_name": name}


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs, no dashboard, no usage stats) for the whole test session, started through the
    engine's own ``connect("local")``; runs with ``CLUSTER_ASSETS_RAY_ADDRESS=local`` reuse it."""
    import os

    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    from cluster_assets.engines.ray_engine import connect

    with pytest.MonkeyPatch.context() as env:  # Ray's processes take the environment they start with
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        # the workers import this checkout (and cluster_assets_tests' fault functions) as the session does
        env.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
        connect("local", num_cpus=2)
    yield ray
    ray.shutdown()
