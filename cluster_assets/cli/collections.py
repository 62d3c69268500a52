"""``cluster-assets collections import|list|show|demo``."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets import features, importers
from cluster_assets.cli.common import echo_table, fail, format_size, open_storage, storage_option, warn
from cluster_assets.features import FeatureError
from cluster_assets.spec import check_safe_id
from cluster_assets.storage import CollectionError, Storage

PREVIEW_ROWS = 3

# Below this a file is refused by `collections append` unless --allow-small (README: Growing collections).
MIN_APPEND_DOCUMENTS = 10_000


def input_file_options(command):
    """COLLECTION_ID FILE [--format] [--id-column]: what import and append read."""
    for option in reversed([
        click.argument("collection_id"),
        click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
        click.option("--format", "fmt", type=click.Choice(["auto", *importers.FORMATS]), default="auto",
                     show_default=True, help="File format; auto goes by the suffix (.jsonl/.ndjson/.json, .csv, .parquet)."),
        click.option("--id-column", default=None, metavar="NAME",
                     help=f"The field holding each document's id, stored as {importers.ID!r}."),
    ]):
        command = option(command)
    return command


@click.group("collections")
def collections() -> None:
    """Import, list and inspect document collections."""


@collections.command("import")
@input_file_options
@storage_option
def import_collection(collection_id: str, file: Path, fmt: str, id_column: str | None,
                      storage_root: str | None) -> None:
    """Import FILE as collection COLLECTION_ID, replacing it atomically if it exists.

    JSONL: one JSON object per line. CSV: vectors as JSON lists in a cell. Parquet:
    list columns. Feature columns are found from their values: dense (list of
    numbers), multi-vector (list of lists) or sparse ({"indices": [...], "values": [...]}).
    """
    try:
        check_safe_id(collection_id, "collection id")
    except ValueError as exc:
        fail(str(exc))
    storage = open_storage(storage_root)
    try:
        imported = importers.read_file(file, fmt, id_column)
    except importers.ImportProblem as exc:
        fail(str(exc))
    try:
        replaced = storage.collection_exists(collection_id)
        # an import replaces the whole collection: every Parquet file it had goes once the new one is complete
        previous = [posixpath.basename(p) for p in storage.collection_files(collection_id)] if replaced else []
        rows = storage.write_collection(collection_id, imported.table.schema, [imported.table], replaces=previous)
    except OSError as exc:
        fail(f"cannot write collection {collection_id!r} to {storage.uri('collections')}: {exc}")
    click.echo(f"imported {rows} documents into collection {collection_id!r} "
               f"({'replaced' if replaced else 'created'} {storage.uri(*storage.collection_parts(collection_id))})")
    if imported.features:
        click.echo("feature columns:")
        echo_table(((f.name, f.kind, f.dim) for f in imported.features), ["column", "kind", "dimension"])
    else:
        warn("no feature columns found: a collection needs a list-of-numbers column to be clustered")


@collections.command("append")
@input_file_options
@click.option("--name", "file_name", default=None, metavar="FILE.parquet",
              help="The new file's name in the collection (default: FILE's stem, .parquet).")
@click.option("--allow-small", is_flag=True,
              help=f"Append a file of fewer than {MIN_APPEND_DOCUMENTS} documents anyway.")
@storage_option
def append_collection(collection_id: str, file: Path, fmt: str, id_column: str | None, file_name: str | None,
                      allow_small: bool, storage_root: str | None) -> None:
    """Add FILE's documents to COLLECTION_ID as one new file, atomically; the files already there are untouched.

    Each file of a collection is a partition of the definitions that cluster it: their
    event triggers assign the new file with the current fit, without a refit. A file of
    fewer than 10,000 documents is refused unless --allow-small: every partition costs a
    step per per-file stage, a row in the UI and a sensor listing, so gather small batches
    into one file (100k-1M documents suit a partition).
    """
    from cluster_assets.partitions import check_partition_key

    try:
        check_safe_id(collection_id, "collection id")
        name = file_name or f"{file.stem}.parquet"
        if not name.endswith(".parquet") or "/" in name or name.startswith(("_", ".")):
            raise ValueError(f"file name {name!r} must end in .parquet and not start with '_' or '.'")
        check_partition_key(f"{collection_id}/{name}")
    except ValueError as exc:
        fail(str(exc))
    storage = open_storage(storage_root)
    if storage.exists(*storage.collection_parts(collection_id), name):
        fail(f"collection {collection_id!r} already has a file {name}: give another --name "
             f"(append never replaces a file; `collections import` replaces the collection)")
    try:
        imported = importers.read_file(file, fmt, id_column)
    except importers.ImportProblem as exc:
        fail(str(exc))
    if imported.table.num_rows < MIN_APPEND_DOCUMENTS and not allow_small:
        fail(f"{file}: {imported.table.num_rows} documents, fewer than the {MIN_APPEND_DOCUMENTS} a file of "
             f"collection {collection_id!r} should hold: each file is a partition (a step per per-file stage, a "
             "row in the UI), so many small files slow every run; gather them into one file, or pass --allow-small")
    if storage.collection_exists(collection_id):
        existing = storage.collection_dataset(collection_id).schema
        mismatched = [f.name for f in imported.table.schema if f.name in existing.names
                      and not existing.field(f.name).type.equals(f.type)]
        if mismatched:
            fail(f"{file}: column {mismatched[0]!r} is {imported.table.schema.field(mismatched[0]).type} but "
                 f"{existing.field(mismatched[0]).type} in collection {collection_id!r}")
    try:
        uri = storage.write_table(imported.table, *storage.collection_parts(collection_id), name)
    except OSError as exc:
        fail(f"cannot write {name} to collection {collection_id!r}: {exc}")
    click.echo(f"appended {imported.table.num_rows} documents to collection {collection_id!r} as {uri}")


@collections.command("list")
@storage_option
def list_collections(storage_root: str | None) -> None:
    """Every collection with its documents, columns and size on disk."""
    storage = open_storage(storage_root)
    rows = []
    for cid in storage.list_collections():
        try:
            dataset = storage.collection_dataset(cid)
            size = sum(i.size for i in storage.fs.get_file_info(storage.collection_files(cid)))
            rows.append((cid, dataset.count_rows(), len(dataset.schema), format_size(size)))
        except (CollectionError, OSError, pa.ArrowInvalid) as exc:
            warn(f"collection {cid!r} cannot be read: {exc}")
            rows.append((cid, "?", "?", "?"))
    if not rows:
        click.echo(f"no collections under {storage.uri('collections')}; "
                   "add one with `cluster-assets collections import ID FILE` or `cluster-assets collections demo`")
        return
    echo_table(rows, ["collection", "documents", "columns", "size"])


@collections.command("show")
@click.argument("collection_id")
@storage_option
def show_collection(collection_id: str, storage_root: str | None) -> None:
    """Document count, schema, feature columns and the first documents (without their vectors)."""
    storage = open_storage(storage_root)
    try:
        check_safe_id(collection_id, "collection id")
        dataset = storage.collection_dataset(collection_id)
        found = collection_features(storage, collection_id)
    except (ValueError, CollectionError, FeatureError) as exc:
        fail(str(exc))
    files = storage.fs.get_file_info(storage.collection_files(collection_id))
    click.echo(f"collection {collection_id!r}: {storage.uri(*storage.collection_parts(collection_id))}")
    click.echo(f"documents: {dataset.count_rows()}")
    click.echo(f"files: {len(files)} ({format_size(sum(i.size for i in files))})")
    click.echo("\nschema:")
    echo_table(((f.name, str(f.type)) for f in dataset.schema), ["column", "type"])
    click.echo("\nfeature columns:")
    if found:
        echo_table(((name, kind, dim) for name, (kind, dim) in found.items()), ["column", "kind", "dimension"])
    else:
        click.echo("  (none)")
    payload = [n for n in dataset.schema.names if n not in found]
    click.echo(f"\nfirst {PREVIEW_ROWS} documents (feature columns left out):")
    for row in dataset.head(PREVIEW_ROWS, columns=payload).to_pylist():
        click.echo(json.dumps(row, default=str, ensure_ascii=False))


@collections.command("demo")
@click.option("--overwrite", is_flag=True, help="Rewrite demo collections that already exist.")
@storage_option
def demo_collections(overwrite: bool, storage_root: str | None) -> None:
    """Write the demo collections (digits, products) built from data shipped with scikit-learn."""
    from cluster_assets.demo import DEMO_COLLECTIONS, write_demo_collections

    storage = open_storage(storage_root)
    written = write_demo_collections(storage, overwrite=overwrite)
    for cid in DEMO_COLLECTIONS:
        if cid in written:
            click.echo(f"wrote collection {cid!r}: {written[cid]} documents")
        else:
            click.echo(f"collection {cid!r} already exists (use --overwrite to rewrite it)")


def collection_features(storage: Storage, collection_id: str) -> dict[str, tuple[str, int]]:
    """Feature column -> (kind, dimension), reading no more than the dimension needs."""
    schema = storage.collection_dataset(collection_id).schema
    found = {}
    for name, kind in importers.feature_kinds(schema).items():
        dtype = schema.field(name).type
        if kind == "dense" and pa.types.is_fixed_size_list(dtype):
            found[name] = (kind, dtype.list_size)
            continue
        dim = 0
        for batch in storage.iter_collection(collection_id, [name], batch_size=4096):
            arr = batch.column(0).drop_null()
            if kind == "sparse":
                dim = max(dim, features.sparse_dimension(arr))
                continue
            if kind == "multi":
                arr = arr.flatten()
            if pa.types.is_fixed_size_list(arr.type):
                dim = arr.type.list_size
                break
            if len(arr):
                dim = int(pc.list_value_length(arr)[0].as_py())
                break
        found[name] = (kind, dim)
    return found

