"""A storage root written by the previous release (flat outputs, a pickled ClusterModel, an enriched collection
without a manifest), built here as that release wrote it (`git show 1836b8f:cluster_assets/stages/`), upgraded
with `cluster-assets upgrade` and run again."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from cluster_assets import ownership
from cluster_assets.algorithms import ClusterModel
from cluster_assets.cli import main
from cluster_assets.spec import load_definitions
from cluster_assets.stages import LineageError, layout, plain_context, run_plain
from cluster_assets.stages.model import load_fit
from cluster_assets_tests.small import append_blobs, definition, write_blobs

FLAT = ["assignments.parquet", "clusters.parquet", "coords.parquet", "embeddings.parquet", "features.json",
        "labels.parquet", "model.pkl", "previous_assignments.parquet", "sample.parquet", "sample_embeddings.parquet"]
TARGET = "points_blobs_enriched"


def write_previous_release(storage, table: pa.Table) -> None:
    """What the release before fits wrote for definition ``blobs`` over ``points`` (one file, part-0.parquet)."""
    ids = table.column("document_id")
    X = np.stack(table.column("vec").to_numpy(zero_copy_only=False)).astype(np.float32)
    model = ClusterModel("kmeans", {"n_clusters": 3, "random_state": 0}).fit(X)
    labels = pa.array(model.labels_.astype(np.int32))
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 4)
    flat = ("assets", "blobs")
    storage.write_table(pa.table({"document_id": ids, "collection_id": ["points"] * len(ids),
                                  "row": pa.array(np.arange(len(ids)))}), *flat, "sample.parquet")
    storage.write_table(pa.table({"document_id": ids, "vector": vectors}), *flat, "embeddings.parquet")
    storage.write_table(pa.table({"document_id": ids, "vector": vectors}), *flat, "sample_embeddings.parquet")
    storage.write_bytes(json.dumps([{"address": "vec", "column": "vec"}]).encode(), *flat, "features.json")
    storage.write_bytes(pickle.dumps(model), *flat, "model.pkl")
    assigned = pa.table({"document_id": ids, "cluster_id": labels})
    storage.write_table(assigned, *flat, "assignments.parquet")
    storage.write_table(assigned, *flat, "previous_assignments.parquet")
    storage.write_table(pa.table({"cluster_id": pa.array([0, 1, 2], pa.int32())}), *flat, "clusters.parquet")
    storage.write_table(pa.table({"document_id": ids, "x": X[:, 0], "y": X[:, 1]}), *flat, "coords.parquet")
    storage.write_table(pa.table({"cluster_id": pa.array([0, 1, 2], pa.int32()), "label": ["a", "b", "c"]}),
                        *flat, "labels.parquet")
    storage.write_table(pa.table({"cluster_id": pa.array([0, 1, 2], pa.int32()), "label": ["a", "b", "c"]}),
                        "artifacts", "blobs", "oldrun", "centroids.parquet")
    enriched = table.drop_columns(["vec"]).append_column("cluster_id", labels).append_column(
        "label", pc.take(pa.array(["a", "b", "c"]), labels))
    storage.write_collection(TARGET, enriched.schema, [enriched])  # part-0.parquet, no manifest


def upgrade(*args: str):
    return CliRunner().invoke(main, ["upgrade", *args], catch_exceptions=False)


def test_a_storage_root_of_the_previous_release_is_upgraded_and_runs_again(
        storage, definitions_dir):
    table = write_blobs(storage)
    write_previous_release(storage, table)
    append_blobs(storage, "points", 20, start=500)  # a file added since
    (definitions_dir / "blobs.json").write_text(json.dumps(definition()))
    spec = load_definitions(definitions_dir)[0][0].spec

    dry = upgrade("--dry-run")
    assert dry.exit_code == 0, dry.output
    assert sorted(line.split()[3].rsplit("/", 1)[1] for line in dry.output.splitlines()
                  if " would move " in line) == FLAT
    assert f"enriched collection {TARGET!r} has no owner manifest" in dry.output
    assert storage.list_dir("assets", "blobs") == FLAT

    done = upgrade()
    assert done.exit_code == 0 and f"{len(FLAT)} files moved" in done.output, done.output
    assert storage.list_dir("assets", "blobs") == ["legacy"]
    assert storage.list_dir("assets", "blobs", "legacy") == FLAT
    assert "0 files moved" in upgrade().output

    # the next full run, as Dagster gives it the targets its last enrichment wrote (the previous release's
    # target_collections metadata: factory.previous_enrichment_targets, tested through Dagster in test_ownership)
    fit_id = "newrun"
    ctx = plain_context(storage, spec, fit_id)
    ctx.previously_enriched = frozenset({TARGET})
    run_plain(storage, spec, fit_id, ctx=ctx)
    assert layout.read_current(storage, spec).fit_id == fit_id
    owner = ownership.read_owner(storage, TARGET)
    assert (owner.cluster_name, sorted(owner.files), owner.fit_id) == (
        "blobs", ["part-0.parquet", "part-500.parquet"], fit_id)
    enriched = storage.collection_dataset(TARGET).to_table(columns=["document_id", "cluster_id"])
    assert enriched.num_rows == 140 and len(pc.unique(enriched.column("document_id"))) == 140
    assert storage.list_dir("assets", "blobs", "legacy") == FLAT  # moved aside, never deleted
    assert storage.exists("artifacts", "blobs", "oldrun", "centroids.parquet")


def test_a_model_pickled_by_other_code_is_refitted_not_loaded(storage, definitions_dir):
    table = write_blobs(storage)
    X = np.stack(table.column("vec").to_numpy(zero_copy_only=False)).astype(np.float32)
    (definitions_dir / "blobs.json").write_text(json.dumps(definition()))
    spec = load_definitions(definitions_dir)[0][0].spec
    storage.write_bytes(pickle.dumps(ClusterModel("kmeans", {"n_clusters": 3}).fit(X)),
                        *layout.fit_parts(spec, "oldfit", layout.MODEL))
    with pytest.raises(LineageError, match=r"fit oldfit of 'blobs': .*model.pkl was written by another version.*"
                                           r"`cluster-assets run blobs`"):
        load_fit(storage, spec, "oldfit")
    storage.write_bytes(b"\x80\x04\x95garbage", *layout.fit_parts(spec, "broken", layout.MODEL))
    with pytest.raises(LineageError, match="refit with a full run"):
        load_fit(storage, spec, "broken")
