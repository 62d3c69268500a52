"""Dagster resources: where collections and artifacts live."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from cluster_assets.storage import Storage

STORAGE_ENV = "CLUSTER_ASSETS_STORAGE"
DEFINITIONS_ENV = "CLUSTER_ASSETS_DEFINITIONS_DIR"


def project_root() -> Path:
    """The checkout this package runs from (editable install), else the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "workspace.yaml").exists() else Path.cwd()


def default_storage_root() -> str:
    return os.environ.get(STORAGE_ENV) or str(project_root() / ".cluster_assets")


def default_definitions_dir() -> Path:
    return Path(os.environ.get(DEFINITIONS_ENV) or project_root() / "clusters")


class StorageResource(dg.ConfigurableResource):
    """The storage root: a local folder or ``s3://bucket/prefix`` (credentials from the usual AWS variables)."""

    root: str

    def get(self) -> Storage:
        return Storage(self.root)


def storage_resource() -> StorageResource:
    if os.environ.get(STORAGE_ENV):
        return StorageResource(root=dg.EnvVar(STORAGE_ENV))
    return StorageResource(root=default_storage_root())
