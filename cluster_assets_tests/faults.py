"""Per-file functions that misbehave on purpose, importable by Ray's workers (tests only)."""

from __future__ import annotations

import os
from pathlib import Path

from cluster_assets.stages.assign import assign_file


def assign_dying_once(storage, spec, fit_id, partition, victim: str, marker_dir: str):
    """``assign_file``, but the first attempt at ``victim`` kills its own worker process mid-task."""
    attempts = Path(marker_dir) / "attempts"
    if partition == victim:
        with attempts.open("a") as f:
            f.write(f"{os.getpid()}\n")
        if len(attempts.read_text().split()) == 1:
            os._exit(1)
    return assign_file(storage, spec, fit_id, partition)
