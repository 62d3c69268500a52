"""The definitions folder -> one ``dg.Definitions`` holding every valid definition's assets.

A broken definition file is skipped and logged with its file and field; the
others load as usual.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg

from cluster_assets import factory, triggers, webhooks
from cluster_assets.resources import default_definitions_dir, default_storage_root, llm_resource, storage_resource
from cluster_assets.spec import load_definitions
from cluster_assets.storage import Storage

logger = logging.getLogger("cluster_assets")


def _storage_or_none() -> Storage | None:
    """The storage root, to tell an enrichment chain from an overwrite at load (None: left to the run)."""
    try:
        return Storage(default_storage_root())
    except Exception as exc:  # noqa: BLE001 - an unreachable storage must not stop the code location from loading
        logger.warning("enrichment targets not checked against storage: %s", exc)
        return None


def build_defs(definitions_dir: Path | None = None) -> dg.Definitions:
    folder = definitions_dir or default_definitions_dir()
    loaded, problems = load_definitions(folder, _storage_or_none())
    for problem in problems:
        logger.error("skipping cluster definition: %s", problem)
    assets, collections = factory.build_definitions(loaded)
    specs = [item.spec for item in loaded]
    schedules, sensors = triggers.build_all_triggers(specs)
    return dg.Definitions(
        assets=[*collections, *assets],
        schedules=schedules,
        sensors=[*sensors, *webhooks.build_webhook_sensors(specs)],
        resources={"storage": storage_resource(), "llm": llm_resource()},
        # One process for the whole run: each stage is already vectorised, and the multiprocess
        # executor would pay the heavy imports (scikit-learn, UMAP's numba kernels) once per step.
        executor=dg.in_process_executor,
        metadata={
            "definitions_dir": str(folder),
            "definition_errors": dg.MetadataValue.json([str(p) for p in problems]),
        },
    )
