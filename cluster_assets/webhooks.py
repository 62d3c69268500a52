"""Webhooks: run status sensors that POST a JSON summary when a definition's run ends.

Two sensors serve every definition that lists ``webhooks``: one on success, one on
failure. For each finished run they find the definitions whose assets it planned and
POST to each of their webhooks that asked for that event:

    {"event": "success", "cluster_name": ..., "run_id": ..., "status": "SUCCESS",
     "started_at": ..., "ended_at": ..., "duration_s": ..., "trigger": ...,
     "counts": {"documents": ..., "num_clusters": ..., "noise_documents": ...},
     "artifacts": {"members": ..., "centroids": ...}, "enriched_collections": {...}, ...}

Headers: ``X-Cluster-Assets-Event``, ``X-Cluster-Assets-Delivery`` (``<run id>:<event>``,
the same on every retry, so a receiver can de-duplicate) and, when ``secret_env`` names
a set environment variable, ``X-Cluster-Assets-Signature: sha256=<hex HMAC-SHA256 of the
body>``. When ``secret_env`` is named but unset, nothing is sent (an unsigned delivery
to a receiver that verifies signatures would be rejected anyway) and the error is logged.

Delivery retries connection errors, timeouts, 408, 429 and 5xx with a short backoff,
each attempt bounded by the webhook's ``timeout_seconds``. Nothing here raises: an
endpoint that is down, slow or failing is logged, and neither the run (already over)
nor the sensor fails. Logs show the endpoint as ``scheme://host/…`` only, since webhook
URLs often carry a token in their path; the secret is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dagster as dg
import requests

from cluster_assets import history
from cluster_assets.secrets import redact_endpoint as redact
from cluster_assets.spec import ClusterDefinition, Webhook

SIGNATURE_HEADER = "X-Cluster-Assets-Signature"
EVENT_HEADER = "X-Cluster-Assets-Event"
DELIVERY_HEADER = "X-Cluster-Assets-Delivery"
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
BACKOFF_S = 0.5

logger = logging.getLogger("cluster_assets.webhooks")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivery:
    endpoint: str  # redacted
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def deliver(webhook: Webhook, body: bytes, headers: dict[str, str], log=logger,
            backoff_s: float = BACKOFF_S) -> Delivery:
    """POST ``body`` with retries; never raises."""
    endpoint = redact(webhook.url)
    headers = {"Content-Type": "application/json", "User-Agent": "cluster-assets-webhook", **headers}
    if webhook.secret_env:
        secret = os.environ.get(webhook.secret_env)
        if not secret:
            error = f"environment variable {webhook.secret_env} is not set: not sending an unsigned delivery"
            log.error(f"webhook {endpoint}: {error}")
            return Delivery(endpoint, False, 0, error=error)
        headers[SIGNATURE_HEADER] = sign(secret, body)
    status: int | None = None
    error: str | None = None
    attempts = 0
    for attempt in range(webhook.max_retries + 1):
        attempts = attempt + 1
        try:
            response = requests.post(webhook.url, data=body, headers=headers, timeout=webhook.timeout_seconds,
                                     allow_redirects=False)
            status = response.status_code
            if 200 <= status < 300:
                return Delivery(endpoint, True, attempts, status)
            error = f"HTTP {status}"
            if status not in RETRY_STATUSES:
                break
        except requests.Timeout:
            error = f"no answer within {webhook.timeout_seconds} s"
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}"  # the exception text may repeat the full URL
        except Exception as exc:  # noqa: BLE001 - a webhook never fails the sensor
            error = f"{type(exc).__name__}"
        if attempt < webhook.max_retries:
            log.warning(f"webhook {endpoint}: attempt {attempts} failed ({error}); retrying")
            time.sleep(backoff_s * (2 ** attempt))
    log.error(f"webhook {endpoint}: giving up after {attempts} attempts ({error})")
    return Delivery(endpoint, False, attempts, status, error)


def payload(instance: dg.DagsterInstance, run: dg.DagsterRun, spec: ClusterDefinition, event: str,
            error: str | None = None) -> dict:
    record = history.run_record(instance, run.run_id)
    summary = history.summarize(instance, record, spec.cluster_name) if record else None
    body = {"event": event}
    if summary:
        body.update(summary.as_dict())
    else:
        body.update({"cluster_name": spec.cluster_name, "run_id": run.run_id, "status": run.status.value})
    if error:
        body["error"] = error
    return body


def notify(instance: dg.DagsterInstance, run: dg.DagsterRun, specs: dict[str, ClusterDefinition], event: str,
           error: str | None = None, log=logger) -> list[Delivery]:
    """Deliver one run's outcome to every webhook of the definitions it touched; never raises."""
    jobs = []
    for name in sorted(history.clusters_of_run(instance, run) & set(specs)):
        spec = specs[name]
        hooks = [h for h in spec.webhooks if event in h.events]
        if not hooks:
            continue
        body = json.dumps(payload(instance, run, spec, event, error), sort_keys=True, default=str).encode()
        headers = {EVENT_HEADER: event, DELIVERY_HEADER: f"{run.run_id}:{event}"}
        jobs.extend((hook, body, headers) for hook in hooks)
    if not jobs:
        return []
    # Endpoints are independent: a slow one does not hold up the others.
    with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        return list(pool.map(lambda job: deliver(*job, log=log), jobs))


def build_webhook_sensors(specs: Sequence[ClusterDefinition]) -> list[dg.SensorDefinition]:
    with_hooks = {s.cluster_name: s for s in specs if s.webhooks}
    if not with_hooks:
        return []
    return [
        _status_sensor(dg.DagsterRunStatus.SUCCESS, "success", with_hooks),
        _status_sensor(dg.DagsterRunStatus.FAILURE, "failure", with_hooks),
    ]


def _status_sensor(status: dg.DagsterRunStatus, event: str, specs: dict[str, ClusterDefinition]):
    names = ", ".join(sorted(specs))

    @dg.run_status_sensor(
        run_status=status,
        name=f"cluster_assets_webhooks_on_{event}",
        description=f"POSTs the run summary to the {event} webhooks of: {names}.",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def webhook_sensor(context: dg.RunStatusSensorContext):
        error = context.dagster_event.message if event == "failure" and context.dagster_event else None
        try:
            deliveries = notify(context.instance, context.dagster_run, specs, event, error, log=context.log)
        except Exception as exc:  # noqa: BLE001 - notifications never fail the sensor
            context.log.error(f"webhooks for run {context.dagster_run.run_id}: {type(exc).__name__}: {exc}")
            return
        for d in deliveries:
            if d.ok:
                context.log.info(f"webhook {d.endpoint}: delivered ({d.status}) after {d.attempts} attempt(s)")

    return webhook_sensor
