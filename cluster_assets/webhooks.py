"""Webhooks: one sensor that POSTs a JSON summary when a definition's run ends.

The sensor ``cluster_assets_webhooks`` reads the instance's run status changes
(``RUN_SUCCESS``, ``RUN_FAILURE``, ``RUN_CANCELED``) itself, so it sees every run
whatever started it: the UI, ``dagster asset materialize``, GraphQL, a schedule or a
sensor (Dagster's run status sensors skip shell runs, which carry no job origin). For
each finished run it finds the definitions whose assets the run planned and POSTs to
each of their webhooks that asked for that event (``canceled`` only when listed):

    {"event": "success", "cluster_name": ..., "run_id": ..., "status": "SUCCESS",
     "started_at": ..., "ended_at": ..., "duration_s": ..., "trigger": ...,
     "counts": {"documents": ..., "num_clusters": ..., "noise_documents": ...},
     "artifacts": {"members": ..., "centroids": ...}, "enriched_collections": {...}, ...}

Headers follow Standard Webhooks: ``webhook-id`` (the same on every attempt of one
message), ``webhook-timestamp`` (this attempt) and, when ``secret_env`` names a set
variable, ``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``
(a ``whsec_`` secret is base64-decoded first, any other is used as given). The older
``X-Cluster-Assets-Event``, ``X-Cluster-Assets-Delivery`` and
``X-Cluster-Assets-Signature: sha256=<hex HMAC of the body>`` are still sent for one
release. When ``secret_env`` is named but unset, nothing is sent and the error is logged.

A tick never runs past its budget (``TICK_BUDGET_S``, under Dagster's 60 s limit)
whatever the webhooks' timeouts: each attempt's timeout is cut to what remains, and
deliveries that do not fit, or that failed and have retries left, wait in the cursor
for the next tick. The cursor holds the last run status event seen of each kind and
those pending deliveries, so a delivery answered with a 2xx is never sent again.
Nothing here raises: an endpoint that is down, slow or failing is logged. Logs and the
cursor show an endpoint as ``scheme://host/…`` or a hash only (webhook URLs often carry
a token); the secret is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

import dagster as dg
import requests

from cluster_assets import history
from cluster_assets.secrets import redact_endpoint as redact
from cluster_assets.spec import ClusterDefinition, Webhook

SENSOR_NAME = "cluster_assets_webhooks"
SIGNATURE_HEADER = "X-Cluster-Assets-Signature"  # legacy, kept for one release beside webhook-signature
EVENT_HEADER = "X-Cluster-Assets-Event"
DELIVERY_HEADER = "X-Cluster-Assets-Delivery"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
BACKOFF_S = 0.5
EVENTS = {
    "success": dg.DagsterEventType.RUN_SUCCESS,
    "failure": dg.DagsterEventType.RUN_FAILURE,
    "canceled": dg.DagsterEventType.RUN_CANCELED,
}
TICK_BUDGET_S = 40.0  # Dagster cuts a sensor tick at 60 s; the rest is left for reading the instance
TICK_INTERVAL_S = 15
FIRST_TICK_LOOKBACK_S = 3600.0  # a sensor without a cursor delivers the runs that ended in the last hour
FETCH_LIMIT = 100  # run status events read per kind and tick
MAX_PENDING = 200  # deliveries carried in the cursor; past that, new runs wait in the event log
MIN_ATTEMPT_S = 0.2  # an attempt is not started with less time than this left in the tick
WORKERS = 8

logger = logging.getLogger("cluster_assets.webhooks")


def sign(secret: str, body: bytes) -> str:
    """The legacy ``X-Cluster-Assets-Signature``: an HMAC of the body alone."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def secret_key(secret: str) -> bytes:
    """Standard Webhooks' key: a ``whsec_<base64>`` secret is decoded, any other is used as given."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):] + "==")
    return secret.encode()


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()


def message_id(run_id: str, event: str, cluster_name: str) -> str:
    """One message per run, event and definition; hashed because ids must not contain '.'."""
    return "msg_" + hashlib.sha256(f"{run_id}\n{event}\n{cluster_name}".encode()).hexdigest()[:32]


def hook_key(cluster_name: str, webhook: Webhook) -> str:
    """How the cursor names a webhook without holding its URL (which may carry a token)."""
    return hashlib.sha256(f"{cluster_name}\n{webhook.url}\n{webhook.secret_env}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Delivery:
    endpoint: str  # redacted
    ok: bool
    attempts: int  # in total, earlier ticks included
    status: int | None = None
    error: str | None = None
    retry: bool = False  # not delivered yet, to be attempted again on a later tick


def deliver(webhook: Webhook, body: bytes, headers: dict[str, str], log=logger, backoff_s: float = BACKOFF_S,
            *, msg_id: str | None = None, deadline: float | None = None, attempts_done: int = 0,
            about: str = "", clock: Callable[[], float] = time.monotonic) -> Delivery:
    """POST ``body``, retrying while attempts are left and ``deadline`` (a ``clock`` time) allows; never raises.

    Every attempt carries the same ``webhook-id`` and its own ``webhook-timestamp`` and signature.
    ``about`` (the definition and run) goes into the log lines.
    """
    endpoint = redact(webhook.url)
    where = f"webhook {endpoint}" + (f" ({about})" if about else "")
    headers = {"Content-Type": "application/json", "User-Agent": "cluster-assets-webhook", **headers,
               ID_HEADER: msg_id or f"msg_{uuid.uuid4().hex}"}
    secret = None
    if webhook.secret_env:
        secret = os.environ.get(webhook.secret_env)
        if not secret:
            error = f"environment variable {webhook.secret_env} is not set: not sending an unsigned delivery"
            log.error(f"{where}: {error}")
            return Delivery(endpoint, False, attempts_done, error=error)
        headers[SIGNATURE_HEADER] = sign(secret, body)
    max_attempts = webhook.max_retries + 1
    attempts, status, error, retryable = attempts_done, None, None, True
    while attempts < max_attempts:
        remaining = None if deadline is None else deadline - clock()
        if remaining is not None and remaining < MIN_ATTEMPT_S:
            break
        timeout = webhook.timeout_seconds if remaining is None else min(webhook.timeout_seconds, remaining)
        attempts += 1
        timestamp = int(time.time())
        headers[TIMESTAMP_HEADER] = str(timestamp)
        if secret:
            headers[STANDARD_SIGNATURE_HEADER] = standard_signature(secret, headers[ID_HEADER], timestamp, body)
        try:
            response = requests.post(webhook.url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
            status = response.status_code
            if 200 <= status < 300:
                return Delivery(endpoint, True, attempts, status)
            error = f"HTTP {status}"
            retryable = status in RETRY_STATUSES
        except requests.Timeout:
            error, retryable = f"no answer within {timeout:.3g} s", True
        except requests.RequestException as exc:
            error, retryable = type(exc).__name__, True  # the exception text may repeat the full URL
        except Exception as exc:  # noqa: BLE001 - a webhook never fails the sensor
            error, retryable = type(exc).__name__, True
        if not retryable or attempts >= max_attempts:
            break
        pause = backoff_s * (2 ** (attempts - 1))
        if deadline is not None and clock() + pause + MIN_ATTEMPT_S > deadline:
            log.warning(f"{where}: attempt {attempts} failed ({error}); retrying on a later tick")
            return Delivery(endpoint, False, attempts, status, error, retry=True)
        log.warning(f"{where}: attempt {attempts} failed ({error}); retrying")
        time.sleep(pause)
    if retryable and attempts < max_attempts:  # the tick ran out before this attempt
        return Delivery(endpoint, False, attempts, status, error, retry=True)
    log.error(f"{where}: giving up after {attempts} attempts ({error})")
    return Delivery(endpoint, False, attempts, status, error)


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str | None:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE, limit=1).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.message if event else None


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


@dataclass
class Pending:
    """One message to one webhook, waiting in the cursor."""

    run_id: str
    event: str
    cluster: str
    hook: str  # hook_key
    attempts: int = 0


@dataclass
class Cursor:
    since: float | None = None  # timestamp from which a kind of event without a storage id is read
    after: dict[str, int] = field(default_factory=dict)  # event -> last storage id seen
    pending: list[Pending] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | None) -> "Cursor":
        try:
            data = json.loads(text) if text else {}
            return cls(since=data.get("since"), after={k: int(v) for k, v in data.get("after", {}).items()},
                       pending=[Pending(**p) for p in data.get("pending", [])])
        except (ValueError, TypeError, AttributeError):
            logger.warning("webhooks: unreadable sensor cursor; starting over from the last hour")
            return cls()

    def dump(self) -> str:
        return json.dumps({"since": self.since, "after": self.after, "pending": [asdict(p) for p in self.pending]},
                          separators=(",", ":"))


@dataclass
class Tick:
    cursor: str
    deliveries: list[Delivery]
    new_messages: int
    carried: int  # deliveries left pending for a later tick

    @property
    def summary(self) -> str:
        ok = sum(d.ok for d in self.deliveries)
        return (f"{self.new_messages} new message(s); {ok} of {len(self.deliveries)} delivered; "
                f"{self.carried} waiting for a later tick")


def _read_new_runs(instance: dg.DagsterInstance, specs: dict[str, ClusterDefinition], state: Cursor,
                   deadline: float) -> int:
    """Queue a message per finished run, definition and webhook; advance the cursor past what was read."""
    added = 0
    for event, event_type in EVENTS.items():
        if len(state.pending) >= MAX_PENDING or time.monotonic() > deadline:
            break
        after = state.after.get(event)
        records = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type, after_storage_id=after,
                                            after_timestamp=state.since if after is None else None),
            limit=FETCH_LIMIT, ascending=True).records
        for record in records:
            if len(state.pending) >= MAX_PENDING:
                break
            run = instance.get_run_by_id(record.run_id)
            for name in sorted(history.clusters_of_run(instance, run) & set(specs)) if run else ():
                for hook in specs[name].webhooks:
                    if event in hook.events:
                        state.pending.append(Pending(run.run_id, event, name, hook_key(name, hook)))
                        added += 1
            state.after[event] = record.storage_id
    return added


def run_tick(instance: dg.DagsterInstance, specs: dict[str, ClusterDefinition], cursor: str | None,
             budget_s: float = TICK_BUDGET_S, log=logger) -> Tick:
    """One sensor tick: read the runs that ended since the cursor, deliver what fits in ``budget_s``."""
    deadline = time.monotonic() + budget_s
    state = Cursor.parse(cursor)
    if state.since is None:
        state.since = time.time() - FIRST_TICK_LOOKBACK_S
    added = _read_new_runs(instance, specs, state, deadline)

    bodies: dict[tuple[str, str, str], bytes] = {}
    jobs: list[tuple[Pending, Webhook, bytes]] = []
    carried: list[Pending] = []
    for item in state.pending:
        spec = specs.get(item.cluster)
        hook = next((h for h in spec.webhooks if hook_key(spec.cluster_name, h) == item.hook), None) if spec else None
        if hook is None:
            log.info(f"webhooks: a webhook of {item.cluster} was removed; dropping its delivery of run {item.run_id}")
            continue
        if time.monotonic() > deadline - MIN_ATTEMPT_S:
            carried.append(item)
            continue
        key = (item.run_id, item.event, item.cluster)
        if key not in bodies:
            run = instance.get_run_by_id(item.run_id)
            if run is None:
                log.info(f"webhooks: run {item.run_id} was deleted; dropping its delivery")
                continue
            error = failure_message(instance, run.run_id) if item.event == "failure" else None
            bodies[key] = json.dumps(payload(instance, run, spec, item.event, error), sort_keys=True,
                                     default=str).encode()
        jobs.append((item, hook, bodies[key]))

    deliveries: list[Delivery] = []
    if jobs:
        # Endpoints are independent: a slow one does not hold up the others.
        pool = ThreadPoolExecutor(max_workers=min(WORKERS, len(jobs)))
        futures = [pool.submit(deliver, hook, body,
                               {EVENT_HEADER: item.event, DELIVERY_HEADER: f"{item.run_id}:{item.event}"}, log,
                               msg_id=message_id(item.run_id, item.event, item.cluster), deadline=deadline,
                               attempts_done=item.attempts, about=f"{item.cluster}, run {item.run_id}")
                   for item, hook, body in jobs]
        wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        pool.shutdown(wait=False, cancel_futures=True)
        for (item, _, _), future in zip(jobs, futures):
            if not future.done() or future.cancelled():
                carried.append(item)  # an attempt that outlived the budget counts as not made
                continue
            delivery = future.result()
            deliveries.append(delivery)
            if delivery.ok:
                log.info(f"webhook {delivery.endpoint} ({item.cluster}, run {item.run_id}): delivered "
                         f"({delivery.status}) after {delivery.attempts} attempt(s)")
            elif delivery.retry:
                item.attempts = delivery.attempts
                carried.append(item)
    state.pending = carried
    return Tick(state.dump(), deliveries, added, len(carried))


def build_webhook_sensors(specs: Sequence[ClusterDefinition],
                          tick_budget_s: float = TICK_BUDGET_S) -> list[dg.SensorDefinition]:
    with_hooks = {s.cluster_name: s for s in specs if s.webhooks}
    if not with_hooks:
        return []
    names = ", ".join(sorted(with_hooks))

    @dg.sensor(
        name=SENSOR_NAME,
        description=f"POSTs the summary of every finished run to the webhooks of: {names}.",
        minimum_interval_seconds=TICK_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def webhook_sensor(context: dg.SensorEvaluationContext):
        tick = run_tick(context.instance, with_hooks, context.cursor, budget_s=tick_budget_s, log=context.log)
        return dg.SensorResult(skip_reason=tick.summary, cursor=tick.cursor)

    return [webhook_sensor]
