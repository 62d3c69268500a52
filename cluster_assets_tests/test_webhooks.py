"""Webhooks: the sensor POSTs to an HTTP server on 127.0.0.1, with retries, timeouts, a tick budget and signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType
from dagster._core.utils import make_new_run_id

from cluster_assets import webhooks
from cluster_assets.loader import build_defs
from cluster_assets.spec import ClusterDefinition, Webhook
from cluster_assets.storage import Storage
from cluster_assets.triggers import TAG_DEFINITION
from cluster_assets_tests.conftest import REPO, materialize_group, write_definition
from cluster_assets_tests.small import definition, write_blobs

SECRET = "s3cr3t-for-the-test-only"
WHSEC = "whsec_" + base64.b64encode(b"a-32-byte-key-for-the-tests-only").decode()
BIN = Path(sys.executable).parent


def receiver() -> dict:
    """The receiver of docs/operations.md, run as written; each call is a receiver with no ids seen yet."""
    text = (REPO / "docs" / "operations.md").read_text()
    namespace: dict = {}
    exec(re.search(r"```python\n(import base64.*?def verify\(.*?)```", text, re.S).group(1), namespace)
    return namespace


def verify(secret: str, headers: dict, body: bytes) -> dict:
    return receiver()["verify"](secret, headers, body)


class Sink:
    """An HTTP endpoint on loopback that records each POST and answers from a script."""

    def __init__(self):
        self.received: list[dict] = []
        self.script: list[int | float] = []  # status codes; a float means "sleep that long, then 200"
        self.stall: dict[str, float] = {}  # path -> seconds to sleep before every answer
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                action = sink.script.pop(0) if sink.script else 200
                if self.path in sink.stall:
                    action = sink.stall[self.path]
                if isinstance(action, float):
                    time.sleep(action)
                    action = 200
                try:
                    self.send_response(action)
                    self.end_headers()
                    self.wfile.write(b"{}")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, at the end of every test
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        return [r["path"] for r in self.received]


@pytest.fixture
def sink():
    with Sink() as server:
        yield server


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/down"


def run_group(definitions_dir, instance):
    defs = build_defs(definitions_dir)
    return defs, materialize_group(definitions_dir, "blobs", instance, raise_on_error=False)


@pytest.fixture
def instance(dagster_home):
    with dg.DagsterInstance.get() as instance:  # SQLite in a temporary DAGSTER_HOME
        yield instance


def tick(sensor: dg.SensorDefinition, instance, cursor: str | None = None) -> dg.SensorResult:
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def fire(defs, instance, cursor: str | None = None) -> dg.SensorResult:
    return tick(defs.resolve_sensor_def(webhooks.SENSOR_NAME), instance, cursor)


def finished_run(instance, cluster: str, event: str, ended_s_ago: float = 0.0) -> str:
    """A run of ``cluster`` (tagged as its triggers tag runs) that ended with ``event``, recorded as Dagster does."""
    run = instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=make_new_run_id(),
                                         tags={TAG_DEFINITION: cluster}, status=dg.DagsterRunStatus.STARTED))
    event_type = webhooks.EVENTS[event]
    instance.report_dagster_event(dg.DagsterEvent(event_type.value, job_name=run.job_name, message=f"run {event}"),
                                  run.run_id, timestamp=time.time() - ended_s_ago)
    return run.run_id


def spec_of(body: dict) -> ClusterDefinition:
    return ClusterDefinition.model_validate(body)


def test_success_posts_a_signed_summary(definitions_dir, storage, sink, monkeypatch, capfd, instance):
    monkeypatch.setenv("BLOBS_HOOK_SECRET", SECRET)
    write_blobs(storage)
    write_definition(definitions_dir, definition(webhooks=[
        {"url": f"{sink.url}/signed?token=abc", "secret_env": "BLOBS_HOOK_SECRET"},
        {"url": f"{sink.url}/failures-only", "events": ["failure"]},
    ]))
    defs, result = run_group(definitions_dir, instance)
    assert result.success
    fire(defs, instance)

    assert [r["path"] for r in sink.received] == ["/signed?token=abc"]
    request = sink.received[0]
    body = json.loads(request["body"])
    assert body["event"] == "success" and body["status"] == "SUCCESS"
    assert body["cluster_name"] == "blobs" and body["run_id"] == result.run_id
    assert body["counts"] == {"documents": 120, "num_clusters": 3, "noise_documents": 0}
    assert body["trigger"] == "manual"
    assert body["duration_s"] > 0
    assert body["started_at"] < body["ended_at"]
    for name in ("members", "centroids"):
        assert body["artifacts"][name].endswith(f"artifacts/blobs/{result.run_id}/{name}.parquet")
        assert Path(body["artifacts"][name]).exists()
    assert "points_blobs_enriched" in body["enriched_collections"]

    expected = "sha256=" + hmac.new(SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    assert request["headers"][webhooks.SIGNATURE_HEADER] == expected  # the legacy header, kept for one release
    assert verify(SECRET, request["headers"], request["body"]) == body
    assert request["headers"]["webhook-id"] == webhooks.message_id(result.run_id, "success", "blobs")
    assert request["headers"][webhooks.EVENT_HEADER] == "success"
    assert request["headers"][webhooks.DELIVERY_HEADER] == f"{result.run_id}:success"
    logged = capfd.readouterr()
    assert SECRET not in logged.err + logged.out
    assert "token=abc" not in logged.err + logged.out  # URLs are logged redacted


def test_failure_posts_the_error_to_failure_webhooks_only(definitions_dir, storage, sink, instance):
    write_blobs(storage)
    write_definition(definitions_dir, definition(feature_addresses=["no_such_column"], webhooks=[
        {"url": f"{sink.url}/any"},
        {"url": f"{sink.url}/success-only", "events": ["success"]},
    ]))
    defs, result = run_group(definitions_dir, instance)
    assert not result.success
    fire(defs, instance)
    assert [r["path"] for r in sink.received] == ["/any"]
    body = json.loads(sink.received[0]["body"])
    assert body["event"] == "failure" and body["status"] == "FAILURE"
    assert body["run_id"] == result.run_id
    assert body["error"]
    assert body["counts"]["documents"] is None  # assignments never ran
    assert webhooks.SIGNATURE_HEADER not in sink.received[0]["headers"]  # no secret configured
    assert "webhook-signature" not in sink.received[0]["headers"] and sink.received[0]["headers"]["webhook-id"]


def test_retries_until_the_endpoint_answers(sink):
    sink.script = [500, 503, 200]
    delivery = webhooks.deliver(Webhook(url=f"{sink.url}/flaky", max_retries=3), b'{"a": 1}',
                                {webhooks.DELIVERY_HEADER: "run:success"}, backoff_s=0.01)
    assert delivery.ok and delivery.attempts == 3 and delivery.status == 200
    assert len(sink.received) == 3
    assert {r["headers"][webhooks.DELIVERY_HEADER] for r in sink.received} == {"run:success"}
    assert all(r["body"] == b'{"a": 1}' for r in sink.received)


def test_client_errors_are_not_retried(sink):
    sink.script = [404]
    delivery = webhooks.deliver(Webhook(url=f"{sink.url}/gone", max_retries=3), b"{}", {}, backoff_s=0.01)
    assert not delivery.ok and delivery.attempts == 1 and delivery.error == "HTTP 404"


def test_down_slow_and_failing_endpoints_never_fail_the_sensor(definitions_dir, storage, sink, capfd, instance):
    sink.script = [2.0, 2.0]  # the slow endpoint sleeps past its timeout twice
    write_blobs(storage)
    write_definition(definitions_dir, definition(webhooks=[
        {"url": closed_port_url(), "max_retries": 1},
        {"url": f"{sink.url}/slow", "timeout_seconds": 0.3, "max_retries": 1},
    ]))
    defs, result = run_group(definitions_dir, instance)
    assert result.success

    started = time.monotonic()
    fire(defs, instance)  # returns normally
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed  # bounded by timeout x attempts, endpoints in parallel
    assert len([r for r in sink.received if r["path"] == "/slow"]) == 2
    logged = capfd.readouterr().err
    assert f"(blobs, run {result.run_id}): giving up after 2 attempts" in logged  # names definition and run
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS


def test_always_500_gives_up_after_the_retries(sink, capfd):
    sink.script = [500] * 10
    delivery = webhooks.deliver(Webhook(url=f"{sink.url}/broken", max_retries=2), b"{}", {}, backoff_s=0.01)
    assert not delivery.ok and delivery.attempts == 3 and delivery.status == 500
    assert len(sink.received) == 3


def test_unset_secret_sends_nothing_and_logs_the_variable_name(sink, monkeypatch):
    monkeypatch.delenv("MISSING_HOOK_SECRET", raising=False)
    messages = []

    class Log:
        def error(self, message):
            messages.append(message)

        warning = error

    delivery = webhooks.deliver(Webhook(url=f"{sink.url}/x", secret_env="MISSING_HOOK_SECRET"), b"{}", {}, log=Log())
    assert not delivery.ok and delivery.attempts == 0
    assert not sink.received
    assert any("MISSING_HOOK_SECRET is not set" in m for m in messages)


def test_webhook_sensors_exist_only_with_webhooks(definitions_dir, storage):
    write_definition(definitions_dir, definition())
    assert not build_defs(definitions_dir).get_repository_def().sensor_defs
    write_definition(definitions_dir, definition("hooked", webhooks=[{"url": "http://127.0.0.1:1/x"}]))
    sensors = {s.name: s for s in build_defs(definitions_dir).get_repository_def().sensor_defs}
    assert set(sensors) == {"cluster_assets_webhooks"}
    assert sensors["cluster_assets_webhooks"].default_status == dg.DefaultSensorStatus.RUNNING


def test_redact_keeps_only_scheme_and_host():
    assert webhooks.redact("https://hooks.example.com/services/T000/B000/XXXX?x=1") == "https://hooks.example.com/…"
    assert webhooks.redact("http://127.0.0.1:8080/a") == "http://127.0.0.1:8080/…"


def test_standard_webhooks_signature_matches_the_spec_vector():
    # the example of the Standard Webhooks reference libraries
    assert webhooks.standard_signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                                       1614265330, b'{"test": 2432232314}') == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("secret", [SECRET, WHSEC])
def test_a_receiver_accepts_each_attempt_once_and_refuses_replays(sink, monkeypatch, secret):
    monkeypatch.setenv("HOOK_SECRET", secret)
    sink.script = [503, 200]
    hook = Webhook(url=f"{sink.url}/signed", secret_env="HOOK_SECRET", max_retries=2)
    delivery = webhooks.deliver(hook, b'{"run_id": "r1"}', {}, backoff_s=0.01, msg_id="msg_r1")
    assert delivery.ok and delivery.attempts == 2
    first, second = sink.received
    # the same message on every attempt, each attempt stamped and signed for its own timestamp
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == "msg_r1"
    assert verify(secret, first["headers"], first["body"]) == {"run_id": "r1"}
    docs_receiver = receiver()
    assert docs_receiver["verify"](secret, second["headers"], second["body"]) == {"run_id": "r1"}
    with pytest.raises(ValueError, match="replayed"):
        docs_receiver["verify"](secret, second["headers"], second["body"])  # a captured delivery sent again
    with pytest.raises(ValueError, match="bad signature"):
        verify(secret, first["headers"], b'{"run_id": "r2"}')
    with pytest.raises(ValueError, match="bad signature"):  # the signature covers the id and the timestamp
        verify(secret, {**first["headers"], "webhook-timestamp": str(int(first["headers"]["webhook-timestamp"]) - 1)},
               first["body"])
    with pytest.raises(ValueError, match="bad signature"):
        verify(secret, {**first["headers"], "webhook-id": "msg_other"}, first["body"])
    with pytest.raises(ValueError, match="too old"):
        verify(secret, {**first["headers"], "webhook-timestamp": str(int(time.time()) - 600)}, first["body"])


def test_every_finished_run_is_delivered_once(sink, instance):
    """Whatever started a run (no origin or tags needed beyond its assets), its end is delivered, on one tick only."""
    spec = spec_of(definition(webhooks=[{"url": f"{sink.url}/default"},
                                        {"url": f"{sink.url}/canceled", "events": ["canceled"]}]))
    sensor = webhooks.build_webhook_sensors([spec])[0]
    finished_run(instance, "blobs", "success", ended_s_ago=2 * webhooks.FIRST_TICK_LOOKBACK_S)  # before the sensor
    ok = finished_run(instance, "blobs", "success")
    failed = finished_run(instance, "blobs", "failure")
    canceled = finished_run(instance, "blobs", "canceled")
    finished_run(instance, "someone_else", "success")

    first = tick(sensor, instance)
    got = sorted((r["path"], json.loads(r["body"])["run_id"], json.loads(r["body"])["event"]) for r in sink.received)
    assert got == sorted([("/default", ok, "success"), ("/default", failed, "failure"),
                          ("/canceled", canceled, "canceled")])
    assert json.loads(sink.received[[r["path"] for r in sink.received].index("/canceled")]["body"])["status"] \
        == "CANCELED"
    assert sink.url not in first.cursor and "/default" not in first.cursor  # URLs may carry tokens

    second = tick(sensor, instance, first.cursor)
    assert len(sink.received) == 3
    later = finished_run(instance, "blobs", "success")
    tick(sensor, instance, second.cursor)
    assert len(sink.received) == 4 and json.loads(sink.received[-1]["body"])["run_id"] == later


def test_a_slow_endpoint_never_holds_the_tick_nor_repeats_a_healthy_delivery(sink, instance):
    budget = 0.8
    sink.stall["/slow"] = 3.0
    spec = spec_of(definition(webhooks=[{"url": f"{sink.url}/slow", "timeout_seconds": 25, "max_retries": 2},
                                        {"url": f"{sink.url}/healthy"}]))
    sensor = webhooks.build_webhook_sensors([spec], tick_budget_s=budget)[0]
    run_id = finished_run(instance, "blobs", "success")

    cursor, slow_per_tick = None, []
    for _ in range(4):
        started = time.monotonic()
        cursor = tick(sensor, instance, cursor).cursor
        assert time.monotonic() - started < budget + 0.5
        slow_per_tick.append(sink.paths().count("/slow"))
        assert sink.paths().count("/healthy") == 1  # recorded with its 2xx: never sent again
    # one attempt per tick, cut to the budget, until the 1 + max_retries attempts are spent
    assert slow_per_tick == [1, 2, 3, 3]
    slow = [r for r in sink.received if r["path"] == "/slow"]
    assert {r["headers"]["webhook-id"] for r in slow} == {webhooks.message_id(run_id, "success", "blobs")}
    assert json.loads(webhooks.Cursor.parse(cursor).dump())["pending"] == []


DAEMON_TEST = "test_a_run_started_from_the_shell_is_delivered_by_the_daemon"


@dataclass
class DaemonPlace:
    base: Path
    home: Path
    env: dict[str, str]
    sink: Sink
    daemon: subprocess.Popen

    @property
    def log(self) -> Path:
        return self.base / "daemon.log"

    def stop(self) -> None:
        if self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()


@pytest.fixture(scope="module", autouse=True)
def daemon_place(request, tmp_path_factory):
    """For the daemon test, when it is selected: `dagster-daemon run` over a DAGSTER_HOME, storage and
    definitions folder of its own (the blobs, with a webhook to a sink of its own), started when the
    module starts so that it boots, and its sensor ticks, while the other tests run."""
    if not any(item.originalname == DAEMON_TEST and item.module is request.module for item in request.session.items):
        yield None
        return
    base = tmp_path_factory.mktemp("daemon")
    home, folder, root = base / "dagster_home", base / "clusters", base / "storage"
    for path in (home, folder, root):
        path.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    write_blobs(Storage(str(root)))
    with Sink() as sink:
        write_definition(folder, definition(webhooks=[{"url": f"{sink.url}/hook", "secret_env": "HOOK_SECRET"}]))
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")}
        env.update(DAGSTER_HOME=str(home), CLUSTER_ASSETS_STORAGE=str(root), CLUSTER_ASSETS_DEFINITIONS_DIR=str(folder),
                   HOOK_SECRET=WHSEC, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
        with (base / "daemon.log").open("w") as log:
            daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
                                      cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            place = DaemonPlace(base, home, env, sink, daemon)
            try:
                yield place
            finally:
                place.stop()


def test_a_run_started_from_the_shell_is_delivered_by_the_daemon(daemon_place):
    """The real thing: `dagster-daemon run` ticks the sensor; `cluster-assets run` (the full run) runs the group."""
    place, sink = daemon_place, daemon_place.sink
    with dg.DagsterInstance.from_config(str(place.home)) as instance:
        try:
            # the sensor runs before the shell run ends, as when a user runs the README's command beside `dagster dev`
            wait_for(lambda: sensor_ticks(instance), 120, place.log)
            done = subprocess.run([str(BIN / "cluster-assets"), "run", "blobs"], cwd=place.base, env=place.env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            [run] = instance.get_runs()
            assert run.status == dg.DagsterRunStatus.SUCCESS
            assert run.remote_job_origin is None  # what Dagster's run status sensors skip
            wait_for(lambda: sink.received, 120, place.log)
        finally:
            place.stop()
    [request] = sink.received
    body = verify(WHSEC, request["headers"], request["body"])
    assert body["run_id"] == run.run_id and body["event"] == "success" and body["trigger"] == "manual"
    assert body["counts"]["documents"] == 120


def sensor_ticks(instance) -> list:
    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
              if s.instigator_name == webhooks.SENSOR_NAME]
    return [t for s in states for t in instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=1)]


def wait_for(condition, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s; daemon log:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
