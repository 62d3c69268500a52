"""``cluster-assets definitions validate|list|show``.

``show`` prints a list of sections; add one by appending a function to
``SHOW_SECTIONS`` (it receives a ``ShowContext`` and returns JSON-able data).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import yaml

from cluster_assets.cli.common import echo_table, fail, find_definition, open_storage, storage_option, warn
from cluster_assets.places import default_definitions_dir
from cluster_assets.spec import ClusterDefinition, DefinitionError, LoadedDefinition
from cluster_assets.stages import layout
from cluster_assets.storage import Storage



@click.group("definitions")
def definitions() -> None:
    """Validate, list and inspect cluster definitions."""


def _folder(path: Path | None) -> Path:
    return path if path is not None else default_definitions_dir()


def _loadable(folder: Path, storage: Storage | None = None) -> tuple[list[LoadedDefinition], list[DefinitionError]]:
    """The definitions the code location loads from ``folder``, and one error per file it leaves out
    (with ``storage``, enrichment targets are also checked against what is stored)."""
    from cluster_assets.loader import load_buildable

    built, problems = load_buildable(folder, storage)
    return [b.item for b in built], problems


@definitions.command("validate")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--check-storage/--no-check-storage", default=True, show_default=True,
              help="Warn (without failing) when a source collection is not in storage.")
@storage_option
def validate(path: Path | None, check_storage: bool, storage_root: str | None) -> None:
    """Check a definition file, or every file in a folder (default: the definitions folder).

    Prints one line per problem, `<file>: <field>: <message>`, and exits 1 if there is any.
    A file is valid when the code location loads it (its Dagster objects build and clash with no other's).
    """
    storage = open_storage(storage_root)
    loaded, problems = _loadable(_folder(path), storage if check_storage else None)
    for problem in problems:
        click.echo(str(problem))
    if check_storage and loaded:
        _warn_missing_collections(loaded, storage)
    noun = "definition" if len(loaded) == 1 else "definitions"
    summary = f"{len(loaded)} {noun} valid"
    if problems:
        files = len({p.path for p in problems})
        click.echo(f"{summary}; {len(problems)} problem{'s' if len(problems) != 1 else ''} "
                   f"in {files} file{'s' if files != 1 else ''}")
        click.get_current_context().exit(1)
    click.echo(summary)


def _warn_missing_collections(loaded, storage: Storage) -> None:
    for item in loaded:
        for cid in item.spec.source_collection_ids:
            try:
                exists = storage.collection_exists(cid)
            except OSError as exc:
                warn(f"cannot check storage {storage.root}: {exc}")
                return
            if not exists:
                warn(f"{item.path}: source_collection_ids: collection {cid!r} is not in storage "
                     f"{storage.uri('collections')} (import it with `cluster-assets collections import {cid} FILE`)")


@definitions.command("list")
@click.option("--dir", "folder", type=click.Path(path_type=Path), default=None,
              help="Definitions folder; default $CLUSTER_ASSETS_DEFINITIONS_DIR, else clusters/ in the checkout.")
@click.option("--name", "pattern", default=None, metavar="PATTERN",
              help="Only cluster names matching PATTERN (shell wildcards; without any, a case-insensitive substring).")
@click.option("--algorithm", default=None, help="Only definitions using this algorithm.")
@click.option("--source", default=None, metavar="COLLECTION_ID", help="Only definitions reading this collection.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def list_definitions(folder: Path | None, pattern: str | None, algorithm: str | None, source: str | None,
                     as_json: bool) -> None:
    """Every valid definition: cluster name, file, algorithm, sources and triggers (filtered like the
    reference's list with search and filters)."""
    loaded, problems = _loadable(_folder(folder))
    chosen = [d for d in loaded if _matches(d.spec, pattern, algorithm, source)]
    rows = [{"cluster_name": d.spec.cluster_name, "file": d.path.name, "algorithm": d.spec.algorithm,
             "sources": d.spec.source_collection_ids, "triggers": len(d.spec.triggers)} for d in chosen]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        echo_table(((r["cluster_name"], r["file"], r["algorithm"], ", ".join(r["sources"]), r["triggers"])
                    for r in rows), ["cluster_name", "file", "algorithm", "sources", "triggers"])
    elif loaded:
        click.echo(f"no definition in {_folder(folder)} matches")
    else:
        click.echo(f"no valid definitions in {_folder(folder)}")
    if problems:
        warn(f"{len(problems)} problem(s) in the definitions folder; see `cluster-assets definitions validate`")


def _matches(spec: ClusterDefinition, pattern: str | None, algorithm: str | None, source: str | None) -> bool:
    import fnmatch

    if pattern is not None:
        name = spec.cluster_name.lower()
        wildcard = any(c in pattern for c in "*?[")
        if not (fnmatch.fnmatchcase(name, pattern.lower()) if wildcard else pattern.lower() in name):
            return False
    if algorithm is not None and spec.algorithm != algorithm:
        return False
    return source is None or source in spec.source_collection_ids


@dataclass(frozen=True)
class ShowContext:
    spec: ClusterDefinition
    path: Path
    storage: Storage


def _definition(ctx: ShowContext) -> Any:
    """The definition as its file writes it (the reference's names, e.g. ``openai_chat_v1``)."""
    from cluster_assets.spec.loading import read_definition_file

    try:
        return read_definition_file(ctx.path)
    except Exception:  # noqa: BLE001 - the file changed since it was loaded: show what was loaded
        return _normalised(ctx)


def _normalised(ctx: ShowContext) -> Any:
    """The same definition as the code reads it: aliases resolved to their names (``openai``)."""
    return ctx.spec.model_dump(mode="json", exclude_unset=True)


def _asset_keys(ctx: ShowContext) -> Any:
    from cluster_assets.stages import STAGES

    return {
        "group": ctx.spec.group_name,
        "sources": [f"collections/{cid}" for cid in ctx.spec.source_collection_ids],
        "stages": [f"{ctx.spec.cluster_name}/{stage.name}" + (" (per file)" if stage.per_file else "")
                   for stage in STAGES],
    }


def _enrichment(ctx: ShowContext) -> Any:
    return {
        "fields": ctx.spec.enrichment.fields,
        "targets": [
            {"source": source, "target": target, "exists": ctx.storage.collection_exists(target),
             "owner": _owner(ctx.storage, target)}
            for source, target in ctx.spec.target_collection_ids().items()
        ],
    }


def _owner(storage: Storage, collection_id: str) -> str | None:
    """The definition that owns the collection (its owner manifest), or None."""
    from cluster_assets.ownership import OwnershipError, read_owner

    try:
        owner = read_owner(storage, collection_id)
    except (OwnershipError, OSError):
        return None
    return owner.cluster_name if owner else None


def _stage_outputs(ctx: ShowContext) -> Any:
    """The current fit (the latest whose labels are written): where its outputs are, how many files it covers."""
    current = layout.read_current(ctx.storage, ctx.spec)
    out: dict[str, Any] = {"current_fit": None}
    if current is not None:
        parts = layout.fit_parts(ctx.spec, current.fit_id, layout.LABELS)
        info = ctx.storage.fs.get_file_info(ctx.storage.path(*parts))
        out["current_fit"] = {
            "fit_id": current.fit_id,
            "sample_id": current.sample_id,
            "files": len(current.partitions),
            "uri": ctx.storage.uri(*layout.cluster_parts(ctx.spec, "fits", current.fit_id)),
            "labelled": _timestamp(info.mtime) if info.mtime is not None else None,
            "previous_fit_id": current.previous_fit_id,
        }
    out["enriched_collection"] = {
        "exists": all(ctx.storage.collection_exists(t) for t in set(ctx.spec.target_collection_ids().values())),
        "uri": ", ".join(ctx.storage.uri("collections", t) for t in sorted(set(ctx.spec.target_collection_ids().values()))),
    }
    return out


def _timestamp(mtime: datetime) -> str:
    return mtime.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


SHOW_SECTIONS: list[tuple[str, Callable[[ShowContext], Any]]] = [
    ("file", lambda ctx: str(ctx.path)),
    ("definition", _definition),
    ("normalised", _normalised),
    ("asset_keys", _asset_keys),
    ("enrichment", _enrichment),
    ("stage_outputs", _stage_outputs),
]


@definitions.command("show")
@click.argument("cluster")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of YAML.")
@click.option("--dir", "folder", type=click.Path(path_type=Path), default=None,
              help="Definitions folder; default $CLUSTER_ASSETS_DEFINITIONS_DIR, else clusters/ in the checkout.")
@storage_option
def show(cluster: str, as_json: bool, folder: Path | None, storage_root: str | None) -> None:
    """One definition: its fields, asset keys, enrichment targets and which stage outputs exist."""
    storage = open_storage(storage_root)
    loaded, problems = _loadable(_folder(folder), storage)
    match = find_definition(loaded, cluster)
    if match is None:
        known = ", ".join(d.spec.cluster_name for d in loaded) or "none"
        hint = f"; {len(problems)} file(s) have problems (see `cluster-assets definitions validate`)" if problems else ""
        fail(f"no valid definition named {cluster!r} in {_folder(folder)} (known: {known}){hint}")
    ctx = ShowContext(match.spec, match.path, storage)
    report = {name: section(ctx) for name, section in SHOW_SECTIONS}
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(yaml.safe_dump(report, sort_keys=False, allow_unicode=True).rstrip())
