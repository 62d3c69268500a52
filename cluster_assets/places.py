"""Where a checkout keeps its storage root and its definitions folder, and the variables that move them.

No Dagster here: the commands that only read storage (``collections``, ``artifacts``) start without it.
"""

from __future__ import annotations

import os
from pathlib import Path

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
