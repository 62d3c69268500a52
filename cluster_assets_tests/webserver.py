"""A real ``dagster-webserver`` on loopback for the GraphQL-client and UI tests.

It loads the checkout's ``workspace.yaml`` (code location ``cluster_assets``) against a
temporary DAGSTER_HOME, storage root and definitions folder. The instance uses
Dagster's ``DefaultRunCoordinator`` so a submitted run is launched at once, without a
daemon (``dagster dev`` runs the daemon and keeps the default queued coordinator).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from cluster_assets_tests.conftest import REPO

WEBSERVER = Path(sys.executable).parent / "dagster-webserver"
LOCATION = "cluster_assets"

INSTANCE_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""

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
def running_webserver(workdir: Path, definitions_dir: Path, storage_root: str, timeout: float = 240):
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
            _wait_until_loaded(server, process, timeout)
            yield server
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def materialize_group_through_graphql(server: Webserver, group: str, timeout: float = 300) -> str:
    """Submit every stage of ``group`` to the webserver with Dagster's GraphQL client, poll to the end,
    and return the run id of a successful run."""
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient

    from cluster_assets.runs import submit_full_run
    from cluster_assets.spec import load_definitions
    from cluster_assets.storage import Storage

    client = DagsterGraphQLClient(server.host, port_number=server.port)
    spec = next(d.spec for d in load_definitions(server.definitions_dir)[0] if d.spec.group_name == group)
    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        run_id = submit_full_run(client, instance, Storage(server.storage_root), spec, LOCATION)
    deadline = time.monotonic() + timeout
    while client.get_run_status(run_id) not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(1)
    assert client.get_run_status(run_id) == dg.DagsterRunStatus.SUCCESS
    return run_id


def visit(page, url: str, settle_s: float = 20.0) -> None:
    """Open ``url`` and dismiss Dagster's first-visit newsletter dialog, which can appear seconds after
    the page on a loaded machine and then intercepts every click. It shows once per browser context."""
    page.goto(url)
    if getattr(page.context, "_newsletter_dismissed", False):
        return
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=settle_s * 1000)
    except Exception:  # noqa: BLE001 - no dialog in this context
        return
    skip.click()
    page.locator(".bp5-overlay-backdrop").first.wait_for(state="detached", timeout=15_000)
    page.context._newsletter_dismissed = True
