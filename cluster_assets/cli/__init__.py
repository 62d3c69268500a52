"""The ``cluster-assets`` command: what Dagster does not know about (collections, definitions, artifacts).

Each subject is a click command or group in its own module, registered here.
"""

import click

from cluster_assets.cli.artifacts import artifacts
from cluster_assets.cli.collections import collections
from cluster_assets.cli.common import CommandGroup
from cluster_assets.cli.definitions import definitions
from cluster_assets.cli.enrich import enrich_command
from cluster_assets.cli.executions import executions
from cluster_assets.cli.map import map_command
from cluster_assets.cli.prune import prune_command
from cluster_assets.cli.run import run_command
from cluster_assets.cli.taxonomy import taxonomy
from cluster_assets.cli.upgrade import upgrade_command

COMMANDS = [
    run_command,
    collections,
    definitions,
    artifacts,
    executions,
    enrich_command,
    map_command,
    taxonomy,
    prune_command,
    upgrade_command,
]


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Collections, cluster definitions and run artifacts of cluster_assets."""


for _command in COMMANDS:
    main.add_command(_command)
