"""The definitions folder -> one ``dg.Definitions`` holding every valid definition's assets.

A broken definition file is skipped and logged with its file and field; the
others load as usual.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg

from cluster_assets import factory, triggers, webhooks
from cluster_assets.resources import default_definitions_dir, engine_resource, llm_resource, storage_resource
from cluster_assets.spec import load_definitions

logger = logging.getLogger("cluster_assets")


def build_defs(definitions_dir: Path | None = None) -> dg.Definitions:
    folder = definitions_dir or default_definitions_dir()
    loaded, problems = load_definitions(folder)
    for problem in problems:
        logger.error("skipping cluster definition: %s", problem)
    assets, collections = factory.build_definitions(loaded)
    specs = [item.spec for item in loaded]
    schedules, sensors = triggers.build_all_triggers(specs)
    return dg.Definitions(
        assets=[*collections, *assets],
        schedules=schedules,
        sensors=[*sensors, *webhooks.build_webhook_sensors(specs)],
        resources={"storage": storage_resource(), "llm": llm_resource(), "engine": engine_resource()},
        # One process for the whole run: each stage is already vectorised, and the multiprocess
        # executor would pay the heavy imports (scikit-learn, UMAP's numba kernels) once per step.
        executor=dg.in_process_executor,
        metadata={
            "definitions_dir": str(folder),
            "definition_errors": dg.MetadataValue.json([str(p) for p in problems]),
        },
    )
