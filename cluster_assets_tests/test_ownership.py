"""Nothing a definition does destroys data it does not own: clashing enrichment targets are refused at
``definitions validate`` and at code-location load, the rest at run time; a definition's own earlier
target (written before owner manifests existed) is adopted through its last materialization."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
from click.testing import CliRunner

from cluster_assets import ownership
from cluster_assets.cli import main
from cluster_assets.loader import build_defs
from cluster_assets.spec import load_definitions
from cluster_assets.stages import layout
from cluster_assets_tests.conftest import materialize_group, write_definition
from cluster_assets_tests.small import blobs_table, definition, write_blobs


def validate(folder: Path, storage_root: str):
    return CliRunner().invoke(main, ["definitions", "validate", str(folder), "--storage", storage_root],
                              catch_exceptions=False)


def enrich(folder: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """Materialize only ``blobs/enriched_collection`` (its upstream outputs are in storage)."""
    from cluster_assets.places import default_storage_root
    from cluster_assets.runs import run_full
    from cluster_assets.storage import Storage

    spec = next(d.spec for d in load_definitions(folder)[0] if d.spec.cluster_name == "blobs")
    return run_full(build_defs(folder), spec, instance, Storage(default_storage_root()),
                    stages=["enriched_collection"])


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_two_definitions_over_one_source_get_their_own_default_targets(definitions_dir, storage_root):
    write_definition(definitions_dir, definition("first"))
    write_definition(definitions_dir, definition("second"))
    loaded, problems = load_definitions(definitions_dir)
    assert problems == []
    assert [d.spec.target_collection_ids() for d in loaded] == [
        {"points": "points_first_enriched"}, {"points": "points_second_enriched"}]


def test_two_definitions_naming_one_target_are_both_refused(definitions_dir, storage_root):
    write_definition(definitions_dir, definition("first", enrichment={"target_collection_id": "shared"}))
    write_definition(definitions_dir, definition("second", enrichment={"target_collection_id": "shared"}))
    write_definition(definitions_dir, definition("third"))
    result = validate(definitions_dir, storage_root)
    assert result.exit_code == 1
    first, second = definitions_dir / "first.json", definitions_dir / "second.json"
    assert result.stdout.splitlines() == [
        f"{first}: enrichment.target_collection_id: definition 'first' writes enrichment target collection "
        f"'shared', as does definition 'second' ({second}): a collection has one writer, so every definition "
        "naming it is refused; give each definition its own target_collection_id",
        f"{second}: enrichment.target_collection_id: definition 'second' writes enrichment target collection "
        f"'shared', as does definition 'first' ({first}): a collection has one writer, so every definition "
        "naming it is refused; give each definition its own target_collection_id",
        "1 definition valid; 2 problems in 2 files",
    ]
    # the code location agrees: only the third definition's assets
    groups = {key.path[0] for key in build_defs(definitions_dir).resolve_asset_graph().get_all_asset_keys()}
    assert "third" in groups and not {"first", "second"} & groups


def test_a_target_that_is_another_definitions_imported_source_is_refused(definitions_dir, storage, storage_root):
    write_blobs(storage, "points")
    write_blobs(storage, "products", seed=4)  # imported by a user; "reader" clusters it
    write_definition(definitions_dir, definition("reader", collection="products"))
    write_definition(definitions_dir, definition("writer", enrichment={"target_collection_id": "products"}))
    result = validate(definitions_dir, storage_root)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        f"{definitions_dir / 'writer.json'}: enrichment.target_collection_id: definition 'writer' would overwrite "
        f"collection 'products': it is a source of definition 'reader' ({definitions_dir / 'reader.json'}) and a "
        "collection it did not write; choose another target_collection_id")
    assert result.stdout.splitlines()[-1] == "1 definition valid; 1 problem in 1 file"
    groups = {key.path[0] for key in build_defs(definitions_dir).resolve_asset_graph().get_all_asset_keys()}
    assert "reader" in groups and "writer" not in groups


def test_reading_another_definitions_enriched_output_stays_allowed(definitions_dir, storage, storage_root):
    write_blobs(storage, "points")
    write_definition(definitions_dir, definition("upstream", enrichment={"target_collection_id": "chained"}))
    write_definition(definitions_dir, definition("downstream", collection="chained"))
    assert validate(definitions_dir, storage_root).exit_code == 0  # "chained" not written yet
    # what upstream's enrichment leaves: the collection and its owner manifest
    write_blobs(storage, "chained")
    ownership.claim(storage, "chained", ownership.Owner("upstream", ("part-0.parquet",)))
    result = validate(definitions_dir, storage_root)
    assert result.exit_code == 0, result.stdout
    assert result.stdout.strip() == "2 definitions valid"
    assert {"upstream", "downstream"} <= {
        key.path[0] for key in build_defs(definitions_dir).resolve_asset_graph().get_all_asset_keys()}


def test_a_run_refuses_a_target_it_does_not_own_and_adopts_its_own_from_before_manifests(
        definitions_dir, storage, dagster_home):
    write_blobs(storage, "points")
    write_definition(definitions_dir, definition("blobs", enrichment={"target_collection_id": "out"}))
    instance = dg.DagsterInstance.get()
    assert materialize_group(definitions_dir, "blobs", instance=instance).success
    folder = Path(storage.root) / "collections" / "out"
    # the state a run before owner manifests left: the enriched file, no manifest
    (folder / ownership.OWNER_FILE).unlink()
    pq.write_table(blobs_table(per_blob=1), folder / "user.parquet")
    before = hashes(folder)

    # another Dagster instance has no materialization of this definition pointing at "out": refused
    elsewhere = enrich(definitions_dir, dg.DagsterInstance.ephemeral())
    assert not elsewhere.success
    failure = next(e for e in elsewhere.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key.endswith("enriched_collection")
    error = failure.step_failure_data.error.cause  # Dagster's wrapper -> the exception the stage raised
    assert error.cls_name == "OwnershipError"
    assert error.message.startswith(
        "cluster_assets.ownership.OwnershipError: definition 'blobs' cannot write enrichment target collection "
        "'out': it already exists (")
    assert hashes(folder) == before

    # its own instance remembers writing "out" (metadata target_collections): adopted, the user's file kept
    assert enrich(definitions_dir, instance).success
    fit_id = layout.read_current(storage, load_definitions(definitions_dir)[0][0].spec).fit_id
    assert ownership.read_owner(storage, "out") == ownership.Owner("blobs", ("part-0.parquet",), fit_id)
    assert hashes(folder)["user.parquet"] == before["user.parquet"]
    shutil.rmtree(folder)
