"""What every subcommand shares: the storage root option, failing with a message, tables, sizes."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click
from tabulate import tabulate

from cluster_assets.places import STORAGE_ENV, default_storage_root
from cluster_assets.storage import Storage

if TYPE_CHECKING:
    from cluster_assets.spec import LoadedDefinition

storage_option = click.option(
    "--storage", "storage_root", metavar="ROOT", default=None,
    help=f"Storage root (a folder or s3://bucket/prefix); default ${STORAGE_ENV}, else .cluster_assets/ in the checkout.",
)


def open_storage(root: str | None) -> Storage:
    return Storage(root or default_storage_root())


def find_definition(loaded: Iterable[LoadedDefinition], name: str) -> LoadedDefinition | None:
    """The definition ``name`` names: by its cluster_name, or by its Dagster group name (what the UI shows;
    loading refuses two definitions with one group name)."""
    return next((d for d in loaded if name in (d.spec.cluster_name, d.spec.group_name)), None)


def fail(message: str) -> NoReturn:
    """Stop with exit status 1 and ``Error: <message>`` on stderr."""
    raise click.ClickException(message)


class CommandGroup(click.Group):
    """The top-level group: a ``ValueError`` from any subcommand (a bad id, definition or file; our errors
    all subclass it) ends as ``Error: <message>`` and exit status 1, never as a traceback. Its commands
    (``lazy_commands``: name -> "module:attribute") are imported when asked for (click's lazy-group recipe)."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy_commands, *(n for n in super().list_commands(ctx) if n not in self.lazy_commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            module, _, attribute = self.lazy_commands[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def echo_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    click.echo(tabulate(list(rows), headers=list(headers), tablefmt="simple", disable_numparse=True))


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def failure_lines(events) -> list[str]:
    """Why a run failed: each failed step's error, or, when no step failed (resources that could not start,
    such as an unreachable Ray cluster), the errors of the run's own failure events."""
    steps = [f"{e.step_key}: {e.step_failure_data.error.message.strip()}"
             for e in events if e.is_step_failure and e.step_failure_data.error]
    if steps:
        return steps
    errors = [e.event_specific_data.error.message.strip() for e in events
              if (e.is_failure or e.is_resource_init_failure) and getattr(e.event_specific_data, "error", None)]
    return list(dict.fromkeys(errors)) or ["the run failed without an error message: see its logs in the UI"]
