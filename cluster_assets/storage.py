"""The one filesystem layer: local folders and ``s3://bucket/prefix`` through pyarrow.fs.

Layout under the storage root (see the README):

    collections/<collection_id>/*.parquet        one row per document; one file = one partition
    assets/<cluster_name>/{samples,fits}/<id>/   each stage's outputs, by the sample or fit they belong to
    artifacts/<cluster_name>/<run_id>/...        per-run Parquet artifacts

Every write is atomic. On a local disk data goes to a staging name that readers
ignore (a leading ``_``, as pyarrow datasets do) and is renamed over the target only
when complete; a kill mid-write leaves the previous target intact and at most a
``_staging-*`` file behind, and the next successful write into the same folder
removes the staging files of writers that are gone (their host and pid are in the
name) or idle for an hour. On S3 a write is one multipart upload of the final key,
completed at the end and aborted on any error (``s3_upload.py``): no staging object,
no server-side copy (refused above 5 GB).
"""

from __future__ import annotations

import os
import posixpath
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster_assets.processes import process_alive, this_host
from cluster_assets.spec import check_safe_id

STAGING_PREFIX = "_staging-"
STALE_STAGING_SECONDS = 3600
# _staging-<uuid>-<pid>-<host without '-'>-<target name>
_STAGING_WRITER = re.compile(r"_staging-[0-9a-f]{32}-(\d+)-([^-]*)-")
COLLECTION_FILE = "part-0.parquet"  # the one file our writers give a collection
ROW_GROUP_ROWS = 65_536


class CollectionError(ValueError):
    """A collection that cannot be read as asked; the message names the collection."""


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", this_host())


def staging_name(name: str) -> str:
    """A staging name for ``name`` that says which process writes it."""
    return f"{STAGING_PREFIX}{uuid.uuid4().hex}-{os.getpid()}-{_host_tag()}-{name}"


def staging_abandoned(name: str, mtime: float, now: float) -> bool:
    """Whether a staging file belongs to no write in progress: its writer on this host is gone,
    or nothing was written to it for an hour (writers on other hosts, names of older versions)."""
    writer = _STAGING_WRITER.match(name)
    if writer and writer[2] == _host_tag() and not process_alive(int(writer[1])):
        return True
    return now - mtime > STALE_STAGING_SECONDS


def _s3_filesystem() -> pafs.S3FileSystem:
    # AWS_ENDPOINT_URL lets the same code talk to MinIO, a gateway or moto on loopback.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


class Storage:
    """A storage root: a local folder or an ``s3://bucket/prefix`` URI."""

    def __init__(self, root: str | os.PathLike):
        root = str(root)
        self.root = root
        if root.startswith("s3://"):
            parsed = urlparse(root)
            self.fs: pafs.FileSystem = _s3_filesystem()
            self.base = posixpath.join(parsed.netloc, parsed.path.strip("/")).rstrip("/")
            self.scheme = "s3://"
        else:
            self.fs = pafs.LocalFileSystem()
            self.base = str(Path(root).expanduser().resolve())
            self.scheme = ""

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    # --- paths ------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts)

    def uri(self, *parts: str) -> str:
        """What a user can paste: a local path or an s3:// URI."""
        return self.scheme + self.path(*parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def list_dir(self, *parts: str) -> list[str]:
        info = self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in info)

    # --- atomic writes ----------------------------------------------------------------------
    @contextmanager
    def atomic_output(self, *parts: str) -> Iterator[pa.NativeFile]:
        """A stream whose content replaces ``parts`` only if the block completes."""
        if self.scheme == "s3://":
            with self._s3_output(*parts) as stream:
                yield stream
            return
        final = self.path(*parts)
        folder, name = posixpath.split(final)
        self.fs.create_dir(folder, recursive=True)
        staging = posixpath.join(folder, staging_name(name))
        try:
            with self.fs.open_output_stream(staging) as stream:
                yield stream
            self.fs.move(staging, final)
        except BaseException:
            try:
                self.fs.delete_file(staging)
            except (OSError, FileNotFoundError):
                pass
            raise
        self._remove_abandoned_staging(folder)

    @contextmanager
    def _s3_output(self, *parts: str) -> Iterator[pa.NativeFile]:
        """One multipart upload of the final key, aborted on any error (``cluster_assets.s3_upload``)."""
        from cluster_assets.s3_upload import MultipartUpload

        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = self.path(*parts).partition("/")
        upload = MultipartUpload(bucket, key)
        stream = pa.PythonFile(upload, mode="w")
        try:
            yield stream
            upload.complete()
        except BaseException as exc:
            try:
                upload.abort()
            except (BotoCoreError, ClientError):
                pass  # an unfinished upload is never an object; a lifecycle rule removes it
            if isinstance(exc, (BotoCoreError, ClientError)):
                raise OSError(f"cannot write {self.uri(*parts)}: {exc}") from None
            raise

    def _remove_abandoned_staging(self, folder: str) -> None:
        """Staging files left by killed writers. Local only: on S3 an unfinished upload is no object."""
        if self.scheme:
            return
        now = time.time()
        try:
            # scandir reads names without a stat each: cheap even beside thousands of files.
            leftovers = [e for e in os.scandir(folder) if e.name.startswith(STAGING_PREFIX)]
        except OSError:
            return
        for entry in leftovers:
            try:
                if staging_abandoned(entry.name, entry.stat().st_mtime, now):
                    os.unlink(entry.path)
            except OSError:
                pass  # removed meanwhile by another writer's sweep

    def write_bytes(self, data: bytes, *parts: str) -> str:
        with self.atomic_output(*parts) as stream:
            stream.write(data)
        return self.uri(*parts)

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as stream:
            return stream.read()

    def write_table(self, table: pa.Table, *parts: str) -> str:
        with self.atomic_output(*parts) as stream:
            pq.write_table(table, stream, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        return self.uri(*parts)

    def write_batches(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch | pa.Table], *parts: str,
                      compression: str = "zstd") -> int:
        """Stream batches into one Parquet file atomically; returns the row count."""
        rows = 0
        with self.atomic_output(*parts) as stream:
            with pq.ParquetWriter(stream, schema, compression=compression) as writer:
                for batch in batches:
                    if isinstance(batch, pa.RecordBatch):
                        batch = pa.Table.from_batches([batch])
                    # Row groups bound what a reader must hold at once: pyarrow's default (1M rows)
                    # would make a million-document collection one 1.5 GB row group.
                    writer.write_table(batch.cast(schema) if batch.schema != schema else batch,
                                       row_group_size=ROW_GROUP_ROWS)
                    rows += batch.num_rows
        return rows

    def read_table(self, *parts: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(*parts), columns=columns, filesystem=self.fs)

    def parquet_file(self, *parts: str) -> pq.ParquetFile:
        return self._parquet_file(self.path(*parts))

    def _parquet_file(self, path: str) -> pq.ParquetFile:
        # pre_buffer (pyarrow's default) reads far ahead of the batch in hand: on a million
        # 384-d vectors it held 1.9 GB at once, against 0.5 GB without it.
        return pq.ParquetFile(self.fs.open_input_file(path), pre_buffer=False)

    def iter_batches(self, *parts: str, columns: list[str] | None = None,
                     batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        yield from self.parquet_file(*parts).iter_batches(batch_size=batch_size, columns=columns)

    # --- collections ------------------------------------------------------------------------
    def collection_parts(self, collection_id: str) -> tuple[str, str]:
        check_safe_id(collection_id, "collection id")
        return ("collections", collection_id)

    def collection_files(self, collection_id: str) -> list[str]:
        return [i.path for i in self.collection_file_infos(collection_id)]

    def collection_file_infos(self, collection_id: str) -> list[pafs.FileInfo]:
        """One ``FileInfo`` (path, size, mtime) per Parquet file of a collection, sorted by path: one listing
        (on S3, the LIST answers carry size and mtime; nothing is asked per file)."""
        folder = self.path(*self.collection_parts(collection_id))
        info = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        files = sorted(
            (i for i in info
             if i.type == pafs.FileType.File and i.path.endswith(".parquet")
             and not posixpath.basename(i.path).startswith(("_", "."))),
            key=lambda i: i.path,
        )
        if not files:
            raise CollectionError(
                f"collection {collection_id!r} not found: no Parquet files under {self.uri(*self.collection_parts(collection_id))}"
            )
        return files

    def file_path(self, collection_id: str, file_name: str) -> str:
        check_safe_id(collection_id, "collection id")
        if "/" in file_name or file_name.startswith(("_", ".")) or not file_name.endswith(".parquet"):
            raise CollectionError(f"collection {collection_id!r}: {file_name!r} is not a Parquet file of it")
        return self.path("collections", collection_id, file_name)

    def file_fingerprint(self, info: pafs.FileInfo) -> dict:
        """A file's size and modification time as the change checks compare them. On S3 the time is kept to
        the second: the collection's listing gives it and a HEAD of one file gives it again, and some
        S3-compatible stores list milliseconds where HEAD answers in whole seconds."""
        mtime = info.mtime_ns or 0
        if self.scheme == "s3://":
            mtime -= mtime % 1_000_000_000
        return {"size": info.size, "mtime_ns": mtime}

    def file_info(self, collection_id: str, file_name: str) -> pafs.FileInfo:
        info = self.fs.get_file_info(self.file_path(collection_id, file_name))
        if info.type != pafs.FileType.File:
            raise CollectionError(f"collection {collection_id!r}: file {file_name} is gone "
                                  f"(removed since it was listed)")
        return info

    def iter_file(self, collection_id: str, file_name: str, columns: list[str] | None = None,
                  batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """One file of a collection, batch by batch; errors name the collection and the file."""
        where = f"collection {collection_id!r}, file {file_name}"
        try:
            parquet = self._parquet_file(self.file_path(collection_id, file_name))
        except FileNotFoundError:
            raise CollectionError(f"{where} is gone (removed since it was listed)") from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise CollectionError(f"{where} cannot be read: {exc}") from None
        absent = [c for c in columns or [] if c not in parquet.schema_arrow.names]
        if absent:
            raise CollectionError(f"{where} has no column {absent[0]!r}; columns: "
                                  f"{', '.join(parquet.schema_arrow.names)}")
        try:
            yield from parquet.iter_batches(batch_size=batch_size, columns=columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CollectionError(f"{where} cannot be read: {exc}") from None

    def collection_exists(self, collection_id: str) -> bool:
        try:
            self.collection_files(collection_id)
        except CollectionError:
            return False
        return True

    def list_collections(self) -> list[str]:
        return [name for name in self.list_dir("collections") if not name.startswith(("_", "."))
                and self.collection_exists(name)]

    def collection_dataset(self, collection_id: str) -> ds.Dataset:
        files = self.collection_files(collection_id)
        try:
            return ds.dataset(files, format="parquet", filesystem=self.fs)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CollectionError(f"collection {collection_id!r} cannot be read: {exc}") from None

    def iter_collection(self, collection_id: str, columns: list[str] | None = None,
                        batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        dataset = self.collection_dataset(collection_id)
        missing = [c for c in columns or [] if c not in dataset.schema.names]
        if missing:
            raise CollectionError(
                f"collection {collection_id!r} has no column {missing[0]!r}; columns: {', '.join(dataset.schema.names)}"
            )
        # File by file and row group by row group, so that memory stays at a batch or two of vectors.
        for path in self.collection_files(collection_id):
            parquet = self._parquet_file(path)
            absent = [c for c in columns or [] if c not in parquet.schema_arrow.names]
            if absent:
                raise CollectionError(f"collection {collection_id!r}: file {posixpath.basename(path)} "
                                      f"has no column {absent[0]!r}")
            yield from parquet.iter_batches(batch_size=batch_size, columns=columns)

    def write_collection(self, collection_id: str, schema: pa.Schema,
                         batches: Iterable[pa.RecordBatch | pa.Table], replaces: Iterable[str] = ()) -> int:
        """Write a collection's ``part-0.parquet`` atomically; returns the row count.

        Only once it is complete, the files named in ``replaces`` (names in the collection's folder that
        the same writer wrote before) are deleted. A file the caller does not name is never deleted.
        """
        parts = self.collection_parts(collection_id)
        rows = self.write_batches(schema, batches, *parts, COLLECTION_FILE)
        for name in replaces:
            if name == COLLECTION_FILE:
                continue
            check_safe_id(name, "collection file name")
            try:
                self.fs.delete_file(self.path(*parts, name))
            except FileNotFoundError:
                pass
        return rows
