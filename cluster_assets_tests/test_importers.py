"""importers: JSONL / CSV / Parquet -> a validated collection table, with errors naming file, line and column."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster_assets import importers
from cluster_assets.importers import ImportProblem, read_file


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def problem(path, **kwargs) -> ImportProblem:
    with pytest.raises(ImportProblem) as info:
        read_file(path, **kwargs)
    return info.value


# --- what a good file becomes --------------------------------------------------------------------
def test_jsonl_recognises_dense_multi_and_sparse_features(tmp_path):
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(5, 4)).astype(np.float32)
    records = [
        {"document_id": f"d{i}", "title": f"title {i}", "meta": {"lang": "en", "n": i},
         "embedding": dense[i].tolist(),
         "patches": [[float(i), 1.0, 2.0]] * (i + 1),
         "bag": {"indices": [i, 10], "values": [1.0, 0.5]}, "tags": ["a", "b"][: i % 3]}
        for i in range(5)
    ]
    imported = read_file(write_jsonl(tmp_path / "docs.jsonl", records))

    table = imported.table
    assert table.column_names[0] == "document_id" and table.num_rows == 5
    assert {(f.name, f.kind, f.dim) for f in imported.features} == {
        ("embedding", "dense", 4), ("patches", "multi", 3), ("bag", "sparse", 11)}
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.schema.field("patches").type == pa.list_(pa.list_(pa.float32()))
    assert table.schema.field("bag").type == importers.SPARSE
    np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist(), np.float32), dense)
    assert [len(p) for p in table.column("patches").to_pylist()] == [1, 2, 3, 4, 5]
    assert table.column("meta").to_pylist()[3] == {"lang": "en", "n": 3}
    assert table.column("tags").type == pa.list_(pa.string())  # a list of strings is payload, not a feature


def test_jsonl_integer_ids_become_strings_and_missing_fields_are_null(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [
        {"document_id": 1, "v": [1, 2]},
        {"document_id": "two", "v": [3, 4], "extra": "only here"},
    ])
    table = read_file(path).table
    assert table.column("document_id").to_pylist() == ["1", "two"]
    assert table.column("extra").to_pylist() == [None, "only here"]


def test_jsonl_blank_lines_are_skipped_and_later_lines_keep_their_numbers(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"document_id": "a", "v": [1, 2]}\n\n\n{"document_id": "b", "v": [1, 2, 3]}\n')
    error = problem(path)
    assert error.where == "line 4" and error.document == "b" and error.column == "v"


def test_csv_vectors_in_cells_types_inferred_and_ids_kept_as_text(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text(
        'document_id,title,price,in_stock,embedding,meta\n'
        '007,"hello, world",3,true,"[0.1, 0.2, 0.3]","{""brand"": ""acme""}"\n'
        '008,"[draft] two\nlines",4.5,false,"[0.4, 0.5, 0.6]",\n'
    )
    imported = read_file(path)
    table = imported.table
    assert table.column("document_id").to_pylist() == ["007", "008"]  # not 7 and 8
    assert table.schema.field("price").type == pa.float64()
    assert table.schema.field("in_stock").type == pa.bool_()
    assert table.column("title").to_pylist() == ["hello, world", "[draft] two\nlines"]
    assert table.column("meta").to_pylist() == [{"brand": "acme"}, None]
    assert [(f.name, f.kind, f.dim) for f in imported.features] == [("embedding", "dense", 3)]
    np.testing.assert_allclose(table.column("embedding").to_pylist()[1], [0.4, 0.5, 0.6], rtol=1e-6)


def test_csv_line_numbers_count_quoted_newlines(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text('document_id,text,v\na,"one\ntwo\nthree","[1, 2]"\nb,x,"[1, 2, 3]"\n')
    error = problem(path)
    assert (error.where, error.document, error.column) == ("line 5", "b", "v")


def test_parquet_fixed_size_lists_sparse_structs_and_id_column_are_normalised(tmp_path):
    vectors = np.arange(12, dtype=np.float64).reshape(3, 4)
    table = pa.table({
        "id": pa.array([10, 11, 12], pa.int64()),
        "vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 4),
        "sp": pa.array([{"indices": [0, 7], "values": [1.0, 2.0]}, None, {"indices": [3], "values": [1.0]}]),
        "text": ["a", "b", "c"],
    })
    pq.write_table(table, tmp_path / "in.parquet")
    imported = read_file(tmp_path / "in.parquet", id_column="id")
    out = imported.table
    assert out.column_names == ["document_id", "vec", "sp", "text"]
    assert out.column("document_id").to_pylist() == ["10", "11", "12"]
    assert out.schema.field("vec").type == pa.list_(pa.float32())
    assert out.schema.field("sp").type == importers.SPARSE
    assert out.column("sp").to_pylist()[1] is None
    assert {(f.name, f.kind, f.dim) for f in imported.features} == {("vec", "dense", 4), ("sp", "sparse", 8)}


def test_format_is_taken_from_the_suffix_or_the_argument(tmp_path):
    path = write_jsonl(tmp_path / "docs.txt", [{"document_id": "a", "v": [1.0]}])
    assert "--format" in str(problem(path))
    assert read_file(path, format="jsonl").table.num_rows == 1


def test_chunks_are_checked_as_one_file(tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "CHUNK", 2)
    records = [{"document_id": f"d{i}", "v": [1.0, 2.0]} for i in range(5)]
    records[4]["late"] = "appears in the last chunk"
    imported = read_file(write_jsonl(tmp_path / "ok.jsonl", records))
    assert imported.table.num_rows == 5
    assert imported.table.column("late").to_pylist() == [None] * 4 + ["appears in the last chunk"]

    records[4]["v"] = [1.0, 2.0, 3.0]
    error = problem(write_jsonl(tmp_path / "ragged.jsonl", records))
    assert (error.where, error.document) == ("line 5", "d4")

    records[4] = {"document_id": "d1", "v": [1.0, 2.0]}
    error = problem(write_jsonl(tmp_path / "dup.jsonl", records))
    assert error.where == "line 5" and error.document == "d1" and "line 2" in error.message


# --- every bad input names the file, the line or row, the document and the column ------------------
@pytest.mark.parametrize("records, where, document, column, words", [
    ([{"document_id": "a", "v": [1, 2]}, {"document_id": "b", "v": [1, 2, 3]}],
     "line 2", "b", "v", "different lengths"),
    ([{"document_id": "a", "v": [1, 2]}, {"document_id": "b", "v": [1, "x"]}],
     "line 2", "b", "v", "'x' at position 1"),
    ([{"document_id": "a", "v": [1, 2]}, {"document_id": "b", "v": [1, True]}],
     "line 2", "b", "v", "not a number"),
    ([{"document_id": "a", "v": [1, 2]}, {"document_id": "b", "v": "1, 2"}],
     "line 2", "b", "v", "got str"),
    ([{"document_id": "a", "v": [1, 2]}, {"document_id": "b", "v": [1, None]}],
     "line 2", "b", "v", "not a number"),
    ([{"document_id": "a", "v": [1, 2]}, {"document_id": "b", "v": []}],
     "line 2", "b", "v", "different lengths"),
    ([{"document_id": "a", "m": [[1, 2]]}, {"document_id": "b", "m": [[1, 2], [3]]}],
     "line 2", "b", "m", "different lengths"),
    ([{"document_id": "a", "s": {"indices": [0, 1], "values": [1.0]}}],
     "line 1", "a", "s", "2 indices but 1 values"),
    ([{"document_id": "a", "s": {"indices": [-1], "values": [1.0]}}],
     "line 1", "a", "s", ">= 0"),
    ([{"document_id": "a", "s": {"indices": [0.5], "values": [1.0]}}],
     "line 1", "a", "s", "integers"),
    ([{"document_id": "a", "v": [1, 2]}, {"document_id": "a", "v": [1, 2]}],
     "line 2", "a", None, "duplicate document id (first on line 1)"),
    ([{"document_id": "a", "v": [1, 2]}, {"v": [1, 2]}],
     "line 2", None, None, "missing 'document_id'"),
    ([{"document_id": "a", "v": [1, 2]}, {"document_id": "", "v": [1, 2]}],
     "line 2", None, None, "missing 'document_id'"),
    ([{"document_id": "a", "n": 1}, {"document_id": "b", "n": "one"}],
     "line 2", "b", "n", "str here but int"),
])
def test_jsonl_problems(tmp_path, records, where, document, column, words):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    error = problem(path)
    assert error.path == str(path)
    assert (error.where, error.document, error.column) == (where, document, column)
    assert words in error.message
    assert str(path) in str(error) and where in str(error)


def test_non_finite_values_are_refused(tmp_path):
    path = tmp_path / "nan.jsonl"
    path.write_text('{"document_id": "a", "v": [1, 2]}\n{"document_id": "b", "v": [1, NaN]}\n')
    error = problem(path)
    assert (error.where, error.document, error.column) == ("line 2", "b", "v")
    assert "nan at position 1 is not a finite number" in error.message


def test_malformed_json_line_is_named_by_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"document_id": "a", "v": [1, 2]}\n{"document_id": "b", "v": [1, 2]}\n{"document_id": "c", "v": [1,\n')
    error = problem(path)
    assert error.where == "line 3" and "malformed JSON" in error.message


def test_a_line_that_is_not_an_object_is_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"document_id": "a"}\n[1, 2]\n')
    assert problem(path).where == "line 2"


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    assert "no documents" in str(problem(path))


def test_id_column_renames_and_conflicts(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"uid": "x1", "v": [1, 2]}, {"uid": "x2", "v": [3, 4]}])
    assert read_file(path, id_column="uid").table.column("document_id").to_pylist() == ["x1", "x2"]
    error = problem(path)
    assert "missing 'document_id'" in error.message and "--id-column" in error.message
    both = write_jsonl(tmp_path / "both.jsonl", [{"uid": "x1", "document_id": "y", "v": [1, 2]}])
    assert "both 'uid'" in str(problem(both, id_column="uid"))


def test_csv_problems(tmp_path):
    bad_json = tmp_path / "bad_json.csv"
    bad_json.write_text('document_id,v\na,"[1, 2]"\nb,"[1, 2"\n')
    error = problem(bad_json)
    assert (error.where, error.column) == ("line 3", "v") and "not valid JSON" in error.message

    non_numeric = tmp_path / "non_numeric.csv"
    non_numeric.write_text('document_id,v\na,"[1, 2]"\nb,"[1, ""x""]"\n')
    error = problem(non_numeric)
    assert (error.where, error.document, error.column) == ("line 3", "b", "v")

    missing = tmp_path / "missing.csv"
    missing.write_text('document_id,v\na,"[1, 2]"\n,"[1, 2]"\n')
    assert problem(missing).where == "line 3"

    no_id = tmp_path / "no_id.csv"
    no_id.write_text('name,v\na,"[1, 2]"\n')
    assert "missing 'document_id'" in str(problem(no_id))

    cells = tmp_path / "cells.csv"
    cells.write_text('document_id,v\na,"[1, 2]",extra\n')
    assert problem(cells).where == "line 2"

    header = tmp_path / "header.csv"
    header.write_text('document_id,v,v\na,1,2\n')
    assert "appears twice" in str(problem(header))


def test_parquet_problems(tmp_path):
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"document_id": ["a", "b", "c"], "v": [[1.0, 2.0], [1.0, 2.0], [1.0]]}), ragged)
    error = problem(ragged)
    assert (error.where, error.document, error.column) == ("row 2", "c", "v")

    dup = tmp_path / "dup.parquet"
    pq.write_table(pa.table({"document_id": ["a", "b", "a"], "v": [[1.0]] * 3}), dup)
    error = problem(dup)
    assert (error.where, error.document) == ("row 2", "a") and "row 0" in error.message

    no_id = tmp_path / "no_id.parquet"
    pq.write_table(pa.table({"name": ["a"], "v": [[1.0]]}), no_id)
    assert "no 'document_id' column" in str(problem(no_id))
    assert "no column 'uid'" in str(problem(no_id, id_column="uid"))

    null_id = tmp_path / "null_id.parquet"
    pq.write_table(pa.table({"document_id": ["a", None], "v": [[1.0], [2.0]]}), null_id)
    assert problem(null_id).where == "row 1"

    nan = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"document_id": ["a", "b"], "v": [[1.0, 2.0], [float("inf"), 2.0]]}), nan)
    error = problem(nan)
    assert (error.where, error.document, error.column) == ("row 1", "b", "v")

    not_parquet = tmp_path / "not.parquet"
    not_parquet.write_text("hello")
    assert "cannot read as Parquet" in str(problem(not_parquet))


def test_text_that_is_not_utf8_is_refused_by_name(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("document_id,title\na,caf\xe9\n".encode("latin-1"))
    error = problem(path)
    assert error.path == str(path) and "not UTF-8" in error.message


def test_long_vector_cells_in_csv_are_read(tmp_path):
    vector = np.linspace(0, 1, 20_000).round(6).tolist()  # ~180 KB of JSON, beyond csv's default cell limit
    path = tmp_path / "wide.csv"
    path.write_text(f'document_id,v\na,"{json.dumps(vector)}"\n')
    imported = read_file(path)
    assert imported.features[0].dim == 20_000
