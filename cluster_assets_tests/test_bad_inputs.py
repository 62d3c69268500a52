"""Bad input gets a clear error naming the file, field, collection or document, and loses nothing.

Definition problems are caught when the definitions folder loads (the definition
is skipped and logged, the others load). Data problems fail the run at the
first stage that meets them, through Dagster, with the message a user sees in
the run's logs.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from cluster_assets.stages import STAGE_NAMES as STAGES
from cluster_assets.loader import build_defs
from cluster_assets.spec import load_definitions
from cluster_assets_tests.conftest import materialize_group, write_definition, write_table

GOOD = {
    "cluster_name": "points",
    "source_collection_ids": ["points"],
    "feature_addresses": ["mixpeek://text_extractor@v1/vec"],
    "algorithm": "kmeans",
    "algorithm_config": {"num_clusters": 3},
    "dimension_reduction": {"method": "pca", "components": 2},
}


def points(n: int = 30, dim: int = 4, seed: int = 0, ids: list[str] | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, 0.1, size=(n // 3, dim)) for c in (0.0, 2.0, 4.0)]).astype(np.float32)
    return pa.table({
        "document_id": ids or [f"doc-{i}" for i in range(len(X))],
        "text": [f"point {i}" for i in range(len(X))],
        "vec": pa.array(list(X), pa.list_(pa.float32())),
    })


def with_vectors(table: pa.Table, vectors: list) -> pa.Table:
    return table.set_column(table.column_names.index("vec"), "vec", pa.array(vectors, pa.list_(pa.float32())))


def failure(definitions_dir: Path, group: str = "points") -> tuple[str, str]:
    """Materialize a group that must fail; return the failed step and the user's error message."""
    result = materialize_group(definitions_dir, group, raise_on_error=False)
    assert not result.success
    failed = [event for event in result.all_events if event.is_step_failure]
    assert len(failed) == 1
    error = failed[0].step_failure_data.error
    while error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError":
        error = error.cause  # Dagster's wrapper -> the exception the stage raised
    # Dagster formats it as "<module>.<Class>: <message>\n"
    qualified, _, message = error.message.strip().partition(": ")
    assert qualified.endswith(error.cls_name)
    return failed[0].step_key.split("__")[-1], message


# --- definitions ------------------------------------------------------------------------------

def skipped(definitions_dir: Path, caplog) -> tuple[dg.Definitions, list[str]]:
    with caplog.at_level(logging.ERROR, logger="cluster_assets"):
        defs = build_defs(definitions_dir)
    return defs, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_unknown_algorithm(definitions_dir, caplog):
    path = write_definition(definitions_dir, {**GOOD, "algorithm": "k-means"})
    defs, errors = skipped(definitions_dir, caplog)
    assert errors == [f"skipping cluster definition: {path}: algorithm: unknown algorithm 'k-means'; valid: "
                      "kmeans, gaussian_mixture, mean_shift, dbscan, optics, agglomerative, spectral, hdbscan, evoc"]
    assert not [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]


def test_unknown_algorithm_parameter_lists_the_valid_ones(definitions_dir, caplog):
    path = write_definition(definitions_dir, {**GOOD, "algorithm_config": {"num_clusters": 3, "n_iter": 10}})
    _, errors = skipped(definitions_dir, caplog)
    assert len(errors) == 1
    assert errors[0].startswith(f"skipping cluster definition: {path}: algorithm_config.n_iter: "
                                "unknown parameter 'n_iter' for kmeans; valid: ")
    assert "max_iter" in errors[0] and "n_clusters" in errors[0] and "num_clusters" in errors[0]


def test_collection_id_with_path_characters(definitions_dir, caplog, storage):
    path = write_definition(definitions_dir, {**GOOD, "source_collection_ids": ["../x"]})
    _, errors = skipped(definitions_dir, caplog)
    assert errors == [f"skipping cluster definition: {path}: source_collection_ids: collection id '../x' must "
                      "start with a letter or digit and use only letters, digits, '_', '-', '.' (no '/', no '..')"]
    with pytest.raises(ValueError, match=r"collection id '\.\./x'"):
        storage.collection_dataset("../x")


@pytest.mark.parametrize("name,text,kind", [
    ("broken.yaml", "cluster_name: points\nsource_collection_ids: [points\n", "YAML"),
    ("broken.json", '{"cluster_name": "points", }', "JSON"),
])
def test_a_definition_that_fails_to_parse(definitions_dir, caplog, name, text, kind):
    (definitions_dir / name).write_text(text)
    _, errors = skipped(definitions_dir, caplog)
    assert len(errors) == 1
    assert errors[0].startswith(f"skipping cluster definition: {definitions_dir / name}: cannot parse {kind}: ")
    assert "line" in errors[0]  # where in the file


def test_one_broken_definition_does_not_stop_the_others(definitions_dir, caplog, storage):
    write_table(storage, "points", points())
    write_definition(definitions_dir, GOOD)
    (definitions_dir / "broken.yaml").write_text("cluster_name: [\n")
    write_definition(definitions_dir, {**GOOD, "cluster_name": "invalid", "algorithm": "nope"})
    defs, errors = skipped(definitions_dir, caplog)
    keys = {key.to_user_string() for a in defs.assets if isinstance(a, dg.AssetsDefinition) for key in a.keys}
    assert keys == {f"points/{stage}" for stage in STAGES}
    assert len(errors) == 2
    assert any(str(definitions_dir / "broken.yaml") in e for e in errors)
    assert any(str(definitions_dir / "invalid.json") in e and "algorithm" in e for e in errors)
    # the broken files are also listed in the code location's metadata
    listed = defs.metadata["definition_errors"].value
    assert len(listed) == 2
    # and the good group still runs
    assert materialize_group(definitions_dir, "points").success


# 502 bytes that expand to 9**9 strings: they used to exhaust the code location's memory.
BILLION_LAUGHS = """\
cluster_name: laughs
source_collection_ids: [points]
feature_addresses: [vec]
metadata:
  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_no_definition_takes_down_the_others(definitions_dir, caplog, storage_root):
    """Each file the code location leaves out is named, and `definitions validate` names the same files."""
    from click.testing import CliRunner

    from cluster_assets.cli import main

    write_definition(definitions_dir, GOOD)
    (definitions_dir / "laughs.yaml").write_text(BILLION_LAUGHS)
    # asset keys collections/<stage> would clash with a source collection named like a stage
    write_definition(definitions_dir, {**GOOD, "cluster_name": "collections"}, "reserved.json")
    write_definition(definitions_dir, {**GOOD, "cluster_name": "other", "source_collection_ids": ["sample"]})
    # schedule names are <group>__<trigger>: both are a__b__c
    cron = {"type": "cron", "cron": "0 3 * * *"}
    write_definition(definitions_dir, {**GOOD, "cluster_name": "a", "triggers": [{**cron, "name": "b__c"}]})
    clash = write_definition(definitions_dir, {**GOOD, "cluster_name": "a__b", "triggers": [{**cron, "name": "c"}]})
    # the second trigger's default name is cron_1
    twice = write_definition(definitions_dir, {**GOOD, "cluster_name": "twice",
                                               "triggers": [{**cron, "name": "cron_1"}, cron]})

    defs, errors = skipped(definitions_dir, caplog)

    dg.Definitions.validate_loadable(defs)
    groups = {key.path[0] for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert groups == {"collections", "points", "other", "a"}
    assert sorted(s.name for s in defs.schedules) == ["a__b__c"]
    assert errors == [
        f"skipping cluster definition: {definitions_dir / 'laughs.yaml'}: line 6, column 10: YAML aliases (*a) are "
        "not allowed in a definition file; write the value out",
        f"skipping cluster definition: {definitions_dir / 'reserved.json'}: cluster_name: 'collections' is reserved: "
        "its asset keys would clash with collections/<name> (reserved: collections, taxonomies)",
        f"skipping cluster definition: {clash}: triggers: schedule or sensor 'a__b__c' is already defined by "
        f"{definitions_dir / 'a.json'}",
        f"skipping cluster definition: {twice}: triggers: schedule or sensor 'twice__cron_1' is already defined by "
        "this file",
    ]

    result = CliRunner().invoke(main, ["definitions", "validate", str(definitions_dir), "--no-check-storage"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [e.removeprefix("skipping cluster definition: ") for e in errors] + [
        "3 definitions valid; 4 problems in 4 files"]
    listed = CliRunner().invoke(main, ["definitions", "list", "--dir", str(definitions_dir)])
    assert [line.split()[0] for line in listed.stdout.splitlines()[2:]] == ["a", "other", "points"]


def test_a_definition_whose_dagster_objects_fail_to_build_is_skipped(definitions_dir, caplog, monkeypatch):
    from cluster_assets import factory

    write_definition(definitions_dir, GOOD)
    broken = write_definition(definitions_dir, {**GOOD, "cluster_name": "broken"})
    real = factory.code_version

    def code_version(spec):
        if spec.cluster_name == "broken":
            raise MemoryError()
        return real(spec)

    monkeypatch.setattr(factory, "code_version", code_version)
    defs, errors = skipped(definitions_dir, caplog)
    assert errors == [f"skipping cluster definition: {broken}: cannot build its Dagster objects: MemoryError: "]
    assert {key.path[0] for key in defs.resolve_asset_graph().get_all_asset_keys()} == {"collections", "points"}


# --- data ---------------------------------------------------------------------------------------

def test_missing_collection(definitions_dir, storage):
    # The full run lists the source files first (they become its partitions): no run starts.
    from cluster_assets.storage import CollectionError

    write_definition(definitions_dir, {**GOOD, "source_collection_ids": ["nowhere"]})
    with pytest.raises(CollectionError) as error:
        materialize_group(definitions_dir, "points", raise_on_error=False)
    message = str(error.value)
    assert message.startswith("collection 'nowhere' not found: no Parquet files under ")
    assert str(Path(storage.root).resolve() / "collections" / "nowhere") in message


def test_missing_feature_column(definitions_dir, storage):
    write_table(storage, "points", points())
    write_definition(definitions_dir, {**GOOD, "feature_addresses": ["mixpeek://text_extractor@v1/embedding"]})
    step, message = failure(definitions_dir)
    assert step == "embeddings"
    assert message == ("collection 'points' has no feature column 'embedding' (from address "
                       "'mixpeek://text_extractor@v1/embedding'); columns: document_id, text, vec")


def test_vectors_of_different_lengths(definitions_dir, storage):
    table = points()
    vectors = table.column("vec").to_pylist()
    vectors[7] = vectors[7][:3]
    write_table(storage, "points", with_vectors(table, vectors))
    write_definition(definitions_dir, GOOD)
    step, message = failure(definitions_dir)
    assert step == "embeddings"
    assert message == ("collection 'points', file part-0.parquet, column 'vec': vectors of different lengths: "
                       "document 'doc-7' has 3 values, expected 4")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_infinite_values(definitions_dir, storage, bad):
    table = points()
    vectors = table.column("vec").to_pylist()
    vectors[12][2] = bad
    vectors[20][0] = bad
    write_table(storage, "points", with_vectors(table, vectors))
    write_definition(definitions_dir, GOOD)
    step, message = failure(definitions_dir)
    assert step == "embeddings"
    assert message == ("collection 'points', file part-0.parquet: document 'doc-12' has NaN or infinite values "
                       "(2 documents)")


def test_a_document_without_a_vector(definitions_dir, storage):
    table = points()
    vectors = table.column("vec").to_pylist()
    vectors[4] = None
    write_table(storage, "points", with_vectors(table, vectors))
    write_definition(definitions_dir, GOOD)
    step, message = failure(definitions_dir)
    assert step == "embeddings" and message == ("collection 'points', file part-0.parquet, column 'vec': "
                                                "document 'doc-4' has no vector")


def test_an_empty_collection(definitions_dir, storage):
    write_table(storage, "points", points().slice(0, 0))
    write_definition(definitions_dir, GOOD)
    step, message = failure(definitions_dir)
    assert step == "sample" and message == "collection 'points' has no documents"


def test_fewer_documents_than_clusters(definitions_dir, storage):
    write_table(storage, "points", points().slice(0, 5))
    write_definition(definitions_dir, {**GOOD, "algorithm_config": {"num_clusters": 10}})
    step, message = failure(definitions_dir)
    assert step == "sample"
    assert message == ("collection 'points' has 5 documents, fewer than the 10 clusters asked for by "
                       "algorithm_config.num_clusters: lower num_clusters or add documents")


def test_a_sample_smaller_than_the_clusters_is_refused_before_any_run(definitions_dir, caplog):
    path = write_definition(definitions_dir, {**GOOD, "sample_size": 2})
    defs, errors = skipped(definitions_dir, caplog)
    assert errors == [f"skipping cluster definition: {path}: sample_size: 2 is smaller than the 3 clusters asked for "
                      "by algorithm_config.num_clusters; the model is fitted on the sample: raise sample_size or "
                      "lower num_clusters"]
    assert not [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]


def test_vectors_whose_squared_norm_overflows_float32(definitions_dir, storage):
    table = points()
    vectors = table.column("vec").to_pylist()
    vectors[7] = [1e30, 1.0, 1.0, 1.0]  # finite, but its squared norm is not
    vectors[9] = [2e19, 2e19, 0.0, 0.0]
    write_table(storage, "points", with_vectors(table, vectors))
    write_definition(definitions_dir, GOOD)
    step, message = failure(definitions_dir)
    assert step == "embeddings"
    assert message == ("collection 'points', file part-0.parquet, column 'vec': document 'doc-7' has a vector of "
                       "magnitude 1.0e+30 (values up to 1.0e+30); its squared norm overflows float32 (max 3.4e+38): "
                       "rescale the vectors (2 documents)")


def test_duplicate_document_ids(definitions_dir, storage):
    ids = [f"doc-{i}" for i in range(30)]
    ids[25] = "doc-3"
    write_table(storage, "points", points(ids=ids))
    write_definition(definitions_dir, GOOD)
    step, message = failure(definitions_dir)
    assert step == "sample"
    assert message == ("duplicate document_id 'doc-3' in points/part-0.parquet and points/part-0.parquet "
                       "(1 ids appear more than once); ids must be unique")


def test_a_collection_without_document_ids(definitions_dir, storage):
    write_table(storage, "points", points().rename_columns(["id", "text", "vec"]))
    write_definition(definitions_dir, GOOD)
    step, message = failure(definitions_dir)
    assert step == "sample" and message == ("collection 'points', file part-0.parquet has no column 'document_id'; "
                                            "columns: id, text, vec")


def test_a_document_id_in_two_files_of_one_collection_names_both_files(definitions_dir, storage):
    write_table(storage, "points", points())
    storage.write_table(points(n=3, seed=4, ids=["new-0", "doc-7", "new-2"]), "collections", "points",
                        "part-1.parquet")
    write_definition(definitions_dir, GOOD)
    step, message = failure(definitions_dir)
    assert step == "sample" and message == ("duplicate document_id 'doc-7' in points/part-0.parquet and "
                                            "points/part-1.parquet (1 ids appear more than once); ids must be unique")


# --- and nothing is lost -----------------------------------------------------------------------

def test_a_failed_run_leaves_the_previous_results_and_the_source_whole(definitions_dir, storage):
    write_table(storage, "points", points())
    write_definition(definitions_dir, GOOD)
    assert materialize_group(definitions_dir, "points").success
    target = Path(storage.root) / "collections" / "points_points_enriched" / "part-0.parquet"
    enriched_before = target.read_bytes()
    # a new file of documents arrives with a broken vector
    broken = points(n=3, seed=5, ids=["new-0", "new-1", "new-2"])
    vectors = broken.column("vec").to_pylist()
    vectors[1][0] = float("nan")
    storage.write_table(with_vectors(broken, vectors), "collections", "points", "part-1.parquet")
    source = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in (Path(storage.root) / "collections" / "points").iterdir()}

    step, message = failure(definitions_dir)
    assert step == "embeddings" and "document 'new-1'" in message
    assert target.read_bytes() == enriched_before
    assert storage.collection_dataset("points_points_enriched").count_rows() == 30
    assert source == {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in (Path(storage.root) / "collections" / "points").iterdir()}


def test_definition_errors_are_also_reported_by_load_definitions(tmp_path):
    (tmp_path / "a.yaml").write_text("cluster_name: a\nsource_collection_ids: [a]\nfeature_addresses: [v]\n"
                                     "algorithm: kmeans\nalgorithm_config: {num_clusters: 0}\n")
    loaded, problems = load_definitions(tmp_path)
    assert loaded == [] and len(problems) == 1
    assert str(problems[0]).startswith(f"{tmp_path / 'a.yaml'}: algorithm_config.num_clusters: ")


def test_integer_document_ids_are_matched_as_strings_end_to_end(definitions_dir, storage):
    # Not bad input, but a common one: ids written by another tool as integers.
    table = points()
    table = table.set_column(0, "document_id", pa.array(range(100, 130), pa.int64()))
    write_table(storage, "points", table)
    write_definition(definitions_dir, {**GOOD, "enrichment": {"fields": ["label", "representative"]}})
    assert materialize_group(definitions_dir, "points").success
    enriched = storage.collection_dataset("points_points_enriched").to_table()
    assert enriched.column("document_id").type == pa.int64()  # the source's columns are kept as they were
    assert enriched.column("cluster_id").null_count == 0
    assert sorted(set(enriched.column("cluster_id").to_pylist())) == [0, 1, 2]
    assert enriched.column("label").null_count == 0
    assert 0 < sum(enriched.column("representative").to_pylist()) < 30
