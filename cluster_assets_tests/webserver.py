"""A real ``dagster-webserver`` on loopback for the GraphQL-client and UI tests.

It loads the checkout's ``workspace.yaml`` (code location ``cluster_assets``) against a
temporary DAGSTER_HOME, storage root and definitions folder. The instance uses
Dagster's ``DefaultRunCoordinator`` so a submitted run is launched at once, without a
daemon (``dagster dev`` runs the daemon and keeps the default queued coordinator).

The tests share one such webserver per session (``shared_webserver`` in conftest.py):
starting one and loading the code location takes seconds. Its definitions folder holds
one definition per test module that uses it (``SHARED_DEFINITIONS``, distinct groups),
and each test submits and looks at its own run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from cluster_assets_tests.conftest import REPO
from cluster_assets_tests.small import definition

WEBSERVER = Path(sys.executable).parent / "dagster-webserver"
LOCATION = "cluster_assets"

INSTANCE_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""

# The groups of the session's webserver, one per test module that uses it.
UI_GROUP = "blobs"  # test_ui.py: a cron schedule in its timezone and an event sensor to show
GRAPHQL_GROUP = "polled"  # test_graphql_client.py: submitted and polled by a program
MAP_GROUP = "digits_ui"  # test_cluster_map.py: the map PNG in the asset's page
SHARED_DEFINITIONS = [
    definition(UI_GROUP, triggers=[
        {"type": "cron", "cron": "0 3 * * *", "timezone": "Europe/Paris", "name": "nightly"},
        {"type": "event", "name": "on_arrival", "min_new_documents": 10}]),
    definition(GRAPHQL_GROUP, triggers=[{"type": "cron", "cron": "0 3 * * *", "name": "nightly"}]),
    {"cluster_name": MAP_GROUP, "source_collection_ids": ["digits"], "feature_addresses": ["pixels"],
     "algorithm": "kmeans", "algorithm_config": {"num_clusters": 10}, "dimension_reduction": {"method": "pca"}},
]

LOCATION_STATUS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


@dataclass
class Webserver:
    host: str
    port: int
    home: Path
    log: Path
    definitions_dir: Path | None = None
    storage_root: str | None = None
    submitted: dict[str, str] = field(default_factory=dict)  # group -> run id submitted at start

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                                 timeout=30)
        response.raise_for_status()
        return response.json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_loaded(server: Webserver, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {process.returncode}:\n{server.log.read_text()[-4000:]}")
        try:
            if requests.get(f"{server.url}/server_info", timeout=2).ok:
                entries = server.graphql(LOCATION_STATUS)["data"]["workspaceOrError"]["locationEntries"]
                entry = next(e for e in entries if e["name"] == LOCATION)
                last = f"{entry['loadStatus']} {entry['locationOrLoadError']}"
                if entry["loadStatus"] == "LOADED":
                    if entry["locationOrLoadError"]["__typename"] != "RepositoryLocation":
                        raise RuntimeError(f"code location failed to load: {entry['locationOrLoadError']}")
                    return
        except (requests.RequestException, KeyError, StopIteration) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise TimeoutError(f"dagster-webserver not ready after {timeout} s ({last}):\n{server.log.read_text()[-4000:]}")


@contextmanager
def launched_webserver(workdir: Path, definitions_dir: Path, storage_root: str):
    """Start ``dagster-webserver`` (without waiting for it) and stop it, with its code server, on exit."""
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    server = Webserver("127.0.0.1", free_port(), home, workdir / "webserver.log", definitions_dir, storage_root)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CLUSTER_ASSETS_STORAGE": storage_root,
        "CLUSTER_ASSETS_DEFINITIONS_DIR": str(definitions_dir),
        "PYTHONUNBUFFERED": "1",
    }
    with server.log.open("w") as log:
        process = subprocess.Popen(
            [str(WEBSERVER), "-h", server.host, "-p", str(server.port), "-w", str(REPO / "workspace.yaml")],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            yield server, process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


@contextmanager
def running_webserver(workdir: Path, definitions_dir: Path, storage_root: str, timeout: float = 240):
    """A webserver whose code location has loaded."""
    with launched_webserver(workdir, definitions_dir, storage_root) as (server, process):
        _wait_until_loaded(server, process, timeout)
        yield server


@contextmanager
def shared_place_webserver(workdir: Path, timeout: float = 240):
    """The session's webserver, started in the background: yields a function that returns the
    ``Webserver`` once its code location has loaded (raising what went wrong, if anything did).

    The blobs (collection ``points``) and the demo collections are in one storage root, every
    definition of ``SHARED_DEFINITIONS`` in one folder. The runs the UI and map tests look at
    (``UI_GROUP``, ``MAP_GROUP``) are submitted through GraphQL as soon as it is up, so that they run
    while other tests do; each test waits for its own (``wait_for_success``). The GraphQL-client test
    submits its run itself."""
    from cluster_assets.demo import write_demo_collections
    from cluster_assets.storage import Storage
    from cluster_assets_tests.conftest import write_definition
    from cluster_assets_tests.small import write_blobs

    storage_root = str(workdir / "storage")
    write_blobs(Storage(storage_root))
    write_demo_collections(Storage(storage_root))
    folder = workdir / "clusters"
    folder.mkdir()
    for body in SHARED_DEFINITIONS:
        write_definition(folder, body)
    with launched_webserver(workdir, folder, storage_root) as (server, process):
        failure: list[BaseException] = []

        def boot() -> None:
            try:
                _wait_until_loaded(server, process, timeout)
                server.submitted = {group: submit_group_through_graphql(server, group)
                                    for group in (UI_GROUP, MAP_GROUP)}
            except BaseException as exc:  # noqa: BLE001 - raised again in the test that asks for the server
                failure.append(exc)

        thread = threading.Thread(target=boot, name="shared-webserver-boot", daemon=True)
        thread.start()

        def ready() -> Webserver:
            thread.join()
            if failure:
                raise failure[0]
            return server

        try:
            yield ready
        finally:
            thread.join()


def submit_group_through_graphql(server: Webserver, group: str) -> str:
    """Submit every stage of ``group`` to the webserver with Dagster's GraphQL client; return the run id."""
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient

    from cluster_assets.runs import submit_full_run
    from cluster_assets.spec import load_definitions
    from cluster_assets.storage import Storage

    client = DagsterGraphQLClient(server.host, port_number=server.port)
    spec = next(d.spec for d in load_definitions(server.definitions_dir)[0] if d.spec.group_name == group)
    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        return submit_full_run(client, instance, Storage(server.storage_root), spec, LOCATION)


def wait_for_success(server: Webserver, run_id: str, timeout: float = 300) -> str:
    """Poll the run through GraphQL to its end; return its id once it succeeded."""
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient(server.host, port_number=server.port)
    deadline = time.monotonic() + timeout
    while client.get_run_status(run_id) not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.5)
    assert client.get_run_status(run_id) == dg.DagsterRunStatus.SUCCESS
    return run_id


def visit(page, url: str, settle_s: float = 20.0) -> None:
    """Open ``url`` and dismiss Dagster's first-visit newsletter dialog, which can appear seconds after
    the page on a loaded machine and then intercepts every click. It shows once per browser context,
    and only while the webserver's ``shouldShowNux`` is true: dismissing it in any browser sets that
    false for good (the ``setNuxSeen`` mutation), so on a webserver where it was dismissed before (the
    session's shared one) there is no dialog to wait for."""
    page.goto(url)
    if getattr(page.context, "_newsletter_dismissed", False):
        return
    parts = urlsplit(url)
    answer = requests.post(f"{parts.scheme}://{parts.netloc}/graphql", json={"query": "{ shouldShowNux }"},
                           timeout=30)
    answer.raise_for_status()
    if not answer.json()["data"]["shouldShowNux"]:
        page.context._newsletter_dismissed = True
        return
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=settle_s * 1000)
    except Exception:  # noqa: BLE001 - no dialog in this context
        return
    skip.click()
    page.locator(".bp5-overlay-backdrop").first.wait_for(state="detached", timeout=15_000)
    page.context._newsletter_dismissed = True
