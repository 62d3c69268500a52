"""``cluster-assets upgrade [--dry-run]``: move the previous release's flat outputs aside (upgrade.py)."""

from __future__ import annotations

import click

from cluster_assets import upgrade
from cluster_assets.cli.common import echo_table, open_storage, storage_option
from cluster_assets.places import default_definitions_dir
from cluster_assets.spec import load_definitions


@click.command("upgrade")
@click.option("--dry-run", is_flag=True, help="List what would be moved; change nothing.")
@storage_option
def upgrade_command(dry_run: bool, storage_root: str | None) -> None:
    """Bring a storage root written by the previous release up to date.

    Its flat outputs under assets/<cluster>/ (sample.parquet, model.pkl, assignments.parquet, ...) are
    moved into assets/<cluster>/legacy/ (delete it once the next full run succeeded); nothing is deleted.
    The next `cluster-assets run CLUSTER` fits again: a model pickled by older code is never loaded.
    Enriched collections without an owner manifest are listed: the definition whose last materialization
    wrote one adopts it at its next full run. Safe to run twice.
    """
    storage = open_storage(storage_root)
    moves = upgrade.plan_moves(storage)
    if not dry_run:
        upgrade.apply(storage, moves)
    verb = "would move" if dry_run else "moved"
    if moves:
        echo_table([(m.cluster_name, verb, storage.uri(*m.source), storage.uri(*m.target)) for m in moves],
                   ["definition", "action", "from", "to"])
    loaded, _ = load_definitions(default_definitions_dir())
    for cluster_name, target in upgrade.unowned_targets(storage, [d.spec for d in loaded]):
        click.echo(f"{cluster_name}: enriched collection {target!r} has no owner manifest; the next full run "
                   f"adopts it if {cluster_name}'s last enrichment wrote it")
    click.echo(f"{len(moves)} files to move (dry run)" if dry_run else f"{len(moves)} files moved; "
               "run `cluster-assets run --all` to fit every definition again")
