"""What the Dagster instance knows about a definition's runs: which runs, what they did.

Dagster keeps the history; this module only reads it (runs, their tags, the
materializations they recorded) and summarises it per definition for the
``executions`` command, ``definitions show`` and the webhooks.

A killed run stays STARTED in Dagster forever (run monitoring ends it only with
a daemon and ``max_runtime_seconds``). Dagster records the run's process id
(its RUN_START event) but not the host, so every run records its host as the
tag ``cluster_assets/host``; a STARTED run whose process is gone from this
host is reported as dead, and ``mark_failed`` ends it in the instance.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from cluster_assets.processes import process_alive, this_host
from cluster_assets.triggers import TAG_CLUSTER, TAG_DEFINITION, TAG_TRIGGER

SCAN_LIMIT = 2_000  # most recent runs looked at when listing one definition's runs
TAG_HOST = "cluster_assets/host"
DEAD = "DEAD"  # the status shown for a STARTED run whose process is gone
# Dagster's in-progress statuses (its private IN_PROGRESS_RUN_STATUSES): started and not ended
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
               dg.DagsterRunStatus.SUSPENDED]


def record_run_host(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Tag a run with the host it runs on, once (its steps may each call this)."""
    if run.tags.get(TAG_HOST) != this_host():
        instance.add_run_tags(run.run_id, {TAG_HOST: this_host()})


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process that started the run (the pid of its RUN_START event)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event is not None else None


def dead_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """For a STARTED run of this host whose process is gone: ``"pid N on HOST"``; else None.
    Runs of other hosts, or that recorded no host, are never called dead from here."""
    if run.status != dg.DagsterRunStatus.STARTED or run.tags.get(TAG_HOST) != this_host():
        return None
    pid = run_pid(instance, run.run_id)
    if pid is None or process_alive(pid):
        return None
    return f"pid {pid} on {this_host()}"


def runs_in_progress(instance: dg.DagsterInstance) -> set[str]:
    """The ids of the runs that started and have not ended (Dagster's in-progress statuses), DEAD runs left out:
    their process is gone, they write nothing more. Queued runs are not in progress: they have written nothing."""
    runs = instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS))
    return {run.run_id for run in runs if dead_process(instance, run) is None}


def mark_failed(instance: dg.DagsterInstance, run: dg.DagsterRun, process: str) -> None:
    instance.report_run_failed(run, message=f"the run's process ({process}) is gone: it was killed or crashed; "
                                            "marked failed by `cluster-assets executions --mark-dead-failed`")


def planned_keys(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[dg.AssetKey]:
    """The assets a run set out to materialize: its selection, else its planned materializations."""
    if run.asset_selection:
        return set(run.asset_selection)
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    return {r.event_log_entry.dagster_event.asset_key for r in records if r.event_log_entry.dagster_event}


def clusters_of_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[str]:
    """Cluster names (first part of the asset keys ``<cluster>/<stage>``) a run touched."""
    if run.tags.get(TAG_DEFINITION):
        return {run.tags[TAG_DEFINITION]}
    return {key.path[0] for key in planned_keys(instance, run) if len(key.path) == 2 and key.path[0] != "collections"}


def trigger_of(run: dg.DagsterRun) -> str:
    tags = run.tags
    if tags.get(TAG_TRIGGER):
        return tags[TAG_TRIGGER]
    if tags.get("dagster/schedule_name"):
        return f"schedule {tags['dagster/schedule_name']}"
    if tags.get("dagster/sensor_name"):
        return f"sensor {tags['dagster/sensor_name']}"
    if tags.get("dagster/backfill"):
        return "backfill"
    return "manual"


def started_by(run: dg.DagsterRun) -> set[str]:
    """Every name a run's trigger goes by: its name in the definition and its schedule or sensor name."""
    names = {trigger_of(run)}
    for tag in (TAG_TRIGGER, "dagster/schedule_name", "dagster/sensor_name"):
        if run.tags.get(tag):
            names.add(run.tags[tag])
    return names


@dataclass
class RunSummary:
    run_id: str
    cluster_name: str
    status: str
    trigger: str
    started_at: float | None
    ended_at: float | None
    documents: int | None = None
    num_clusters: int | None = None
    noise_documents: int | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    enriched_collections: dict[str, str] = field(default_factory=dict)
    materialized: list[str] = field(default_factory=list)
    dead_process: str | None = None  # "pid N on HOST" of a STARTED run whose process is gone
    # a run over several definitions: the time of this definition's own steps (else the whole run's)
    steps_s: float | None = None

    @property
    def run_duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else dt.datetime.now().timestamp()
        return round(end - self.started_at, 3)

    @property
    def duration_s(self) -> float | None:
        return self.steps_s if self.steps_s is not None else self.run_duration_s

    def as_dict(self) -> dict[str, Any]:
        def iso(t: float | None) -> str | None:
            return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat() if t is not None else None

        return {
            "cluster_name": self.cluster_name,
            "run_id": self.run_id,
            "status": self.status,
            "trigger": self.trigger,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_s": self.duration_s,
            "run_duration_s": self.run_duration_s,
            "counts": {"documents": self.documents, "num_clusters": self.num_clusters,
                       "noise_documents": self.noise_documents},
            "artifacts": self.artifacts,
            "enriched_collections": self.enriched_collections,
            "materialized": self.materialized,
            "dead_process": self.dead_process,
        }


def _value(entry) -> Any:
    return getattr(entry, "value", entry)


def summarize(instance: dg.DagsterInstance, record, cluster_name: str) -> RunSummary:
    """One run of one definition: status, timing, trigger, counts and artifact paths from its materializations."""
    run: dg.DagsterRun = record.dagster_run
    summary = RunSummary(run_id=run.run_id, cluster_name=cluster_name, status=run.status.value,
                         trigger=trigger_of(run), started_at=record.start_time, ended_at=record.end_time)
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for r in records:
        materialization = r.event_log_entry.asset_materialization
        if materialization is None or materialization.asset_key.path[0] != cluster_name:
            continue
        stage = materialization.asset_key.path[-1]
        if stage not in summary.materialized:  # a per-file stage records one materialization per file
            summary.materialized.append(stage)
        meta = {k: _value(v) for k, v in materialization.metadata.items()}
        if stage == "assignments":
            summary.documents = meta.get("documents")
            summary.num_clusters = meta.get("num_clusters")
            summary.noise_documents = meta.get("noise_documents")
        elif stage == "reduced_coords" and meta.get("members_artifact"):
            summary.artifacts["members"] = str(meta["members_artifact"])
        elif stage == "labels" and meta.get("centroids_artifact"):
            summary.artifacts["centroids"] = str(meta["centroids_artifact"])
        elif stage == "enriched_collection" and isinstance(meta.get("target_collections"), dict):
            summary.enriched_collections = dict(meta["target_collections"])
    if len(clusters_of_run(instance, run)) > 1:
        summary.steps_s = steps_seconds(instance, run.run_id, group_of(cluster_name))
    summary.dead_process = dead_process(instance, run)
    if summary.dead_process:
        # Dead since its last event at the latest: the duration stops growing.
        last = instance.get_records_for_run(run.run_id, limit=1, ascending=False).records
        summary.status = DEAD
        summary.ended_at = last[0].event_log_entry.timestamp if last else summary.started_at
    return summary


def group_of(cluster_name: str) -> str:
    """The op-name prefix of a definition's steps (its group name: ``<group>__<stage>``)."""
    import re

    return re.sub(r"[^A-Za-z0-9_]", "_", cluster_name)


def steps_seconds(instance: dg.DagsterInstance, run_id: str, group: str) -> float | None:
    """The summed time of the run's steps of one definition (steps still going count up to now)."""
    now = dt.datetime.now().timestamp()
    spans = [(s.start_time, s.end_time or now) for s in instance.get_run_step_stats(run_id)
             if s.step_key.startswith(f"{group}__") and s.start_time is not None]
    return round(sum(end - start for start, end in spans), 3) if spans else None


def run_record(instance: dg.DagsterInstance, run_id: str):
    records = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]), limit=1)
    return records[0] if records else None


def runs_of(instance: dg.DagsterInstance, cluster_name: str, group_name: str | None = None,
            limit: int = 50, scan: int = SCAN_LIMIT, trigger: str | None = None) -> list[RunSummary]:
    """A definition's runs, newest first: runs its triggers started (tags) and runs that planned its assets;
    ``trigger``: only the runs that trigger started (its name in the definition, or its Dagster name)."""
    found: list[RunSummary] = []
    for record in instance.get_run_records(limit=scan, order_by="create_timestamp", ascending=False):
        run = record.dagster_run
        if trigger is not None and trigger not in started_by(run):  # tags only: before any query
            continue
        tagged = run.tags.get(TAG_DEFINITION) == cluster_name or (
            group_name is not None and run.tags.get(TAG_CLUSTER) == group_name)
        if not tagged and cluster_name not in clusters_of_run(instance, run):
            continue
        found.append(summarize(instance, record, cluster_name))
        if len(found) >= limit:
            break
    return found


def latest_materialization(instance: dg.DagsterInstance, cluster_name: str, stage: str):
    """The newest materialization event of ``<cluster>/<stage>``, or None."""
    result = instance.fetch_materializations(dg.AssetKey([cluster_name, stage]), limit=1)
    return result.records[0] if result.records else None
