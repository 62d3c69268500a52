"""The enrichment stage on its own: rows joined by document_id, late documents, label columns, owned targets.

The assignments and labels are written by hand (as the upstream stages leave them), so each
case runs in milliseconds and the expected value of every row is known.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster_assets import ownership
from cluster_assets.keywords import ClusterLabel
from cluster_assets.spec import parse_definition
from cluster_assets.stages import layout, plain_context
from cluster_assets.stages.enrich import run_enrichment as run_enrichment_stage
from cluster_assets.stages.enrich import LabelColumns
from cluster_assets.stages.label import labels_table

LABELS = [ClusterLabel(c, f"label {c}", f"summary {c}", [f"kw{c}"], [f"d{c}"], 0.5 + c / 10) for c in range(3)]


def spec_of(name: str = "enr", sources=("docs",), **enrichment):
    return parse_definition({"cluster_name": name, "source_collection_ids": list(sources),
                             "feature_addresses": ["vec"],
                             "enrichment": {"fields": ["label", "summary", "keywords", "confidence",
                                                       "representative"], **enrichment}})


def documents(ids: list[str]) -> pa.Table:
    return pa.table({"document_id": ids, "text": [f"text of {i}" for i in ids],
                     "vec": pa.array([[float(len(i)), 1.0] for i in ids], pa.list_(pa.float32()))})


def cluster_of(document_id: str) -> int:
    return int(document_id[1:]) % 3


FIT = "fit-1"


def write_upstream(storage, spec, assigned_ids: list[str]) -> None:
    """Each source file's assignments (its documents among ``assigned_ids``, in that order) and the labels,
    in fit ``FIT``, as the upstream stages leave them."""
    ctx = plain_context(storage, spec, FIT)
    for partition in ctx.partitions:
        cid, name = layout.split_partition(partition)
        in_file = set(storage.read_table("collections", cid, name, columns=["document_id"]).column(0).to_pylist())
        mine = [i for i in assigned_ids if i in in_file]
        storage.write_table(pa.table({"document_id": pa.array(mine, pa.string()),
                                      "cluster_id": pa.array([cluster_of(i) for i in mine], pa.int32())}),
                            *layout.file_parts(spec, FIT, partition, layout.ASSIGNMENTS))
    storage.write_table(labels_table(LABELS, "data"), *layout.fit_parts(spec, FIT, layout.LABELS))


def run_enrichment(storage, spec, previous_targets=()):
    ctx = plain_context(storage, spec, FIT)
    ctx.previously_enriched = frozenset(previous_targets)
    return run_enrichment_stage(ctx)


def assert_joined_by_id(table: pa.Table) -> None:
    for row in table.to_pylist():
        c = cluster_of(row["document_id"])
        assert row["cluster_id"] == c, row["document_id"]
        assert (row["label"], row["summary"], row["keywords"]) == (f"label {c}", f"summary {c}", [f"kw{c}"])
        assert row["confidence"] == pytest.approx(0.5 + c / 10)
        assert row["representative"] == (row["document_id"] == f"d{c}")


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# --- rows are joined by document_id -------------------------------------------------------------

def test_enrichment_of_shuffled_documents_joins_by_document_id(storage):
    spec = spec_of()
    ids = [f"d{i}" for i in range(40)]
    shuffled = [ids[i] for i in np.random.default_rng(3).permutation(len(ids))]
    storage.write_collection("docs", documents(shuffled).schema, [documents(shuffled)])
    write_upstream(storage, spec, ids)  # the assignments in another order than the source
    run_enrichment(storage, spec)
    enriched = storage.collection_dataset("docs_enr_enriched").to_table()
    assert enriched.column("document_id").to_pylist() == shuffled  # the source's order is kept
    assert_joined_by_id(enriched)


def test_enrichment_of_two_source_collections_joins_by_document_id(storage):
    spec = spec_of(sources=("a", "b"), target_collection_id="both")
    a, b = [f"d{i}" for i in range(0, 20)], [f"d{i}" for i in range(20, 45)]
    storage.write_collection("a", documents(a).schema, [documents(a)])
    storage.write_collection("b", documents(b).schema, [documents(b)])
    write_upstream(storage, spec, b[::-1] + a[::-1])
    run_enrichment(storage, spec)
    enriched = storage.collection_dataset("both").to_table()
    assert enriched.column("document_id").to_pylist() == a + b
    assert enriched.column("source_collection_id").to_pylist() == ["a"] * 20 + ["b"] * 25
    assert_joined_by_id(enriched)


def test_documents_newer_than_the_assignments_get_a_null_cluster_not_noise(storage):
    spec = spec_of()
    ids = [f"d{i}" for i in range(10)]
    storage.write_collection("docs", documents(ids + ["late"]).schema, [documents(ids + ["late"])])
    write_upstream(storage, spec, ids)
    result = run_enrichment(storage, spec)
    enriched = storage.collection_dataset("docs_enr_enriched").to_table()
    late = enriched.filter(pa.compute.equal(enriched.column("document_id"), "late")).to_pylist()[0]
    assert late["cluster_id"] is None
    assert late["label"] is None and late["summary"] is None and late["keywords"] is None
    assert result.metadata["unassigned_documents"] == 1
    assert_joined_by_id(enriched.filter(pa.compute.not_equal(enriched.column("document_id"), "late")))


# --- label columns: one copy per cluster, not per document ---------------------------------------

def test_label_columns_are_dictionary_encoded_over_the_labels_table():
    long = ClusterLabel(0, "big", "s" * 500, ["k"], ["d0"])
    labels = labels_table([long, LABELS[1]], "data")
    columns = LabelColumns(labels, ["label", "summary", "keywords", "confidence"])
    out = columns.for_batch(np.array([0, 0, 1, -1, 0]), pa.array(["d0", "x", "y", "z", "w"]))
    summary = out["summary"]
    assert isinstance(summary, pa.DictionaryArray)
    assert summary.to_pylist() == ["s" * 500, "s" * 500, "summary 1", None, "s" * 500]
    # one copy of each cluster's text, one index per document: not 4 copies of the 500 characters
    assert len(summary.dictionary) == labels.num_rows
    assert summary.nbytes < 2 * 500 + 100
    assert out["label"].type == pa.dictionary(pa.int32(), pa.string())
    assert out["keywords"].to_pylist() == [["k"], ["k"], ["kw1"], None, ["k"]]


# --- enrichment targets: written only by their owner ---------------------------------------------

def test_a_target_holding_user_files_is_refused_and_left_byte_identical(storage):
    spec = spec_of(target_collection_id="mine")
    storage.write_collection("docs", documents(["d0", "d1"]).schema, [documents(["d0", "d1"])])
    write_upstream(storage, spec, ["d0", "d1"])
    folder = Path(storage.root) / "collections" / "mine"
    folder.mkdir(parents=True)
    pq.write_table(documents(["u1"]), folder / "a.parquet")
    pq.write_table(documents(["u2"]), folder / "b.parquet")
    before = hashes(folder)
    with pytest.raises(ownership.OwnershipError) as caught:
        run_enrichment(storage, spec)
    assert str(caught.value).startswith(
        "definition 'enr' cannot write enrichment target collection 'mine': it already exists (")
    assert "a.parquet, b.parquet" in str(caught.value)
    assert hashes(folder) == before  # no manifest either


def test_a_target_owned_by_another_definition_is_refused(storage):
    first, second = spec_of("first", target_collection_id="shared"), spec_of("second", target_collection_id="shared")
    storage.write_collection("docs", documents(["d0", "d1"]).schema, [documents(["d0", "d1"])])
    for spec in (first, second):
        write_upstream(storage, spec, ["d0", "d1"])
    run_enrichment(storage, first)
    folder = Path(storage.root) / "collections" / "shared"
    before = hashes(folder)
    assert ownership.read_owner(storage, "shared") == ownership.Owner("first", ("part-0.parquet",), FIT)
    with pytest.raises(ownership.OwnershipError, match=r"^definition 'second' cannot write enrichment target "
                       r"collection 'shared': it belongs to definition 'first' "):
        run_enrichment(storage, second)
    assert hashes(folder) == before


def test_an_owned_target_is_rewritten_and_a_file_it_did_not_write_stays(storage):
    spec = spec_of(target_collection_id="mine")
    storage.write_collection("docs", documents(["d0", "d1"]).schema, [documents(["d0", "d1"])])
    write_upstream(storage, spec, ["d0", "d1"])
    run_enrichment(storage, spec)
    folder = Path(storage.root) / "collections" / "mine"
    pq.write_table(documents(["u1"]), folder / "user.parquet")
    user = hashes(folder)["user.parquet"]
    storage.write_collection("docs", documents(["d0", "d1", "d2"]).schema, [documents(["d0", "d1", "d2"])])
    write_upstream(storage, spec, ["d0", "d1", "d2"])
    run_enrichment(storage, spec)
    assert hashes(folder)["user.parquet"] == user
    assert pq.read_table(folder / "part-0.parquet").num_rows == 3


def test_an_unowned_target_is_adopted_only_when_the_last_enrichment_wrote_it(storage):
    spec = spec_of(target_collection_id="legacy")
    storage.write_collection("docs", documents(["d0", "d1"]).schema, [documents(["d0", "d1"])])
    write_upstream(storage, spec, ["d0", "d1"])
    # what the writer before owner manifests left: part-0.parquet and no manifest
    storage.write_collection("legacy", documents(["d0"]).schema, [documents(["d0"])])
    with pytest.raises(ownership.OwnershipError, match="'legacy': it already exists"):
        run_enrichment(storage, spec, previous_targets={"other"})
    run_enrichment(storage, spec, previous_targets={"legacy"})
    assert ownership.read_owner(storage, "legacy").cluster_name == "enr"
    assert storage.collection_dataset("legacy").count_rows() == 2


def test_a_null_label_value_is_written_as_a_null_not_in_the_dictionary(storage):
    # a response_shape field the model did not fill (a fallback cluster) is null in the labels table
    spec = parse_definition({"cluster_name": "enr", "source_collection_ids": ["docs"], "feature_addresses": ["vec"],
                             "llm_labeling": {"provider": "openai", "response_shape": {"tone": "string"}},
                             "enrichment": {"fields": ["label", "tone"]}})
    ids = [f"d{i}" for i in range(6)]
    storage.write_collection("docs", documents(ids).schema, [documents(ids)])
    write_upstream(storage, spec, ids)
    labels = [ClusterLabel(c, f"label {c}", "", [], [], extra={"tone": None if c == 1 else f"tone {c}"})
              for c in range(3)]
    storage.write_table(labels_table(labels, "llm", {"tone": pa.string()}), *layout.fit_parts(spec, FIT, layout.LABELS))
    run_enrichment(storage, spec)
    enriched = storage.collection_dataset("docs_enr_enriched").to_table()
    assert enriched.column("tone").to_pylist() == [None if cluster_of(i) == 1 else f"tone {cluster_of(i)}" for i in ids]
