"""``cluster-assets map CLUSTER``: write a run's interactive HTML map and print where it is.

The page is self-contained (no server, no network): open it in any browser.
It is written beside the run's artifacts (``artifacts/<cluster>/<run_id>/map.html``)
and, when the storage is not a local folder or ``--output`` is given, to a local file too.
"""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from cluster_assets import map_html
from cluster_assets.cli.artifacts import list_runs
from cluster_assets.cli.common import fail, find_definition, open_storage, storage_option
from cluster_assets.places import default_definitions_dir
from cluster_assets.spec import ClusterDefinition, check_safe_id, load_definitions
from cluster_assets.stages import layout
from cluster_assets.stages.map import write_run_map
from cluster_assets.storage import Storage


def load_definition(cluster: str, folder: Path | None) -> ClusterDefinition:
    folder = folder or default_definitions_dir()
    loaded, _ = load_definitions(folder)
    found = find_definition(loaded, cluster)
    if found is None:
        names = ", ".join(sorted(i.spec.cluster_name for i in loaded)) or "none"
        fail(f"no valid definition named {cluster!r} in {folder} (definitions: {names})")
    return found.spec


def choose_run(storage: Storage, cluster: str, run_id: str | None, needs: str = layout.MEMBERS_ARTIFACT) -> str:
    """``run_id`` if it has ``needs``, else the newest run that has it."""
    runs = list_runs(storage, cluster)
    having = [r.run_id for r in runs if needs in r.files]
    if run_id is not None:
        check_safe_id(run_id, "run id")
        if run_id not in having:
            fail(f"run {run_id!r} of {cluster!r} has no {needs}; runs with one: {', '.join(having) or 'none'}")
        return run_id
    if not having:
        fail(f"no run of {cluster!r} has {needs} under {storage.uri('artifacts', cluster)}: "
             f"materialize {cluster}/reduced_coords first")
    return having[0]


@click.command("map")
@click.argument("cluster")
@click.option("--run-id", default=None, help="A Dagster run id; default: the newest run with members.")
@click.option("--open", "open_browser", is_flag=True, help="Open the map in the default browser.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the page to this local file.")
@click.option("--max-points", type=click.IntRange(min=1), default=map_html.MAX_POINTS, show_default=True,
              help="Documents drawn (a seeded random sample beyond this).")
@click.option("--definitions", "definitions_dir", type=click.Path(path_type=Path), default=None,
              help="Definitions folder; default $CLUSTER_ASSETS_DEFINITIONS_DIR, else clusters/ in the checkout.")
@storage_option
def map_command(cluster: str, run_id: str | None, open_browser: bool, output: Path | None, max_points: int,
                definitions_dir: Path | None, storage_root: str | None) -> None:
    """Write the interactive map of a run (pan, zoom, hover, search) and print its path."""
    try:
        check_safe_id(cluster, "cluster name")
    except ValueError as exc:
        fail(str(exc))
    spec = load_definition(cluster, definitions_dir)
    cluster = spec.cluster_name  # it may have been named by its group name
    storage = open_storage(storage_root)
    chosen = choose_run(storage, cluster, run_id)
    uri = write_run_map(storage, spec, chosen, max_points)
    local = Path(uri) if not storage.scheme else None
    if output is not None or local is None:
        output = output or Path.cwd() / f"{cluster}-{chosen[:8]}-map.html"
        output.write_bytes(storage.read_bytes(*layout.artifact_parts(spec, chosen, layout.MAP_HTML_ARTIFACT)))
        local = output
    if local != Path(uri):
        click.echo(f"artifact: {uri}", err=True)
    click.echo(str(local))
    if open_browser:
        webbrowser.open(local.resolve().as_uri())
