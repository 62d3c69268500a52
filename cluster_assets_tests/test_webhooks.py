"""Webhooks: the run status sensors POST to an HTTP server on 127.0.0.1, with retries, timeouts and HMAC."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from cluster_assets import webhooks
from cluster_assets.loader import build_defs
from cluster_assets.spec import Webhook
from cluster_assets_tests.conftest import write_definition
from cluster_assets_tests.small import definition, write_blobs

SECRET = "s3cr3t-for-the-test-only"


class Sink:
    """An HTTP endpoint on loopback that records each POST and answers from a script."""

    def __init__(self):
        self.received: list[dict] = []
        self.script: list[int | float] = []  # status codes; a float means "sleep that long, then 200"
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                action = sink.script.pop(0) if sink.script else 200
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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


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
    result = dg.materialize([*defs.assets, *defs.asset_checks], resources=defs.resources,
                            selection=dg.AssetSelection.groups("blobs"), instance=instance, raise_on_error=False)
    return defs, result


def fire(defs, result, instance, event: str):
    name = f"cluster_assets_webhooks_on_{event}"
    sensor = defs.resolve_sensor_def(name)
    dagster_event = result.get_run_success_event() if event == "success" else result.get_run_failure_event()
    context = dg.build_run_status_sensor_context(sensor_name=name, dagster_event=dagster_event,
                                                 dagster_instance=instance, dagster_run=result.dagster_run)
    return sensor(context)


def test_success_posts_a_signed_summary(definitions_dir, storage, sink, monkeypatch, capfd):
    monkeypatch.setenv("BLOBS_HOOK_SECRET", SECRET)
    write_blobs(storage)
    write_definition(definitions_dir, definition(webhooks=[
        {"url": f"{sink.url}/signed?token=abc", "secret_env": "BLOBS_HOOK_SECRET"},
        {"url": f"{sink.url}/failures-only", "events": ["failure"]},
    ]))
    instance = dg.DagsterInstance.ephemeral()
    defs, result = run_group(definitions_dir, instance)
    assert result.success
    fire(defs, result, instance, "success")

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
    assert request["headers"][webhooks.SIGNATURE_HEADER] == expected
    assert request["headers"][webhooks.EVENT_HEADER] == "success"
    assert request["headers"][webhooks.DELIVERY_HEADER] == f"{result.run_id}:success"
    logged = capfd.readouterr()
    assert SECRET not in logged.err + logged.out
    assert "token=abc" not in logged.err + logged.out  # URLs are logged redacted


def test_failure_posts_the_error_to_failure_webhooks_only(definitions_dir, storage, sink):
    write_blobs(storage)
    write_definition(definitions_dir, definition(feature_addresses=["no_such_column"], webhooks=[
        {"url": f"{sink.url}/any"},
        {"url": f"{sink.url}/success-only", "events": ["success"]},
    ]))
    instance = dg.DagsterInstance.ephemeral()
    defs, result = run_group(definitions_dir, instance)
    assert not result.success
    fire(defs, result, instance, "failure")
    assert [r["path"] for r in sink.received] == ["/any"]
    body = json.loads(sink.received[0]["body"])
    assert body["event"] == "failure" and body["status"] == "FAILURE"
    assert body["run_id"] == result.run_id
    assert body["error"]
    assert body["counts"]["documents"] is None  # assignments never ran
    assert webhooks.SIGNATURE_HEADER not in sink.received[0]["headers"]  # no secret configured


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


def test_down_slow_and_failing_endpoints_never_fail_the_sensor(definitions_dir, storage, sink, capfd):
    sink.script = [2.0, 2.0]  # the slow endpoint sleeps past its timeout twice
    write_blobs(storage)
    write_definition(definitions_dir, definition(webhooks=[
        {"url": closed_port_url(), "max_retries": 1},
        {"url": f"{sink.url}/slow", "timeout_seconds": 0.3, "max_retries": 1},
    ]))
    instance = dg.DagsterInstance.ephemeral()
    defs, result = run_group(definitions_dir, instance)
    assert result.success

    started = time.monotonic()
    fire(defs, result, instance, "success")  # returns normally
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed  # bounded by timeout x attempts, endpoints in parallel
    assert len([r for r in sink.received if r["path"] == "/slow"]) == 2
    logged = capfd.readouterr().err
    assert "giving up after 2 attempts" in logged
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
    assert set(sensors) == {"cluster_assets_webhooks_on_success", "cluster_assets_webhooks_on_failure"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())


def test_redact_keeps_only_scheme_and_host():
    assert webhooks.redact("https://hooks.example.com/services/T000/B000/XXXX?x=1") == "https://hooks.example.com/…"
    assert webhooks.redact("http://127.0.0.1:8080/a") == "http://127.0.0.1:8080/…"
