"""Shared fixtures: a temporary storage root, the demo collections, a temporary Dagster home."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from cluster_assets.demo import write_demo_collections
from cluster_assets.loader import build_defs
from cluster_assets.storage import Storage

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def storage_root(tmp_path, monkeypatch) -> str:
    root = tmp_path / "storage"
    root.mkdir()
    monkeypatch.setenv("CLUSTER_ASSETS_STORAGE", str(root))
    return str(root)


@pytest.fixture
def storage(storage_root) -> Storage:
    return Storage(storage_root)


@pytest.fixture
def demo_storage(storage) -> Storage:
    write_demo_collections(storage)
    return storage


@pytest.fixture
def definitions_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "clusters"
    folder.mkdir()
    monkeypatch.setenv("CLUSTER_ASSETS_DEFINITIONS_DIR", str(folder))
    return folder


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def write_definition(folder: Path, body: dict, name: str | None = None) -> Path:
    path = folder / (name or f"{body['cluster_name']}.json")
    path.write_text(json.dumps(body))
    return path


def write_table(storage: Storage, collection_id: str, table: pa.Table) -> None:
    storage.write_collection(collection_id, table.schema, [table])


def materialize_group(definitions_dir: Path, group: str, instance: dg.DagsterInstance | None = None,
                      raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Load the definitions folder as Dagster would and materialize one definition's group."""
    defs = build_defs(definitions_dir)
    return dg.materialize(
        [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],
        resources=defs.resources,
        selection=dg.AssetSelection.groups(group),
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )
