"""The ``cluster-assets`` command line, through click's runner and once through the installed console script."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cluster_assets.cli import main
from cluster_assets.storage import Storage
from cluster_assets_tests.conftest import REPO, materialize_group, write_definition, write_table

SCRIPT = Path(sys.executable).parent / "cluster-assets"


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def digits_jsonl(tmp_path_factory) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path_factory.mktemp("digits") / "digits.jsonl"
    with path.open("w") as out:
        for i, (pixels, target) in enumerate(zip(digits.data, digits.target)):
            out.write(json.dumps({"document_id": f"digit-{i:04d}", "caption": f"digit {target}",
                                  "meta": {"target": int(target)}, "pixels": pixels.tolist()}) + "\n")
    return path


# --- collections ------------------------------------------------------------------------------------
def test_import_digits_through_the_installed_script_then_show(digits_jsonl, storage_root, storage):
    before = digest(digits_jsonl)
    env = {**os.environ, "CLUSTER_ASSETS_STORAGE": storage_root}
    done = subprocess.run([str(SCRIPT), "collections", "import", "digits", str(digits_jsonl)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "imported 1797 documents into collection 'digits'" in done.stdout
    assert any(line.split() == ["pixels", "dense", "64"] for line in done.stdout.splitlines())
    assert digest(digits_jsonl) == before  # the input is only read

    from sklearn.datasets import load_digits

    stored = storage.read_table("collections", "digits", "part-0.parquet")
    assert stored.schema.field("pixels").type == pa.list_(pa.float32())
    np.testing.assert_array_equal(np.array(stored.column("pixels").to_pylist(), np.float32),
                                  load_digits().data.astype(np.float32))

    shown = run("collections", "show", "digits")
    assert shown.exit_code == 0, shown.output
    assert "documents: 1797" in shown.stdout
    assert any(line.split() == ["pixels", "dense", "64"] for line in shown.stdout.splitlines())
    previews = [json.loads(line) for line in shown.stdout.splitlines() if line.startswith("{")]
    assert [p["document_id"] for p in previews] == ["digit-0000", "digit-0001", "digit-0002"]
    assert all("pixels" not in p for p in previews) and previews[1]["meta"] == {"target": 1}


@pytest.mark.parametrize("name, content, words", [
    ("ragged.jsonl", '{"document_id": "a", "v": [1, 2]}\n{"document_id": "b", "v": [1, 2, 3]}\n',
     ["line 2", "document 'b'", "column 'v'", "different lengths"]),
    ("text.jsonl", '{"document_id": "a", "v": [1, 2]}\n{"document_id": "b", "v": [1, "two"]}\n',
     ["line 2", "document 'b'", "column 'v'", "'two'", "not a number"]),
    ("noid.jsonl", '{"document_id": "a", "v": [1, 2]}\n{"id": "b", "v": [1, 2]}\n',
     ["line 2", "missing 'document_id'"]),
    ("dup.jsonl", '{"document_id": "a", "v": [1, 2]}\n{"document_id": "a", "v": [3, 4]}\n',
     ["line 2", "document 'a'", "duplicate document id", "line 1"]),
    ("broken.jsonl", '{"document_id": "a", "v": [1, 2]}\n{"document_id": "b", "v": [1, 2]\n',
     ["line 2", "malformed JSON"]),
    ("ragged.csv", 'document_id,v\na,"[1, 2]"\nb,"[1]"\n', ["line 3", "document 'b'", "column 'v'"]),
])
def test_import_errors_name_file_line_and_column_and_change_nothing(tmp_path, storage, name, content, words):
    write_table(storage, "docs", pa.table({"document_id": ["old"], "v": pa.array([[0.0, 1.0]], pa.list_(pa.float32()))}))
    path = tmp_path / name
    path.write_text(content)
    before = digest(path)

    result = run("collections", "import", "docs", path)

    assert result.exit_code == 1
    assert str(path) in result.stderr
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.output
    assert digest(path) == before
    assert storage.read_table("collections", "docs", "part-0.parquet").column("document_id").to_pylist() == ["old"]


def test_import_refuses_an_unsafe_collection_id(tmp_path, storage_root):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"document_id": "a", "v": [1, 2]}\n')
    result = run("collections", "import", "../x", path)
    assert result.exit_code == 1 and "'../x'" in result.stderr
    assert not (Path(storage_root).parent / "x").exists()
    assert not (Path(storage_root) / "collections").exists()


def test_import_replaces_the_collection_and_honours_format_id_column_and_storage(tmp_path, storage):
    first = tmp_path / "first.jsonl"
    first.write_text('{"document_id": "a", "v": [1, 2]}\n{"document_id": "b", "v": [3, 4]}\n')
    assert run("collections", "import", "docs", first).exit_code == 0

    second = tmp_path / "second.data"
    second.write_text('uid,v\nx,"[1, 2, 3]"\n')
    result = run("collections", "import", "docs", second, "--format", "csv", "--id-column", "uid")
    assert result.exit_code == 0, result.output
    assert "replaced" in result.stdout
    table = storage.read_table("collections", "docs", "part-0.parquet")
    assert table.column("document_id").to_pylist() == ["x"] and table.column("v").to_pylist() == [[1.0, 2.0, 3.0]]

    elsewhere = tmp_path / "elsewhere"
    result = run("collections", "import", "docs", first, "--storage", elsewhere)
    assert result.exit_code == 0
    assert Storage(str(elsewhere)).read_table("collections", "docs", "part-0.parquet").num_rows == 2
    assert storage.read_table("collections", "docs", "part-0.parquet").num_rows == 1  # the default root untouched


def test_collections_demo_list_and_show(storage):
    empty = run("collections", "list")
    assert empty.exit_code == 0 and "no collections" in empty.stdout

    demo = run("collections", "demo")
    assert demo.exit_code == 0
    assert "wrote collection 'digits': 1797 documents" in demo.stdout
    assert "already exists" in run("collections", "demo").stdout
    assert "wrote collection 'products'" in run("collections", "demo", "--overwrite").stdout

    listed = run("collections", "list")
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[2:]}
    assert rows["digits"][1:3] == ["1797", "4"] and rows["products"][1:3] == ["1200", "4"]
    size = sum(p.stat().st_size for p in Path(storage.path("collections", "digits")).glob("*.parquet"))
    assert rows["digits"][3] == f"{size / 1024:.1f}"

    shown = run("collections", "show", "products")
    assert any(line.split() == ["text_embedding", "dense", "32"] for line in shown.stdout.splitlines())
    assert "metadata" in shown.stdout and "struct<department: string, price: double>" in shown.stdout



def test_the_storage_only_commands_start_without_dagster(storage):
    """`collections` and `artifacts` import only themselves (Dagster's import is about 2 s of every command);
    `--help` still lists every command, in order."""
    probe = ("import sys; from click.testing import CliRunner; from cluster_assets.cli import main; "
             "runs = [CliRunner().invoke(main, args) for args in (['collections', 'list'], ['artifacts', 'nope'])]; "
             "print([r.exit_code for r in runs], 'dagster' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["[0,", "1]", "False"], done.stdout + done.stderr
    listed = [line.split()[0] for line in run("--help").stdout.split("Commands:")[1].strip().splitlines()]
    assert listed == ["run", "collections", "definitions", "artifacts", "executions", "enrich", "map", "taxonomy",
                      "prune", "upgrade"]

def test_show_lists_sparse_and_multi_vector_dimensions(storage):
    write_table(storage, "mixed", pa.table({
        "document_id": ["a", "b"],
        "bag": pa.array([{"indices": [1, 40], "values": [1.0, 2.0]}, {"indices": [7], "values": [1.0]}]),
        "patches": pa.array([[[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]),
    }))
    lines = [line.split() for line in run("collections", "show", "mixed").stdout.splitlines()]
    assert ["bag", "sparse", "41"] in lines and ["patches", "multi", "3"] in lines


def test_show_of_a_missing_collection_fails_clearly(storage_root):
    result = run("collections", "show", "nothing")
    assert result.exit_code == 1 and "collection 'nothing' not found" in result.stderr


# --- definitions ----------------------------------------------------------------------------------
GOOD = {"cluster_name": "good_one", "source_collection_ids": ["digits"], "feature_addresses": ["pixels"],
        "algorithm": "kmeans", "algorithm_config": {"num_clusters": 3},
        "triggers": [{"type": "cron", "cron": "0 * * * *"}, {"type": "event"}]}


def test_validate_counts_valid_definitions(definitions_dir, demo_storage):
    write_definition(definitions_dir, GOOD)
    shutil.copy(REPO / "clusters" / "digits_kmeans.yaml", definitions_dir)
    result = run("definitions", "validate")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "2 definitions valid"
    assert result.stderr == ""


def test_validate_reports_each_problem_and_still_counts_the_good_file(definitions_dir, storage_root):
    write_definition(definitions_dir, GOOD)
    bad = write_definition(definitions_dir, {**GOOD, "cluster_name": "bad_one", "algorithm": "kmeanz"})
    broken = definitions_dir / "broken.yaml"
    broken.write_text("cluster_name: [unclosed\n")

    result = run("definitions", "validate", definitions_dir, "--no-check-storage")

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"{bad}: algorithm: unknown algorithm 'kmeanz'") for line in lines)
    assert any(line.startswith(f"{broken}: cannot parse YAML") for line in lines)
    assert lines[-1] == "1 definition valid; 2 problems in 2 files"


def test_validate_a_single_file_and_a_missing_path(definitions_dir, storage_root, tmp_path):
    good = write_definition(tmp_path, GOOD)
    result = run("definitions", "validate", good, "--no-check-storage")
    assert result.exit_code == 0 and result.stdout.strip() == "1 definition valid"

    missing = run("definitions", "validate", tmp_path / "nope")
    assert missing.exit_code == 1 and "does not exist" in missing.stdout


def test_validate_warns_without_failing_when_a_source_collection_is_missing(definitions_dir, storage_root):
    path = write_definition(definitions_dir, GOOD)
    result = run("definitions", "validate")
    assert result.exit_code == 0
    assert f"warning: {path}: source_collection_ids: collection 'digits' is not in storage" in result.stderr


def test_definitions_list(definitions_dir, storage_root):
    write_definition(definitions_dir, GOOD)
    shutil.copy(REPO / "clusters" / "product_topics.json", definitions_dir)
    (definitions_dir / "bad.json").write_text("{}")
    result = run("definitions", "list")
    assert result.exit_code == 0
    rows = [line.split(None, 4) for line in result.stdout.splitlines()[2:]]
    assert ["good_one", "good_one.json", "kmeans", "digits", "2"] in rows
    assert ["product_topics", "product_topics.json", "hdbscan", "products", "0"] in rows
    assert "problem" in result.stderr


def test_definitions_show_before_any_run(definitions_dir, storage_root):
    write_definition(definitions_dir, {**GOOD, "enrichment": {"target_collection_id": "digits_out"}})
    result = run("definitions", "show", "good_one", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["definition"]["algorithm_config"] == {"num_clusters": 3}
    assert report["asset_keys"]["stages"] == [
        "good_one/sample", "good_one/embeddings", "good_one/model", "good_one/assignments (per file)",
        "good_one/reduced_coords (per file)", "good_one/labels", "good_one/enriched_collection (per file)",
        "good_one/cluster_map"]
    assert report["asset_keys"]["sources"] == ["collections/digits"]
    assert report["enrichment"]["targets"] == [{"source": "digits", "target": "digits_out", "exists": False,
                                                "owner": None}]
    assert report["stage_outputs"]["current_fit"] is None
    assert not report["stage_outputs"]["enriched_collection"]["exists"]

    text = run("definitions", "show", "good_one")
    assert "cluster_name: good_one" in text.stdout and "good_one/labels" in text.stdout

    missing = run("definitions", "show", "nope")
    assert missing.exit_code == 1 and "no valid definition named 'nope'" in missing.stderr and "good_one" in missing.stderr


# --- artifacts (one real materialization of the demo digits_kmeans, shared by the tests below) ------
@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    """Storage after two runs of digits_kmeans: the whole group, then only labels (centroids only)."""
    from cluster_assets.loader import build_defs

    base = tmp_path_factory.mktemp("artifacts")
    root, folder = base / "storage", base / "clusters"
    folder.mkdir()
    shutil.copy(REPO / "clusters" / "digits_kmeans.yaml", folder)
    storage = Storage(str(root))
    from cluster_assets.demo import write_demo_collections

    write_demo_collections(storage)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLUSTER_ASSETS_STORAGE", str(root))
        first = materialize_group(folder, "digits_kmeans")
        defs = build_defs(folder)
        second = dg.materialize([a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],
                                resources=defs.resources, selection=["digits_kmeans/labels"],
                                instance=dg.DagsterInstance.ephemeral())
    assert first.success and second.success
    return {"root": str(root), "folder": folder, "storage": storage,
            "first": first.run_id, "second": second.run_id}


def test_artifacts_table_lists_runs_newest_first_and_shows_centroids(materialized):
    result = run("artifacts", "digits_kmeans", "--storage", materialized["root"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    run_rows = [line.split()[0] for line in lines if line.split() and line.split()[0] in
                (materialized["first"], materialized["second"])]
    assert run_rows[:2] == [materialized["second"], materialized["first"]]
    assert f"centroids of the newest run {materialized['second']}:" in result.stdout
    header = next(i for i, line in enumerate(lines) if line.startswith("cluster_id"))
    rows = lines[header + 2:]
    assert len(rows) == 10
    assert sorted(int(r.split()[0]) for r in rows) == list(range(10))
    assert all("(64)" in r for r in rows)  # the 64-dimension centroid is elided


def test_artifacts_json_has_full_vectors_matching_the_parquet(materialized):
    result = run("artifacts", "digits_kmeans", "--format", "json", "--storage", materialized["root"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    stored = materialized["storage"].read_table("artifacts", "digits_kmeans", materialized["second"], "centroids.parquet")
    assert len(rows) == stored.num_rows == 10
    assert sum(r["count"] for r in rows) == 1797
    expected = np.array(stored.column("centroid").to_pylist(), np.float32)
    np.testing.assert_array_equal(np.array([r["centroid"] for r in rows], np.float32), expected)
    assert all(isinstance(r["label"], str) and r["label"] for r in rows)

    members = run("artifacts", "digits_kmeans", "--kind", "members", "--format", "json",
                  "--storage", materialized["root"])
    assert f"members of run {materialized['first']}" in members.stderr  # the newest run that has members
    member_rows = [json.loads(line) for line in members.stdout.splitlines()]
    assert len(member_rows) == 1797
    assert {r["document_id"] for r in member_rows} == {f"digit-{i:04d}" for i in range(1797)}
    assert set(member_rows[0]) >= {"document_id", "cluster_id", "x", "y"}


def test_artifacts_parquet_copies_the_file(materialized, tmp_path):
    out = tmp_path / "members.parquet"
    result = run("artifacts", "digits_kmeans", "--run-id", materialized["first"], "--kind", "members",
                 "--format", "parquet", "--output", out, "--storage", materialized["root"])
    assert result.exit_code == 0, result.output
    stored = materialized["storage"].read_table("artifacts", "digits_kmeans", materialized["first"], "members.parquet")
    assert pq.read_table(out).equals(stored)

    no_output = run("artifacts", "digits_kmeans", "--format", "parquet", "--storage", materialized["root"])
    assert no_output.exit_code == 2 and "--output" in no_output.stderr


def test_artifacts_errors(materialized):
    root = materialized["root"]
    none = run("artifacts", "never_ran", "--storage", root)
    assert none.exit_code == 1 and "no artifacts for cluster 'never_ran'" in none.stderr

    unknown = run("artifacts", "digits_kmeans", "--run-id", "not-a-run", "--storage", root)
    assert unknown.exit_code == 1 and "no artifacts for run 'not-a-run'" in unknown.stderr
    assert materialized["first"] in unknown.stderr

    partial = run("artifacts", "digits_kmeans", "--run-id", materialized["second"], "--kind", "members",
                  "--storage", root)
    assert partial.exit_code == 1 and "has no members.parquet" in partial.stderr

    unsafe = run("artifacts", "../digits_kmeans", "--storage", root)
    assert unsafe.exit_code == 1 and "cluster name" in unsafe.stderr


def test_definitions_show_after_a_run_sees_the_stage_outputs(materialized):
    result = run("definitions", "show", "digits_kmeans", "--json", "--dir", materialized["folder"],
                 "--storage", materialized["root"])
    report = json.loads(result.stdout)
    current = report["stage_outputs"]["current_fit"]
    assert current["fit_id"] == current["sample_id"] == materialized["first"]  # labels alone kept the fit
    assert current["files"] == 1 and current["uri"].endswith(f"assets/digits_kmeans/fits/{materialized['first']}")
    assert report["stage_outputs"]["enriched_collection"]["exists"]
    assert report["enrichment"]["targets"] == [{"source": "digits", "target": "digits_digits_kmeans_enriched",
                                                "exists": True, "owner": "digits_kmeans"}]


# --- the same commands against S3 (moto's server on loopback) ------------------------------------
@pytest.fixture
def s3_root(moto_s3) -> str:
    import boto3

    boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1").create_bucket(Bucket="clusters")
    return "s3://clusters/team"


def test_import_list_show_and_artifacts_on_s3(s3_root, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"document_id": f"d{i}", "text": f"doc {i}", "v": [float(i), 1.0, 2.0]}) + "\n"
                            for i in range(50)))
    imported = run("collections", "import", "docs", path, "--storage", s3_root)
    assert imported.exit_code == 0, imported.output
    assert "s3://clusters/team/collections/docs" in imported.stdout

    assert Storage(s3_root).read_table("collections", "docs", "part-0.parquet").num_rows == 50
    listed = run("collections", "list", "--storage", s3_root)
    assert listed.stdout.splitlines()[2].split()[:3] == ["docs", "50", "3"]
    shown = run("collections", "show", "docs", "--storage", s3_root)
    assert any(line.split() == ["v", "dense", "3"] for line in shown.stdout.splitlines())

    storage = Storage(s3_root)
    storage.write_table(pa.table({"cluster_id": [0, 1], "count": [20, 30]}), "artifacts", "c1", "run-a", "centroids.parquet")
    result = run("artifacts", "c1", "--format", "json", "--storage", s3_root)
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"cluster_id": 0, "count": 20}, {"cluster_id": 1, "count": 30}]


def test_list_keeps_going_past_an_unreadable_collection(storage):
    write_table(storage, "good", pa.table({"document_id": ["a"], "v": pa.array([[1.0]], pa.list_(pa.float32()))}))
    broken = Path(storage.path("collections", "broken"))
    broken.mkdir(parents=True)
    (broken / "part-0.parquet").write_text("not parquet")
    result = run("collections", "list")
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:]}
    assert rows["good"][:2] == ["1", "2"] and rows["broken"] == ["?", "?", "?"]
    assert "collection 'broken' cannot be read" in result.stderr


@pytest.mark.parametrize("command", [["map", "good_one"], ["taxonomy", "promote", "good_one", "--taxonomy", "t"]])
def test_an_unsafe_run_id_is_an_error_line_not_a_traceback(definitions_dir, storage_root, command):
    write_definition(definitions_dir, GOOD)
    result = run(*command, "--run-id", "../x")
    assert result.exit_code == 1
    assert result.stderr == ("Error: run id '../x' must start with a letter or digit and use only letters, digits, "
                             "'_', '-', '.' (no '/', no '..')\n")
