"""The ``cluster-assets`` command: what Dagster does not know about (collections, definitions, artifacts).

Each subject is a click command or group in its own module, imported when it is run: the commands that
only read storage (``collections``, ``artifacts``) start without importing Dagster.
"""

import click

from cluster_assets.cli.common import CommandGroup

# name -> "module:attribute", in the order ``--help`` lists them
COMMANDS = {
    "run": "cluster_assets.cli.run:run_command",
    "collections": "cluster_assets.cli.collections:collections",
    "definitions": "cluster_assets.cli.definitions:definitions",
    "artifacts": "cluster_assets.cli.artifacts:artifacts",
    "executions": "cluster_assets.cli.executions:executions",
    "enrich": "cluster_assets.cli.enrich:enrich_command",
    "map": "cluster_assets.cli.map:map_command",
    "taxonomy": "cluster_assets.cli.taxonomy:taxonomy",
    "prune": "cluster_assets.cli.prune:prune_command",
    "upgrade": "cluster_assets.cli.upgrade:upgrade_command",
}


@click.group(cls=CommandGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Collections, cluster definitions and run artifacts of cluster_assets."""
