"""``cluster-assets run``: a full run of one definition (or every one) through Dagster, recorded in the instance."""

from __future__ import annotations

import click

from cluster_assets.cli.common import fail, failure_lines, find_definition


@click.command("run")
@click.argument("cluster", required=False)
@click.option("--all", "run_all", is_flag=True, help="Run every valid definition, one Dagster run each.")
def run_command(cluster: str | None, run_all: bool) -> None:
    """Run CLUSTER in full: every stage over every source file, as one Dagster run.

    Registers the source files as the definition's partitions (new files added, gone ones
    removed with their enriched files), then executes the run in this process against the
    instance of DAGSTER_HOME, so it shows in the UI's run history like any other run.
    """
    import dagster as dg

    from cluster_assets.loader import build_defs
    from cluster_assets.places import default_definitions_dir, default_storage_root
    from cluster_assets.runs import run_full
    from cluster_assets.spec import load_definitions
    from cluster_assets.storage import Storage

    if bool(cluster) == run_all:
        fail("name one definition, or give --all")
    loaded, problems = load_definitions(default_definitions_dir())
    specs = [d.spec for d in loaded]
    if not run_all:
        found = find_definition(loaded, cluster)
        specs = [found.spec] if found else []
    if not specs:
        known = ", ".join(d.spec.cluster_name for d in loaded) or "none"
        problem = next((str(p) for p in problems if cluster and cluster in str(p)), None)
        fail(problem or f"no valid definition named {cluster!r} (valid: {known})")
    defs = build_defs()
    instance = dg.DagsterInstance.get()
    storage = Storage(default_storage_root())
    failed = []
    for spec in specs:
        result = run_full(defs, spec, instance, storage)
        status = "SUCCESS" if result.success else "FAILURE"
        click.echo(f"{spec.cluster_name}: run {result.run_id} {status}")
        if not result.success:
            failed.append(spec.cluster_name)
            for line in failure_lines(result.all_events):
                click.echo(f"  {line}", err=True)
    if failed:
        raise SystemExit(1)

