"""Asset checks on a fit: the drift and size measures, and the checks passing, warning and blocking."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from cluster_assets import checks, drift
from cluster_assets.loader import build_defs
from cluster_assets.spec import parse_definition
from cluster_assets.stages import layout
from cluster_assets_tests.conftest import materialize_group, write_definition
from cluster_assets_tests.small import definition, write_blobs


def assignments(labels, ids=None) -> pa.Table:
    ids = ids if ids is not None else [f"doc-{i:05d}" for i in range(len(labels))]
    return pa.table({"document_id": pa.array(ids, pa.string()), "cluster_id": pa.array(labels, pa.int32())})


# --- the measures ----------------------------------------------------------------------------

def test_relabelled_clusters_are_no_drift():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 500)
    permuted = np.array([3, 0, 4, 1, 2])[labels]  # same groups, other names
    shuffled = rng.permutation(500)  # and another row order
    prev = assignments(labels)
    curr = assignments(permuted[shuffled], [f"doc-{i:05d}" for i in shuffled])
    d = drift.drift(prev, curr)
    assert d.compared == 500 and d.changed == 0 and d.ari == pytest.approx(1.0)


def test_moved_documents_are_counted_after_matching():
    labels = np.repeat([0, 1, 2, 3], 25)
    moved = (labels + 1) % 4  # renamed...
    moved[:10] = 3  # ...and 10 documents of cluster 0 (now 1) moved to 3
    d = drift.drift(assignments(labels), assignments(moved))
    assert d.changed == 10
    assert d.changed_share == pytest.approx(0.10)
    assert 0 < d.ari < 1


def test_noise_only_matches_noise_and_new_documents_are_not_compared():
    prev = assignments([-1, -1, 0, 0, 1, 1])
    curr = assignments([0, 0, -1, -1, 1, 1, 1], [f"doc-{i:05d}" for i in range(7)])
    d = drift.drift(prev, curr)
    assert d.compared == 6  # doc-00006 is new
    # noise<->0 swap: 0 matches 0 or nothing; -1 never matches a real cluster
    assert d.changed == 4


def test_sizes_find_empty_giant_and_noise():
    sizes = drift.cluster_sizes(assignments([0] * 90 + [2] * 5 + [-1] * 5))
    assert sizes.noise_share == pytest.approx(0.05)
    assert sizes.largest_share == pytest.approx(0.90)
    assert sizes.empty_clusters() == [1]
    assert sizes.empty_clusters(min_size=10) == [1, 2]
    assert drift.cluster_sizes(assignments([-1, -1])).sizes == {}


# --- the checks over crafted fits (the contract: evaluate() over a fit's files) ----------------

def craft(storage, spec_body, current, previous=None):
    """Write ``current`` (and ``previous``) as the assignments of the one file of a fit; returns the results."""
    spec = parse_definition(spec_body)
    write_blobs(storage, per_blob=len(current) // 3 + 1)
    for fit_id, table in (("fit-new", current), ("fit-old", previous)):
        if table is not None:
            storage.write_table(table, *layout.file_parts(spec, fit_id, "points/part-0.parquet", layout.ASSIGNMENTS))
    results = checks.evaluate(storage, spec, "fit-new", "fit-old" if previous is not None else None)
    return {r.check_name: r for r in results}


def test_checks_pass_on_healthy_assignments(storage):
    labels = np.repeat([0, 1, 2], 40)
    results = craft(storage, definition(), assignments(labels), assignments((labels + 1) % 3))  # renamed only
    assert set(results) == {"drift", "noise_share", "cluster_sizes"}
    assert all(r.passed for r in results.values()), {n: r.description for n, r in results.items()}
    assert results["drift"].metadata["changed_share"].value == 0.0
    assert results["drift"].metadata["adjusted_rand_index"].value == pytest.approx(1.0)
    assert results["cluster_sizes"].metadata["num_clusters"].value == 3


def test_first_fit_drift_passes_and_says_so(storage):
    results = craft(storage, definition(), assignments(np.repeat([0, 1, 2], 40)))
    assert results["drift"].passed and "first fit" in results["drift"].description


def test_checks_fail_as_warnings_on_bad_assignments(storage):
    body = definition(checks={"max_changed_share": 0.2, "max_noise_share": 0.1, "max_cluster_share": 0.5})
    rng = np.random.default_rng(1)
    previous = rng.integers(0, 4, 200)
    current = previous.copy()
    current[:80] = -1  # 40% noise now
    current[80:] = np.where(current[80:] == 1, 0, current[80:])  # cluster 1 emptied into 0: giant and empty
    results = craft(storage, body, assignments(current), assignments(previous))
    assert not results["drift"].passed
    assert results["drift"].metadata["changed_share"].value > 0.2
    assert not results["noise_share"].passed
    assert results["noise_share"].metadata["noise_share"].value == pytest.approx(0.4)
    sizes = results["cluster_sizes"]
    assert not sizes.passed
    assert "1" in sizes.description and "fewer than 1 documents" in sizes.description
    assert sizes.metadata["empty_clusters"].value == [1]
    for r in results.values():
        assert r.severity == dg.AssetCheckSeverity.WARN
    assert not checks.blocked(parse_definition(body), list(results.values()))  # warnings never block


def test_a_fit_without_assignments_fails_with_a_clear_message(storage):
    write_blobs(storage)
    results = {r.check_name: r for r in checks.evaluate(storage, parse_definition(definition()), "fit-x", None)}
    assert not any(r.passed for r in results.values())
    assert "materialize blobs/assignments first" in results["noise_share"].description


def test_checks_sit_on_labels_and_can_be_disabled(definitions_dir, storage):
    write_definition(definitions_dir, definition())
    labels = build_defs(definitions_dir).resolve_assets_def(dg.AssetKey(["blobs", "labels"]))
    assert {key.name for key in labels.check_keys} == {"drift", "noise_share", "cluster_sizes"}
    write_definition(definitions_dir, definition(checks={"enabled": False}))
    labels = build_defs(definitions_dir).resolve_assets_def(dg.AssetKey(["blobs", "labels"]))
    assert not labels.check_keys


# --- real runs ----------------------------------------------------------------------------

def materialize(definitions_dir, instance):
    return materialize_group(definitions_dir, "blobs", instance, raise_on_error=False)


def test_drift_between_two_real_runs_warns_without_failing_the_run(definitions_dir, storage):
    write_blobs(storage)
    write_definition(definitions_dir, definition(checks={"max_changed_share": 0.1}))
    instance = dg.DagsterInstance.ephemeral()
    first = materialize(definitions_dir, instance)
    assert first.success
    assert {e.check_name: e.passed for e in first.get_asset_check_evaluations()}["drift"]

    # Same ids, other vectors: the blobs reshuffle, so most documents change cluster.
    rng = np.random.default_rng(7)
    table = storage.collection_dataset("points").to_table()
    vectors = rng.normal(0, 3, size=(table.num_rows, 4)).astype(np.float32)
    table = table.set_column(table.column_names.index("vec"), "vec", pa.array(list(vectors), pa.list_(pa.float32())))
    storage.write_collection("points", table.schema, [table])
    second = materialize(definitions_dir, instance)
    assert second.success  # a WARN never fails the run
    evaluation = {e.check_name: e for e in second.get_asset_check_evaluations()}["drift"]
    assert not evaluation.passed
    assert evaluation.metadata["compared_documents"].value == table.num_rows
    assert evaluation.metadata["changed_share"].value > 0.1
    materialized = {e.asset_key.path[-1] for e in second.get_asset_materialization_events()}
    assert "enriched_collection" in materialized  # downstream went on


def test_blocking_check_stops_downstream_stages(definitions_dir, storage):
    # 100 documents in one blob and 10 in each of two others: one giant cluster.
    from cluster_assets_tests.small import blobs_table

    giant = blobs_table(per_blob=100, centers=(0.0,))
    small = blobs_table(per_blob=10, start=500, centers=(3.0, 6.0))
    table = pa.concat_tables([giant, small])
    storage.write_collection("points", table.schema, [table])
    write_definition(definitions_dir, definition(checks={"max_cluster_share": 0.6, "blocking": True}))
    result = materialize(definitions_dir, dg.DagsterInstance.ephemeral())
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["cluster_sizes"]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "holds" in evaluation.description
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert {"assignments", "labels"} <= materialized
    assert not materialized & {"enriched_collection", "cluster_map"}
    assert not result.success
    # the fit that failed never became current: incremental runs keep using the last good one (none here)
    assert layout.read_current(storage, parse_definition(definition())) is None
