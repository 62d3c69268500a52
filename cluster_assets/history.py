"""What the Dagster instance knows about a definition's runs: which runs, what they did.

Dagster keeps the history; this module only reads it (runs, their tags, the
materializations they recorded) and summarises it per definition for the
``executions`` command, ``definitions show`` and the webhooks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType

from cluster_assets.triggers import TAG_CLUSTER, TAG_DEFINITION, TAG_TRIGGER

SCAN_LIMIT = 2_000  # most recent runs looked at when listing one definition's runs


def planned_keys(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[dg.AssetKey]:
    """The assets a run set out to materialize: its selection, else its planned materializations."""
    if run.asset_selection:
        return set(run.asset_selection)
    records = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
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

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else dt.datetime.now().timestamp()
        return round(end - self.started_at, 3)

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
            "counts": {"documents": self.documents, "num_clusters": self.num_clusters,
                       "noise_documents": self.noise_documents},
            "artifacts": self.artifacts,
            "enriched_collections": self.enriched_collections,
            "materialized": self.materialized,
        }


def _value(entry) -> Any:
    return getattr(entry, "value", entry)


def summarize(instance: dg.DagsterInstance, record, cluster_name: str) -> RunSummary:
    """One run of one definition: status, timing, trigger, counts and artifact paths from its materializations."""
    run: dg.DagsterRun = record.dagster_run
    summary = RunSummary(run_id=run.run_id, cluster_name=cluster_name, status=run.status.value,
                         trigger=trigger_of(run), started_at=record.start_time, ended_at=record.end_time)
    records = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    for r in records:
        materialization = r.event_log_entry.asset_materialization
        if materialization is None or materialization.asset_key.path[0] != cluster_name:
            continue
        stage = materialization.asset_key.path[-1]
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
    return summary


def run_record(instance: dg.DagsterInstance, run_id: str):
    records = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]), limit=1)
    return records[0] if records else None


def runs_of(instance: dg.DagsterInstance, cluster_name: str, group_name: str | None = None,
            limit: int = 50, scan: int = SCAN_LIMIT) -> list[RunSummary]:
    """A definition's runs, newest first: runs its triggers started (tags) and runs that planned its assets."""
    found: list[RunSummary] = []
    for record in instance.get_run_records(limit=scan, order_by="create_timestamp", ascending=False):
        run = record.dagster_run
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
