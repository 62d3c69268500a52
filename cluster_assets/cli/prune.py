"""``cluster-assets prune [CLUSTER] [--dry-run]``: delete old samples, fits and run artifacts (retention.py).

The runs in progress come from the Dagster instance of ``$DAGSTER_HOME``: without it nothing is pruned.
"""

from __future__ import annotations

import datetime as dt

import click

from cluster_assets import retention
from cluster_assets.cli.common import echo_table, fail, find_definition, open_storage, storage_option
from cluster_assets.places import default_definitions_dir
from cluster_assets.spec import load_definitions


def _day(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if timestamp else "-"


@click.command("prune")
@click.argument("cluster", required=False)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--show-kept", is_flag=True, help="Also list what is kept, and why.")
@storage_option
def prune_command(cluster: str | None, dry_run: bool, show_kept: bool, storage_root: str | None) -> None:
    """Delete the samples, fits and run artifacts of CLUSTER (default: every valid definition) that its
    `retention` ({keep_fits: 3, keep_days: 30} unless the definition says otherwise) no longer keeps.

    Never deleted: the current fit and the one before it, their samples, the newest keep_fits fits, anything
    younger than keep_days, what a promoted taxonomy came from, and the outputs of runs still in progress
    in the Dagster instance of DAGSTER_HOME (a run `executions` shows DEAD is not). Source and enriched
    collections are never touched.
    """
    from cluster_assets.cli.executions import NoInstance, open_instance
    from cluster_assets.history import runs_in_progress

    loaded, _ = load_definitions(default_definitions_dir())
    specs = [d.spec for d in loaded]
    if cluster:
        found = find_definition(loaded, cluster)
        if found is None:
            fail(f"no valid definition named {cluster!r} (valid: {', '.join(s.cluster_name for s in specs) or 'none'})")
        specs = [found.spec]
    try:
        with open_instance() as instance:
            in_progress = runs_in_progress(instance)
    except NoInstance as exc:
        fail(f"{exc}; prune needs it to see the runs in progress")
    storage = open_storage(storage_root)
    verb = "would delete" if dry_run else "deleted"
    promoted = retention.promoted_runs(storage)
    rows = []
    for spec in specs:
        plan = retention.plan(storage, spec, in_progress, promoted.get(spec.cluster_name, {}))
        if not dry_run:
            retention.prune(storage, plan.doomed)
        rows += [(spec.cluster_name, verb, e.kind, e.id, _day(e.written), storage.uri(*e.parts)) for e in plan.doomed]
        if show_kept:
            rows += [(spec.cluster_name, "kept", e.kind, e.id, _day(e.written), e.why_kept) for e in plan.kept]
    if rows:
        echo_table(rows, ["definition", "action", "kind", "id", "written (UTC)", "where / why"])
    count = sum(1 for r in rows if r[1] == verb)
    click.echo(f"{count} folders to delete (dry run)" if dry_run else f"{count} folders deleted")
