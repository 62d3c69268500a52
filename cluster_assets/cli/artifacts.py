"""``cluster-assets artifacts CLUSTER``: the per-run centroids and members Parquet files.

They live under ``<storage>/artifacts/<cluster>/<run_id>/`` (``<run_id>`` is the
Dagster run id). Without ``--run-id`` the runs are listed, newest first, and the
newest run holding the requested kind is shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets.cli.common import echo_table, fail, format_size, open_storage, storage_option
from cluster_assets.spec import check_safe_id
from cluster_assets.stages import layout
from cluster_assets.storage import Storage

KINDS = {"centroids": layout.CENTROIDS_ARTIFACT, "members": layout.MEMBERS_ARTIFACT}
TABLE_ROWS = 20
TEXT_WIDTH = 48
VECTOR_HEAD = 3


@dataclass(frozen=True)
class RunArtifacts:
    run_id: str
    files: dict[str, int]  # file name -> size in bytes
    modified: datetime


def list_runs(storage: Storage, cluster: str) -> list[RunArtifacts]:
    """Runs that left artifacts for ``cluster``, newest first."""
    found = []
    for run in storage.child_folders("artifacts", cluster):
        shown = {name: info for name, info in sorted(run.files.items())
                 if "/" not in name and not name.startswith(("_", "."))}
        if shown:  # dated by the artifacts shown, not by a staging file still being written beside them
            newest = max((info.mtime_ns or 0 for info in shown.values()), default=0) / 1e9
            found.append(RunArtifacts(run.name, {n: i.size for n, i in shown.items()},
                                      datetime.fromtimestamp(newest, timezone.utc)))
    return sorted(found, key=lambda r: (r.modified, r.run_id), reverse=True)


@click.command("artifacts")
@click.argument("cluster")
@click.option("--run-id", default=None, help="A Dagster run id; default: the newest run with this kind of artifact.")
@click.option("--kind", type=click.Choice(list(KINDS)), default="centroids", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "parquet"]), default="table", show_default=True,
              help="table: vectors elided; json: one row per line with full vectors; parquet: copy to --output.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where --format parquet writes the artifact.")
@click.option("--limit", type=int, default=None,
              help=f"Rows to print (default {TABLE_ROWS} for table, all for json; 0 = all).")
@storage_option
def artifacts(cluster: str, run_id: str | None, kind: str, fmt: str, output: Path | None, limit: int | None,
              storage_root: str | None) -> None:
    """List a cluster's runs with artifacts and show one run's centroids or members."""
    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet needs --output FILE")
    try:
        check_safe_id(cluster, "cluster name")
        if run_id is not None:
            check_safe_id(run_id, "run id")
    except ValueError as exc:
        fail(str(exc))
    storage = open_storage(storage_root)
    runs = list_runs(storage, cluster)
    if not runs:
        fail(f"no artifacts for cluster {cluster!r} under {storage.uri('artifacts', cluster)}: "
             f"materialize its assets first (group {cluster!r})")
    name = KINDS[kind]
    if run_id is None:
        if fmt == "table":
            click.echo(f"runs with artifacts for {cluster!r} (newest first):")
            echo_table(((r.run_id, ", ".join(f"{n} ({format_size(s)})" for n, s in r.files.items()),
                         r.modified.strftime("%Y-%m-%d %H:%M:%S UTC")) for r in runs),
                       ["run_id", "files", "modified"])
        chosen = next((r for r in runs if name in r.files), None)
        if chosen is None:
            fail(f"no run of {cluster!r} has {name}")
        click.echo(f"\n{kind} of the newest run {chosen.run_id}:" if fmt == "table"
                   else f"{kind} of run {chosen.run_id}", err=fmt != "table")
    else:
        chosen = next((r for r in runs if r.run_id == run_id), None)
        if chosen is None:
            fail(f"no artifacts for run {run_id!r} of {cluster!r}; runs: {', '.join(r.run_id for r in runs)}")
        if name not in chosen.files:
            fail(f"run {run_id!r} of {cluster!r} has no {name} (it has: {', '.join(chosen.files)})")
    parts = ("artifacts", cluster, chosen.run_id, name)
    if fmt == "parquet":
        output.write_bytes(storage.read_bytes(*parts))
        click.echo(f"wrote {output} ({kind} of run {chosen.run_id}, {format_size(chosen.files[name])})")
        return
    table = storage.read_table(*parts)
    limit = (TABLE_ROWS if fmt == "table" else 0) if limit is None else limit
    shown = table.slice(0, limit) if limit > 0 else table
    if fmt == "json":
        for row in json_rows(shown):
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    echo_table(([display(v) for v in row.values()] for row in shown.to_pylist()), shown.column_names)
    if shown.num_rows < table.num_rows:
        click.echo(f"... {table.num_rows - shown.num_rows} more rows of {table.num_rows} "
                   "(--limit 0 for all, --format json for full vectors)")


def display(value: Any) -> str:
    """One cell of the table format: vectors elided to their first values and length, text shortened."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        if value and all(isinstance(v, (int, float)) for v in value):
            head = ", ".join(f"{v:.3g}" for v in value[:VECTOR_HEAD])
            return f"[{head}{', ...' if len(value) > VECTOR_HEAD else ''}] ({len(value)})"
        return _shorten(", ".join(str(v) for v in value))
    if value is None:
        return ""
    return _shorten(str(value))


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 1] + "…"


def json_rows(table: pa.Table) -> list[dict]:
    """Rows as dicts, float32 values written with their shortest decimal (0.1, not 0.10000000149011612)."""
    columns = {name: _float32_as_decimal(table.column(name).combine_chunks()) for name in table.column_names}
    return pa.table(columns).to_pylist()


def _float32_as_decimal(arr: pa.Array) -> pa.Array:
    if pa.types.is_float32(arr.type):
        return pc.cast(pc.cast(arr, pa.string()), pa.float64())
    if pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
        if pa.types.is_fixed_size_list(arr.type):
            arr = arr.cast(pa.list_(arr.type.value_type))
        values = _float32_as_decimal(arr.values)
        if values.type == arr.type.value_type:
            return arr
        return type(arr).from_arrays(arr.offsets, values, mask=arr.is_null() if arr.null_count else None)
    return arr
