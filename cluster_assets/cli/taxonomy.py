"""``cluster-assets taxonomy promote|list|show``: clusters of a run become lasting taxonomy nodes.

Promotion refuses clusters whose membership changed by more than ``--max-change``
between the chosen run and the run before it (``--force`` promotes them anyway),
writes ``<storage>/taxonomies/<name>/`` and, when ``DAGSTER_HOME`` is set, records
a materialization of the ``taxonomies/<name>`` asset so the UI shows its history.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cluster_assets import taxonomy as tx
from cluster_assets.cli.artifacts import list_runs
from cluster_assets.cli.common import echo_table, fail, find_definition, open_storage, storage_option, warn
from cluster_assets.cli.map import choose_run
from cluster_assets.places import default_definitions_dir
from cluster_assets.spec import check_safe_id, load_definitions
from cluster_assets.stages import layout


@click.group("taxonomy")
def taxonomy() -> None:
    """Promote clusters to a taxonomy; list and show taxonomies."""


def _cluster_ids(values: tuple[str, ...]) -> list[int] | None:
    ids: list[int] = []
    for value in values:
        for part in value.replace(" ", ",").split(","):
            if part:
                try:
                    ids.append(int(part))
                except ValueError:
                    raise click.BadParameter(f"{part!r} is not a cluster id", param_hint="--clusters") from None
    return ids or None


def _record_in_dagster(promotion: tx.Promotion) -> str:
    """A materialization of taxonomies/<name> in the Dagster instance, so its history shows in the UI."""
    import os

    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        return "not recorded in Dagster: DAGSTER_HOME is not set"
    instance = dg.DagsterInstance.get()
    metadata = {k: v for k, v in promotion.metadata().items()}
    metadata["dagster/uri"] = dg.MetadataValue.path(promotion.uri)
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=dg.AssetKey(["taxonomies", promotion.taxonomy]), metadata=metadata,
        description=f"promoted {len(promotion.promoted)} clusters of {promotion.cluster_name} run {promotion.run_id}"))
    return f"recorded as a materialization of taxonomies/{promotion.taxonomy}"


@taxonomy.command("promote")
@click.argument("cluster")
@click.option("--taxonomy", "name", required=True, help="Taxonomy name (created if new).")
@click.option("--run-id", default=None, help="A Dagster run id; default: the newest run with centroids.")
@click.option("--clusters", "clusters", multiple=True, metavar="IDS",
              help="Cluster ids to promote (repeat or comma-separate); default: all.")
@click.option("--min-size", type=click.IntRange(min=1), default=None, help="Leave out clusters with fewer documents.")
@click.option("--max-change", type=click.FloatRange(0, 1), default=tx.DEFAULT_MAX_CHANGE, show_default=True,
              help="Largest share of a cluster's membership that may have changed since the run before.")
@click.option("--force", is_flag=True, help="Promote clusters that fail the stability check anyway.")
@click.option("--definitions", "definitions_dir", type=click.Path(path_type=Path), default=None,
              help="Definitions folder (to record the feature addresses); default as for `definitions`.")
@storage_option
def promote(cluster: str, name: str, run_id: str | None, clusters: tuple[str, ...], min_size: int | None,
            max_change: float, force: bool, definitions_dir: Path | None, storage_root: str | None) -> None:
    """Turn the chosen clusters of a run into nodes of taxonomy NAME."""
    try:
        check_safe_id(cluster, "cluster name")
        check_safe_id(name, "taxonomy name")
    except ValueError as exc:
        fail(str(exc))
    storage = open_storage(storage_root)
    loaded, _ = load_definitions(definitions_dir or default_definitions_dir())
    found = find_definition(loaded, cluster)
    features = found.spec.feature_addresses if found else None
    cluster = found.spec.cluster_name if found else cluster  # it may have been named by its group name
    chosen = choose_run(storage, cluster, run_id, layout.CENTROIDS_ARTIFACT)
    with_members = [r.run_id for r in list_runs(storage, cluster) if layout.MEMBERS_ARTIFACT in r.files]
    previous = None
    if chosen in with_members and with_members.index(chosen) + 1 < len(with_members):
        previous = with_members[with_members.index(chosen) + 1]
    try:
        promotion = tx.promote(storage, cluster, chosen, name, clusters=_cluster_ids(clusters), min_size=min_size,
                               previous_run_id=previous, max_change=max_change, force=force,
                               feature_addresses=features)
    except tx.TaxonomyError as exc:
        fail(str(exc))
    for note in promotion.notes:
        warn(note)
    if promotion.forced:
        warn(f"--force: promoted unstable clusters {', '.join(map(str, promotion.forced))}")
    click.echo(f"promoted {len(promotion.promoted)} clusters of {cluster} run {chosen} "
               f"(+{promotion.parents} parent nodes) into taxonomy {name!r}: {promotion.nodes_total} nodes")
    click.echo(promotion.uri)
    click.echo(_record_in_dagster(promotion), err=True)


@taxonomy.command("list")
@storage_option
def list_command(storage_root: str | None) -> None:
    """Taxonomies in storage with their node counts and sources."""
    storage = open_storage(storage_root)
    rows = []
    for name in tx.list_taxonomies(storage):
        t = tx.load_taxonomy(storage, name)
        rows.append((name, t.nodes.num_rows, t.leaves.num_rows, ", ".join(t.sources()), t.manifest.get("updated_at", "")))
    if not rows:
        click.echo(f"no taxonomies under {storage.uri('taxonomies')}")
        return
    echo_table(rows, ["taxonomy", "nodes", "leaves", "from", "updated"])


@taxonomy.command("show")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@storage_option
def show(name: str, fmt: str, storage_root: str | None) -> None:
    """The nodes of taxonomy NAME (centroids left out)."""
    try:
        t = tx.load_taxonomy(open_storage(storage_root), name)
    except (tx.TaxonomyError, ValueError) as exc:
        fail(str(exc))
    nodes = t.nodes.drop(["centroid"])
    if fmt == "json":
        for row in nodes.to_pylist():
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    echo_table(((r["node_id"], r["parent_id"] or "", r["level"], r["label"], r["count"],
                 ", ".join(r["keywords"][:5])) for r in nodes.to_pylist()),
               ["node_id", "parent_id", "level", "label", "documents", "keywords"])
