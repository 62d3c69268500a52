"""Growing collections: files as partitions, new files assigned with the current fit, refits that switch at once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from cluster_assets import ownership
from cluster_assets.cli import main
from cluster_assets.loader import build_defs
from cluster_assets.runs import run_full
from cluster_assets.spec import parse_definition
from cluster_assets.stages import layout, plain_context, run_plain
from cluster_assets.stages.enrich import run_enrichment
from cluster_assets.stages.model import stable_ids
from cluster_assets.storage import CollectionError, Storage
from cluster_assets_tests.conftest import materialize_group, write_definition
from cluster_assets_tests.small import append_blobs, blobs_table, definition, write_blobs


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


# --- collections append ---------------------------------------------------------------------------

def test_collections_append_adds_one_file_and_refuses_what_would_break_a_partition(tmp_path, storage):
    write_blobs(storage)
    before = hashes(Path(storage.root) / "collections" / "points")
    rows = blobs_table(per_blob=2, start=500).to_pylist()
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text("\n".join(json.dumps({**r, "vec": [float(v) for v in r["vec"]]}) for r in rows))
    runner = CliRunner()
    done = runner.invoke(main, ["collections", "append", "points", str(jsonl), "--allow-small"])
    assert done.exit_code == 0, done.output
    assert "appended 6 documents to collection 'points'" in done.output
    after = hashes(Path(storage.root) / "collections" / "points")
    assert set(after) == {"part-0.parquet", "more.parquet"} and after["part-0.parquet"] == before["part-0.parquet"]
    again = runner.invoke(main, ["collections", "append", "points", str(jsonl), "--allow-small"])
    assert again.exit_code != 0 and "already has a file more.parquet" in again.output
    bad = runner.invoke(main, ["collections", "append", "points", str(jsonl), "--name", "a...b.parquet",
                               "--allow-small"])
    assert bad.exit_code != 0 and "cannot take '...' in a partition key" in bad.output
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"document_id": "x", "text": 5, "vec": [1.0, 2.0, 3.0, 4.0]}))
    mismatch = runner.invoke(main, ["collections", "append", "points", str(other), "--allow-small"])
    assert mismatch.exit_code != 0 and "column 'text' is int64 but string in collection 'points'" in mismatch.output
    assert hashes(Path(storage.root) / "collections" / "points") == after  # nothing written by the refusals


# --- stable cluster ids and refits --------------------------------------------------------------------

def test_stable_ids_follow_the_previous_fit_and_give_new_clusters_unused_ids():
    rng = np.random.default_rng(0)
    centres = {0: np.array([1.0, 0, 0, 0]), 1: np.array([0, 1.0, 0, 0]), 2: np.array([0, 0, 1.0, 0])}
    X = np.vstack([rng.normal(c, 0.01, (20, 4)) for c in (centres[2], centres[0], [0, 0, 0, 1.0])])
    labels = np.repeat([0, 1, 2], 20)  # the new fit's own numbering: 0 is the old 2, 1 the old 0, 2 is new
    mapping = stable_ids(labels, X, centres)
    assert mapping == {0: 2, 1: 0, 2: 1}  # old 1 is gone: the new cluster takes the first unused id
    assert stable_ids(labels, X, None) == {0: 0, 1: 1, 2: 2}


def test_a_refit_stages_the_new_files_and_switches_the_target_at_once(storage):
    write_blobs(storage)
    append_blobs(storage, "points", 30, start=1000)
    spec = parse_definition(definition(enrichment={"target_collection_id": "out"}))
    run_plain(storage, spec, "fit-a")
    target = Path(storage.root) / "collections" / "out"
    first = hashes(target)
    assert ownership.read_owner(storage, "out").fit_id == "fit-a"

    # A refit: its enrichment of the first file alone must not change what readers see.
    ctx = plain_context(storage, spec, "fit-b")
    run_plain(storage, spec, ctx=ctx, until="labels")
    files = list(ctx.partitions)
    ctx.partitions = files[:1]
    result = run_enrichment(ctx)
    assert hashes(target) == first
    assert result.metadata["staged_targets"] == ["out"]
    assert ownership.read_owner(storage, "out").fit_id == "fit-a"
    # The last file: every file of the new fit moves into place together.
    ctx.partitions = files[1:]
    run_enrichment(ctx)
    assert set(hashes(target)) == set(first)
    assert ownership.read_owner(storage, "out").fit_id == "fit-b"
    assert not any(p.name.startswith("_fit-") for p in target.iterdir())
    assert layout.read_current(storage, spec).previous_fit_id == "fit-a"



def test_a_map_redrawn_after_reducing_one_file_draws_every_file_in_the_png_and_the_html(storage):
    """The run's members artifact holds the one file it reduced; its map (PNG and HTML alike) is the fit's."""
    import re

    from cluster_assets.stages.map import run_cluster_map
    from cluster_assets.stages.reduce import run_reduced_coords

    write_blobs(storage)
    append_blobs(storage, "points", 30, start=1000)
    spec = parse_definition(definition())
    run_plain(storage, spec, "fit-a")
    ctx = plain_context(storage, spec, "redraw")
    ctx.sample_id = ctx.fit_id = "fit-a"
    ctx.partitions = ctx.partitions[1:]
    run_reduced_coords(ctx)
    assert storage.read_table(*layout.artifact_parts(spec, "redraw", layout.MEMBERS_ARTIFACT)).num_rows == 30
    drawn = run_cluster_map(ctx)
    everyone = sum(storage.parquet_file(*storage.collection_parts("points"), Path(p).name).metadata.num_rows
                   for p in ctx.all_partitions)
    assert drawn.row_count == everyone > 30
    page = storage.read_bytes(*layout.artifact_parts(spec, "redraw", layout.MAP_HTML_ARTIFACT)).decode()
    data = json.loads(re.search(r'<script id="map-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert data["n"] == everyone

# --- faults: bad files, retries ----------------------------------------------------------------

def test_a_file_gone_between_listing_and_reading_is_named(storage):
    write_blobs(storage)
    storage.fs.delete_file(storage.path("collections", "points", "part-0.parquet"))
    with pytest.raises(CollectionError, match=r"^collection 'points', file part-0.parquet is gone"):
        list(storage.iter_file("points", "part-0.parquet", ["document_id"]))


def test_a_bad_new_file_fails_its_run_naming_it_and_a_retry_finishes(definitions_dir, storage):
    write_blobs(storage)
    write_definition(definitions_dir, definition())
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_group(definitions_dir, "blobs", instance).success
    enriched = Path(storage.root) / "collections" / "points_blobs_enriched"
    before = hashes(enriched)
    # a new file with another schema (no feature column) and a good one
    storage.write_table(pa.table({"document_id": ["bad-0"], "text": ["no vector"]}),
                        "collections", "points", "part-1000.parquet")
    append_blobs(storage, "points", 3, start=2000)
    defs = build_defs(definitions_dir)
    spec = parse_definition(definition())
    per_file = ["assignments", "reduced_coords", "enriched_collection"]
    failed = run_full(defs, spec, instance, storage, stages=per_file)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.is_step_failure]
    assert "collection 'points', file part-1000.parquet has no column 'vec'" in str(failure.step_failure_data.error.cause.message)
    assert hashes(enriched) == before  # what was enriched before is whole
    # the file is repaired: the same run again finishes the job with the current fit
    storage.write_table(blobs_table(per_blob=1, start=1000, centers=(3.0,)), "collections", "points",
                        "part-1000.parquet")
    retried = run_full(defs, spec, instance, storage, stages=per_file)
    assert retried.success
    assert set(hashes(enriched)) == {"part-0.parquet", "part-1000.parquet", "part-2000.parquet"}
    assert hashes(enriched)["part-0.parquet"] == before["part-0.parquet"]
    fit = layout.read_current(storage, spec).fit_id
    assert {e.materialization.metadata["cluster_assets/fit_id"].value
            for e in retried.get_asset_materialization_events()} == {fit}


class OtherRunWinsTheRace:
    """A real SQLite instance, where another process registers the first new file between Dagster's check of
    which keys exist and its insert (two runs started at once over the same new files)."""

    def __init__(self, real: dg.DagsterInstance):
        self.real, self.raced = real, False

    def __getattr__(self, name):
        return getattr(self.real, name)

    def add_dynamic_partitions(self, name, keys):
        if not self.raced:
            from dagster._core.storage.event_log.schema import DynamicPartitionsTable

            self.raced = True
            self.real.add_dynamic_partitions(name, keys[:1])  # the other run's registration
            with self.real.event_log_storage.index_connection() as conn:  # Dagster's insert, after its check
                conn.execute(DynamicPartitionsTable.insert(), [{"partitions_def_name": name, "partition": keys[0]}])
        return self.real.add_dynamic_partitions(name, keys)


def test_files_another_run_registers_at_the_same_moment_are_not_an_error(tmp_path):
    from sqlalchemy.exc import IntegrityError

    from cluster_assets.partitions import add_partitions

    (tmp_path / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    keys = [f"points/part-{i}.parquet" for i in range(3)]
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        with pytest.raises(IntegrityError):  # what the second `cluster-assets run` died of
            OtherRunWinsTheRace(instance).add_dynamic_partitions("race__files", keys)
        add_partitions(OtherRunWinsTheRace(instance), "blobs__files", keys)
        assert instance.get_dynamic_partitions("blobs__files") == keys
