"""``cluster-assets executions CLUSTER``: a definition's runs, read from the Dagster instance.

Dagster keeps the run history (the UI's Runs page shows it too); this lists one
definition's runs newest first with status, start, duration, the trigger that
started them and the document and cluster counts their materializations recorded.
Runs count as the definition's when a trigger of it started them (tags) or when
they planned any of its assets (the UI's Materialize button, ``dagster asset
materialize``, the GraphQL client).

This module also adds ``triggers``, ``latest_run`` and ``enrichment_status``
sections to ``cluster-assets definitions show``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import click

from cluster_assets import history, triggers
from cluster_assets.cli.common import echo_table, fail, find_definition
from cluster_assets.cli.definitions import SHOW_SECTIONS, ShowContext
from cluster_assets.places import default_definitions_dir
from cluster_assets.spec import ClusterDefinition, CronTrigger, IntervalTrigger, load_definitions


class NoInstance(RuntimeError):
    pass


def open_instance():
    """The Dagster instance of ``$DAGSTER_HOME`` (the README's commands set it to the checkout)."""
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        raise NoInstance("DAGSTER_HOME is not set: run with DAGSTER_HOME=<the checkout> (as the README's "
                         "commands do) so the run history of `dagster dev` is found")
    return dg.DagsterInstance.get()


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _find(cluster: str, folder: Path | None) -> ClusterDefinition | None:
    found = find_definition(load_definitions(folder or default_definitions_dir())[0], cluster)
    return found.spec if found else None


@click.command("executions")
@click.argument("cluster")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Most runs listed.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--dir", "folder", type=click.Path(path_type=Path), default=None,
              help="Definitions folder; default $CLUSTER_ASSETS_DEFINITIONS_DIR, else clusters/ in the checkout.")
@click.option("--trigger", default=None, metavar="NAME",
              help="Only the runs this trigger started (its name in the definition, e.g. cron_0, or its Dagster "
                   "schedule/sensor name).")
@click.option("--mark-dead-failed", is_flag=True,
              help="Mark the listed DEAD runs (STARTED, but their process on this host is gone) as failed "
                   "in the Dagster instance.")
def executions(cluster: str, limit: int, as_json: bool, folder: Path | None, trigger: str | None,
               mark_dead_failed: bool) -> None:
    """A definition's runs from the Dagster instance, newest first.

    A definition whose file was deleted still lists its past runs by cluster name. A run shown
    DEAD was STARTED by a process of this host that is gone (killed or crashed): Dagster keeps
    it STARTED until it is marked failed (--mark-dead-failed) or run monitoring ends it.
    """
    spec = _find(cluster, folder)
    name = spec.cluster_name if spec else cluster
    try:
        instance = open_instance()
    except NoInstance as exc:
        fail(str(exc))
    runs = history.runs_of(instance, name, spec.group_name if spec else None, limit=limit, trigger=trigger)
    if mark_dead_failed:
        dead = [r for r in runs if r.dead_process]
        for r in dead:
            history.mark_failed(instance, instance.get_run_by_id(r.run_id), r.dead_process)
            click.echo(f"marked run {r.run_id} failed: its process ({r.dead_process}) is gone", err=True)
        if dead:
            runs = history.runs_of(instance, name, spec.group_name if spec else None, limit=limit, trigger=trigger)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in runs], indent=2))
        return
    if not runs:
        click.echo(f"no runs of {name!r} in the Dagster instance at {instance.root_directory}")
        return
    echo_table(
        ((r.run_id[:8], r.status, _when(r.started_at), _duration(r.duration_s), r.trigger,
          "-" if r.documents is None else r.documents, "-" if r.num_clusters is None else r.num_clusters)
         for r in runs),
        ["run", "status", "started", "duration", "trigger", "documents", "clusters"],
    )


# --- sections of `definitions show` ---------------------------------------------------------

def _triggers(ctx: ShowContext) -> Any:
    out = []
    for i, trigger in enumerate(ctx.spec.triggers):
        entry: dict[str, Any] = {"name": triggers.trigger_name(trigger, i), "type": trigger.type,
                                 "dagster_name": triggers.dagster_name(ctx.spec, trigger, i),
                                 "enabled": trigger.enabled}
        if isinstance(trigger, CronTrigger):
            entry.update(kind="schedule", cron=trigger.cron, timezone=trigger.timezone)
        elif isinstance(trigger, IntervalTrigger):
            cron = triggers.interval_cron(trigger.total_seconds)
            entry.update(kind="schedule" if cron else "sensor", every_seconds=trigger.total_seconds)
            if cron:
                entry["cron"] = cron
        else:
            entry.update(kind="sensor", min_new_documents=trigger.min_new_documents,
                         watches=ctx.spec.source_collection_ids)
        out.append(entry)
    return out


def _latest_run(ctx: ShowContext) -> Any:
    try:
        instance = open_instance()
    except NoInstance as exc:
        return {"unknown": str(exc)}
    runs = history.runs_of(instance, ctx.spec.cluster_name, ctx.spec.group_name, limit=1)
    if not runs:
        return None
    r = runs[0]
    return {"run_id": r.run_id, "status": r.status, "started": _when(r.started_at),
            "duration": _duration(r.duration_s), "trigger": r.trigger, "documents": r.documents,
            "clusters": r.num_clusters, "artifacts": r.artifacts or None}


def _enrichment_status(ctx: ShowContext) -> Any:
    """When the enriched collection was last written, from which run, and whether newer assignments exist."""
    try:
        instance = open_instance()
    except NoInstance as exc:
        return {"unknown": str(exc)}
    enriched = history.latest_materialization(instance, ctx.spec.cluster_name, "enriched_collection")
    assigned = history.latest_materialization(instance, ctx.spec.cluster_name, "assignments")
    if enriched is None:
        return {"status": "never enriched", "targets": sorted(set(ctx.spec.target_collection_ids().values()))}
    meta = {k: getattr(v, "value", v) for k, v in enriched.asset_materialization.metadata.items()}
    stale = assigned is not None and assigned.timestamp > enriched.timestamp
    return {
        "status": "behind the latest assignments" if stale else "up to date",
        "run_id": enriched.run_id,
        "written": _when(enriched.timestamp),
        "documents": meta.get("documents"),
        "targets": meta.get("target_collections"),
        "unassigned_documents": meta.get("unassigned_documents"),
    }


SHOW_SECTIONS.extend([
    ("triggers", _triggers),
    ("latest_run", _latest_run),
    ("enrichment_status", _enrichment_status),
])
