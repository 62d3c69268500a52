"""Read a JSONL, CSV or Parquet file into a validated collection table.

The result has ``document_id`` (string, unique, present on every document) first,
then one column per field. Feature columns are recognised by their values:

- dense: a list of numbers                      -> ``list<float32>``
- multi-vector: a list of lists of numbers      -> ``list<list<float32>>``
- sparse: an object with ``indices`` and ``values`` -> ``struct<indices: list<int32>, values: list<float32>>``

Every problem names the file, the line (JSONL, CSV) or row (Parquet), the
document when known, and the column. In CSV a vector is a JSON list in a cell
(``"[0.1, 0.2]"``); any cell column whose first value parses as a JSON list or
object is read as JSON. Nothing here writes anything: the caller stores the table.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster_assets import features
from cluster_assets.features import FeatureError

ID = "document_id"
FORMATS = ("jsonl", "csv", "parquet")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
            ".parquet": "parquet", ".pq": "parquet"}
CHUNK = 20_000  # records converted to Arrow at a time, so Python objects never hold the whole file

DENSE = pa.list_(pa.float32())
MULTI = pa.list_(DENSE)
SPARSE = pa.struct([("indices", pa.list_(pa.int32())), ("values", DENSE)])
TYPES = {"dense": DENSE, "multi": MULTI, "sparse": SPARSE}
_NUMBER = (int, float)


class ImportProblem(ValueError):
    """``<file>: <line N|row N>: document '<id>': column '<name>': <message>`` (the parts that are known)."""

    def __init__(self, path: str | Path, message: str, where: str | None = None,
                 document: str | None = None, column: str | None = None):
        self.path, self.where, self.document, self.column = str(path), where, document, column
        self.message = message
        parts = [self.path, where, f"document {document!r}" if document is not None else None,
                 f"column {column!r}" if column is not None else None, message]
        super().__init__(": ".join(p for p in parts if p))


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    kind: str
    dim: int


@dataclass(frozen=True)
class ImportedTable:
    table: pa.Table
    features: list[FeatureInfo]
    format: str

    @property
    def num_documents(self) -> int:
        return self.table.num_rows


def detect_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ImportProblem(path, f"cannot tell the format from the suffix {suffix or '(none)'!r}; "
                                  f"give --format {'|'.join(FORMATS)}")
    return SUFFIXES[suffix]


def read_file(path: str | Path, format: str = "auto", id_column: str | None = None) -> ImportedTable:
    """The validated table of a JSONL, CSV or Parquet file (``format="auto"`` goes by the suffix)."""
    path = Path(path)
    if not path.is_file():
        raise ImportProblem(path, "no such file")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise ImportProblem(path, f"unknown format {fmt!r}; valid: auto, {', '.join(FORMATS)}")
    reader = {"jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}[fmt]
    return reader(path, id_column)


# --- JSONL and CSV: records with line numbers -> Arrow ------------------------------------------
def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportProblem(path, f"malformed JSON: {exc.msg} (column {exc.colno})", f"line {number}") from None
            if not isinstance(record, dict):
                raise ImportProblem(path, f"expected a JSON object, got {type(record).__name__}", f"line {number}")
            yield number, record


def _csv_records(path: Path) -> Iterator[tuple[int, dict]]:
    json_columns: dict[str, bool] = {}  # decided by each column's first non-empty cell
    with _open_text(path, newline="") as handle:
        # Vectors are long JSON cells: allow cells of up to 1 GB instead of csv's default 128 KB.
        csv.field_size_limit(max(csv.field_size_limit(), 2**30))
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            return
        blank = [i + 1 for i, name in enumerate(header) if not name.strip()]
        if blank:
            raise ImportProblem(path, f"header cell {blank[0]} has no column name", "line 1")
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise ImportProblem(path, f"column {repeated[0]!r} appears twice in the header", "line 1")
        line = reader.line_num
        for cells in _csv_rows(path, reader):
            number, line = line + 1, reader.line_num  # a quoted cell may span lines: report where the row starts
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise ImportProblem(path, f"{len(cells)} cells, the header has {len(header)}", f"line {number}")
            record: dict[str, Any] = {}
            for name, cell in zip(header, cells):
                if cell == "":
                    record[name] = None
                    continue
                if name not in json_columns:
                    json_columns[name] = _parses_as_container(cell)
                if json_columns[name]:
                    try:
                        cell = json.loads(cell)
                    except json.JSONDecodeError as exc:
                        raise ImportProblem(path, f"cell is not valid JSON: {exc.msg}", f"line {number}",
                                            column=name) from None
                record[name] = cell
            yield number, record


def _csv_rows(path: Path, reader) -> Iterator[list[str]]:
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportProblem(path, f"CSV: {exc}", f"line {reader.line_num}") from None


def _parses_as_container(cell: str) -> bool:
    if not cell.lstrip().startswith(("[", "{")):
        return False
    try:
        return isinstance(json.loads(cell), (list, dict))
    except json.JSONDecodeError:
        return False


def _open_text(path: Path, newline: str | None = None):
    return open(path, encoding="utf-8-sig", newline=newline)


def read_jsonl(path: str | Path, id_column: str | None = None) -> ImportedTable:
    path = Path(path)
    return _from_records(path, _jsonl_records(path), id_column, "jsonl", infer_strings=False)


def read_csv(path: str | Path, id_column: str | None = None) -> ImportedTable:
    path = Path(path)
    return _from_records(path, _csv_records(path), id_column, "csv", infer_strings=True)


def _value_kind(value: Any) -> str | None:
    """What one value says about its column: a feature kind, "payload", or None (cannot tell yet)."""
    if isinstance(value, dict):
        return "sparse" if {"indices", "values"} <= value.keys() else "payload"
    if isinstance(value, list):
        if not value:
            return None
        if any(type(v) in _NUMBER for v in value):
            return "dense"
        if any(isinstance(v, list) and any(type(x) in _NUMBER for x in v) for v in value):
            return "multi"
        return "payload"
    return None if value is None else "payload"


def _numbers_problem(values: Any, what: str = "vector") -> str | None:
    if not isinstance(values, list):
        return f"expected a {what} (a list of numbers), got {type(values).__name__} {_short(values)}"
    if set(map(type, values)) <= {int, float}:
        return None
    position, bad = next((i, v) for i, v in enumerate(values) if type(v) not in _NUMBER)
    return f"value {_short(bad)} at position {position} of the {what} is not a number"


def _vector_problem(kind: str, value: Any) -> str | None:
    if kind == "dense":
        return _numbers_problem(value)
    if kind == "multi":
        if not isinstance(value, list):
            return f"expected a multi-vector (a list of lists of numbers), got {type(value).__name__} {_short(value)}"
        for i, inner in enumerate(value):
            problem = _numbers_problem(inner, f"vector {i}")
            if problem:
                return f"multi-vector: {problem}"
        return None
    if not isinstance(value, dict) or not {"indices", "values"} <= value.keys():
        return f"expected a sparse vector (an object with 'indices' and 'values'), got {_short(value)}"
    extra = sorted(set(value) - {"indices", "values"})
    if extra:
        return f"sparse vector has unexpected key {extra[0]!r} (only 'indices' and 'values')"
    indices = value["indices"]
    if not isinstance(indices, list) or not all(type(i) is int for i in indices):
        return f"sparse indices must be a list of integers, got {_short(indices)}"
    return _numbers_problem(value["values"], "sparse values")


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _from_records(path: Path, records: Iterator[tuple[int, dict]], id_column: str | None, fmt: str,
                  infer_strings: bool) -> ImportedTable:
    kinds: dict[str, str] = {}
    chunks: list[pa.Table] = []
    lines: list[int] = []
    buffer: list[tuple[int, dict]] = []
    try:
        for item in records:
            buffer.append(item)
            if len(buffer) >= CHUNK:
                chunks.append(_chunk_table(path, buffer, kinds, id_column))
                lines.extend(n for n, _ in buffer)
                buffer = []
    except UnicodeDecodeError as exc:
        raise ImportProblem(path, f"not UTF-8 text (byte {exc.start} of a block: {exc.reason})") from None
    if buffer:
        chunks.append(_chunk_table(path, buffer, kinds, id_column))
        lines.extend(n for n, _ in buffer)
    if not chunks:
        raise ImportProblem(path, "no documents in the file")
    try:
        table = pa.concat_tables(chunks, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ImportProblem(path, f"a column changes type between documents: {exc}") from None
    if infer_strings:
        table = _infer_scalar_types(table, skip={ID} | {n for n, k in kinds.items() if k != "payload"})
    line_of = np.asarray(lines)
    return _finish(path, table, lambda row: f"line {int(line_of[row])}", fmt, kinds)


def _chunk_table(path: Path, records: list[tuple[int, dict]], kinds: dict[str, str],
                 id_column: str | None) -> pa.Table:
    """One chunk of records -> Arrow, checking ids and vector values with the record's line number."""
    id_name = id_column or ID
    names: dict[str, None] = {}
    ids: list[str] = []
    for number, record in records:
        if id_name != ID and ID in record:
            raise ImportProblem(path, f"has both {id_name!r} (--id-column) and {ID!r}", f"line {number}")
        value = record.get(id_name)
        if value is None or value == "":
            raise ImportProblem(path, f"missing {id_name!r}" + ("" if id_column else " (or name the id field with --id-column)"),
                                f"line {number}")
        if type(value) not in (str, int):
            raise ImportProblem(path, f"{id_name!r} must be a string or an integer, got {_short(value)}", f"line {number}")
        ids.append(str(value))
        names.update(dict.fromkeys(k for k in record if k != id_name))
    columns: dict[str, pa.Array] = {ID: pa.array(ids, pa.string())}
    for name in names:
        values = [record.get(name) for _, record in records]
        if name not in kinds:
            kind = next((k for k in map(_value_kind, values) if k), None)
            if kind:
                kinds[name] = kind
        kind = kinds.get(name)
        if kind and kind != "payload":
            for (number, _), doc, value in zip(records, ids, values):
                if value is not None:
                    problem = _vector_problem(kind, value)
                    if problem:
                        raise ImportProblem(path, problem, f"line {number}", doc, name)
            columns[name] = pa.array(values, TYPES[kind])
        else:
            columns[name] = _payload_array(path, name, values, records, ids)
    return pa.table(columns)


def _payload_array(path: Path, name: str, values: list, records, ids: list[str]) -> pa.Array:
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        first = next((type(v) for v in values if v is not None), None)
        for (number, _), doc, value in zip(records, ids, values):
            if value is not None and not isinstance(value, first) and not (
                    type(value) in _NUMBER and first in _NUMBER):
                raise ImportProblem(path, f"is {type(value).__name__} here but {first.__name__} in earlier documents "
                                          "(one column holds one type)", f"line {number}", doc, name) from None
        raise ImportProblem(path, f"values cannot be stored as one column: {exc}", column=name) from None
    if pa.types.is_null(array.type):
        return array.cast(pa.string())
    return array


def _infer_scalar_types(table: pa.Table, skip: set[str]) -> pa.Table:
    """CSV cells are text: a column whose every cell reads as an integer, a float or a boolean becomes one."""
    for i, name in enumerate(table.column_names):
        column = table.column(i)
        if name in skip or not pa.types.is_string(column.type):
            continue
        for target in (pa.int64(), pa.float64(), pa.bool_()):
            try:
                table = table.set_column(i, name, pc.cast(column, target))
                break
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
    return table


# --- Parquet ---------------------------------------------------------------------------------
def read_parquet(path: str | Path, id_column: str | None = None) -> ImportedTable:
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ImportProblem(path, f"cannot read as Parquet: {exc}") from None
    if id_column and id_column != ID:
        if ID in table.column_names:
            raise ImportProblem(path, f"has both {id_column!r} (--id-column) and {ID!r}")
        if id_column not in table.column_names:
            raise ImportProblem(path, f"no column {id_column!r}; columns: {', '.join(table.column_names)}")
        table = table.rename_columns([ID if n == id_column else n for n in table.column_names])
    if ID not in table.column_names:
        raise ImportProblem(path, f"no {ID!r} column (name the id column with --id-column); "
                                  f"columns: {', '.join(table.column_names)}")
    kinds = {name: kind for name, kind in feature_kinds(table.schema).items()}
    ids = table.column(ID)
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)):
        raise ImportProblem(path, f"must be strings or integers, got {ids.type}", column=ID)
    table = table.set_column(table.column_names.index(ID), ID, ids.cast(pa.string()))
    for name, kind in kinds.items():
        i = table.column_names.index(name)
        try:
            table = table.set_column(i, name, _canonical(table.column(i), kind))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ImportProblem(path, f"cannot store as {TYPES[kind]}: {exc}", column=name) from None
    return _finish(path, table, lambda row: f"row {row}", "parquet", kinds)


def feature_kinds(schema: pa.Schema) -> dict[str, str]:
    """Column -> dense / multi / sparse for every column whose type is a feature."""
    kinds = {}
    for field in schema:
        if field.name == ID:
            continue
        try:
            kinds[field.name] = features.column_kind(field.type, field.name, "")
        except FeatureError:
            continue
    return kinds


def _canonical(column: pa.ChunkedArray, kind: str) -> pa.ChunkedArray:
    if kind != "sparse":
        return column.cast(TYPES[kind])
    chunks = []
    for chunk in column.chunks:
        chunks.append(pa.StructArray.from_arrays(
            [chunk.field("indices").cast(SPARSE.field("indices").type), chunk.field("values").cast(DENSE)],
            fields=list(SPARSE), mask=chunk.is_null()))
    return pa.chunked_array(chunks, SPARSE)


# --- checks shared by every format ------------------------------------------------------------
def _finish(path: Path, table: pa.Table, locate: Callable[[int], str], fmt: str,
            kinds: dict[str, str]) -> ImportedTable:
    ids = table.column(ID).combine_chunks()

    def where(row: int) -> tuple[str, str | None]:
        return locate(row), ids[row].as_py()

    missing = pc.fill_null(pc.equal(ids, ""), True).to_numpy(zero_copy_only=False)  # null or empty
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ImportProblem(path, f"missing {ID!r}", locate(row))
    id_values = ids.to_numpy(zero_copy_only=False)
    repeated = pd.Series(id_values).duplicated().to_numpy()
    if repeated.any():
        second = int(np.argmax(repeated))
        first = int(np.flatnonzero(id_values == id_values[second])[0])
        raise ImportProblem(path, f"duplicate document id (first on {locate(first)})", locate(second),
                            id_values[second])
    found = []
    columns = [ID] + [n for n in table.column_names if n != ID]
    table = table.select(columns)
    for name in columns[1:]:
        kind = kinds.get(name)
        if kind in (None, "payload"):
            continue
        column = table.column(name).combine_chunks()
        dim = _check_vectors(path, name, kind, column, where)
        found.append(FeatureInfo(name, kind, dim))
    return ImportedTable(table, found, fmt)


def _check_vectors(path: Path, name: str, kind: str, arr: pa.Array, where) -> int:
    """Equal lengths, no null components, finite values; returns the dimension."""

    def fail(row: int, message: str):
        line, doc = where(row)
        raise ImportProblem(path, message, line, doc, name)

    present = np.flatnonzero(arr.is_valid().to_numpy(zero_copy_only=False))
    if not len(present):
        raise ImportProblem(path, "no document has a vector", column=name)
    if kind == "sparse":
        indices, values = arr.field("indices"), arr.field("values")
        n_idx = _lengths(indices)[present]
        n_val = _lengths(values)[present]
        if (n_idx != n_val).any():
            fail(int(present[np.argmax(n_idx != n_val)]), f"sparse vector has {n_idx[np.argmax(n_idx != n_val)]} "
                 f"indices but {n_val[np.argmax(n_idx != n_val)]} values")
        flat_idx = indices.flatten()
        if flat_idx.null_count or (len(flat_idx) and pc.min(flat_idx).as_py() < 0):
            bad = pc.or_(pc.is_null(flat_idx), pc.less(pc.fill_null(flat_idx, -1), 0))
            fail(_parent_of(indices, bad), "sparse indices must be integers >= 0")
        _check_components(values, fail)
        return int(pc.max(flat_idx).as_py()) + 1 if len(flat_idx) else 0
    if kind == "multi":
        counts = _lengths(arr)[present]
        if (counts == 0).any():
            fail(int(present[np.argmax(counts == 0)]), "empty multi-vector")
        inner = arr.flatten()
        parents = pc.list_parent_indices(arr).to_numpy()
        dim = _check_lengths(inner, lambda i, msg: fail(int(parents[i]), f"multi-vector: {msg}"))
        _check_components(inner, lambda i, msg: fail(int(parents[i]), msg))
        return dim
    dim = _check_lengths(arr, fail)
    _check_components(arr, fail)
    return dim


def _lengths(arr: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(arr), -1).to_numpy(zero_copy_only=False)


def _check_lengths(arr: pa.Array, fail) -> int:
    lengths = _lengths(arr)
    present = np.flatnonzero(lengths >= 0)
    dim = int(lengths[present[0]])
    if dim == 0:
        fail(int(present[0]), "empty vector")
    bad = present[lengths[present] != dim]
    if len(bad):
        fail(int(bad[0]), f"vectors of different lengths: {int(lengths[bad[0]])} values here, {dim} in "
                          f"earlier documents")
    return dim


def _check_components(arr: pa.Array, fail) -> None:
    values = arr.flatten()
    finite = pc.fill_null(pc.is_finite(values), False)
    if not pc.all(finite).as_py():
        flat = int(np.flatnonzero(~finite.to_numpy(zero_copy_only=False))[0])
        parents = pc.list_parent_indices(arr).to_numpy()
        row = int(parents[flat])
        value = values[flat].as_py()
        shown = "null" if value is None else str(value)
        fail(row, f"value {shown} at position {flat - int(np.searchsorted(parents, row))} is not a finite number")


def _parent_of(arr: pa.Array, bad_flat: pa.Array) -> int:
    first = int(np.flatnonzero(bad_flat.to_numpy(zero_copy_only=False))[0])
    return int(pc.list_parent_indices(arr)[first].as_py())
