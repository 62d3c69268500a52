"""``cluster-assets enrich``: the reference's enrich request, as one Dagster run of ``enriched_collection``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cluster_assets.cli.common import fail, failure_lines, find_definition


@click.command("enrich")
@click.argument("cluster")
@click.option("--run-id", default=None, help="Enrich from this run's fit (an id `cluster-assets executions CLUSTER "
                                            "--json` lists); default: the current fit.")
@click.option("--target", "target", default=None, help="The target collection id; default the definition's.")
@click.option("--fields", default=None, help="Comma-separated fields, e.g. cluster_id,label,summary,keywords; "
                                             "default the definition's.")
@click.option("--body", "body", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
              default=None, help="The reference's enrich request body (JSON: run_id, target_collection_id, "
                                 "fields); the options above override it.")
def enrich_command(cluster: str, run_id: str | None, target: str | None, fields: str | None,
                   body: Path | None) -> None:
    """Write CLUSTER's enriched collection from a chosen run into a chosen target, as one Dagster run.

    The run shows in the history (UI, `cluster-assets executions`); the target obeys ownership
    (only a collection that does not exist yet or that this definition owns). A run that does
    not exist, or whose fit outputs are gone, is refused before anything is written.
    """
    import dagster as dg

    from cluster_assets import enrich_runs
    from cluster_assets.loader import build_defs
    from cluster_assets.places import default_definitions_dir, default_storage_root
    from cluster_assets.runs import run_full
    from cluster_assets.spec import load_definitions
    from cluster_assets.storage import Storage

    request = {}
    if body is not None:
        text = click.get_text_stream("stdin").read() if str(body) == "-" else body.read_text()
        try:
            request = json.loads(text)
            unknown = sorted(set(request) - set(enrich_runs.EnrichConfig.model_fields))
            if unknown:
                raise ValueError(f"unknown field {unknown[0]!r}")
            enrich_runs.EnrichConfig(**request)
        except (ValueError, TypeError) as exc:
            fail(f"{body}: not an enrich request body (run_id, target_collection_id, fields): {exc}")
    overrides = {"run_id": run_id, "target_collection_id": target, "fields": enrich_runs.parse_fields(fields)}
    config = enrich_runs.EnrichConfig(**{**request, **{k: v for k, v in overrides.items() if v is not None}})
    loaded, problems = load_definitions(default_definitions_dir())
    found = find_definition(loaded, cluster)
    if found is None:
        problem = next((str(p) for p in problems if cluster in str(p)), None)
        fail(problem or f"no valid definition named {cluster!r}")
    spec = found.spec
    storage = Storage(default_storage_root())
    instance = dg.DagsterInstance.get()
    # refused here, before a run starts, so a bad request writes nothing and leaves no failed run behind
    enrich_runs.requested_spec(spec, config)
    if config.run_id is not None:
        fit_id = enrich_runs.fit_of_run(instance, spec, config.run_id)
        enrich_runs.check_fit_outputs(storage, spec, fit_id, config.run_id)
    defs = build_defs()
    result = run_full(defs, spec, instance, storage, stages=[enrich_runs.STAGE],
                      run_config=enrich_runs.run_config(spec, defs, config))
    click.echo(f"{spec.cluster_name}: enrich run {result.run_id} {'SUCCESS' if result.success else 'FAILURE'}")
    if not result.success:
        for line in failure_lines(result.all_events):
            click.echo(f"  {line}", err=True)
        raise SystemExit(1)
