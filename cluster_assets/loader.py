"""The definitions folder -> one ``dg.Definitions`` holding every valid definition's assets.

A broken definition file is skipped and logged with its file and field; the
others load as usual. ``load_buildable`` decides which files load, for the code
location and for ``cluster-assets definitions validate`` alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from cluster_assets import factory, triggers, webhooks
from cluster_assets.places import default_definitions_dir, default_storage_root
from cluster_assets.resources import engine_resource, llm_resource, storage_resource
from cluster_assets.spec import DefinitionError, LoadedDefinition, load_definitions
from cluster_assets.storage import Storage

logger = logging.getLogger("cluster_assets")


def _storage_or_none() -> Storage | None:
    """The storage root, to tell an enrichment chain from an overwrite at load (None: left to the run)."""
    try:
        return Storage(default_storage_root())
    except Exception as exc:  # noqa: BLE001 - an unreachable storage must not stop the code location from loading
        logger.warning("enrichment targets not checked against storage: %s", exc)
        return None


@dataclass
class DefinitionObjects:
    """The Dagster objects of one definition."""

    item: LoadedDefinition
    assets: list[dg.AssetsDefinition]  # the fit's checks are declared on its labels asset
    schedules: list[dg.ScheduleDefinition]
    sensors: list[dg.SensorDefinition]
    # asset keys it declares but shares with other definitions: its source collections and taxonomy
    shared_keys: set[str] = field(default_factory=set)

    def claimed(self) -> list[tuple[str, str, str]]:
        """(kind, name, field) of every name that must be unique in the code location."""
        names = [("asset key", key.to_user_string(), "cluster_name") for a in self.assets for key in a.keys]
        names += [("asset check", f"{key.asset_key.to_user_string()}:{key.name}", "checks")
                  for a in self.assets for key in a.check_keys]
        names += [("op", d.node_def.name, "cluster_name") for d in self.assets]
        names += [("schedule or sensor", d.name, "triggers") for d in [*self.schedules, *self.sensors]]
        return names


def build_objects(item: LoadedDefinition) -> DefinitionObjects:
    spec = item.spec
    schedules, sensors = triggers.build_triggers(spec)
    shared = {factory.collection_key(cid).to_user_string() for cid in spec.source_collection_ids}
    if spec.taxonomy:
        shared.add(factory.taxonomy_key(spec.taxonomy.name).to_user_string())
    return DefinitionObjects(item, factory.build_cluster_assets(spec, str(item.path)), schedules, sensors, shared)


def build_each(loaded: Sequence[LoadedDefinition]) -> tuple[list[DefinitionObjects], list[DefinitionError]]:
    """Each definition's Dagster objects; one that fails to build, or claims a name an earlier file
    (in file order) holds, is left out with one error naming both files."""
    built: list[DefinitionObjects] = []
    problems: list[DefinitionError] = []
    owners: dict[tuple[str, str], Path] = {}
    shared: dict[str, Path] = {}
    for item in loaded:
        try:
            objects = build_objects(item)
        except Exception as exc:  # the last line of defence: one definition never takes the others down
            problems.append(DefinitionError(item.path, None, f"cannot build its Dagster objects: "
                                                             f"{type(exc).__name__}: {exc}"))
            continue
        problem = _first_clash(objects, owners, shared)
        if problem:
            problems.append(problem)
            continue
        for kind, name, _ in objects.claimed():
            owners[(kind, name)] = item.path
        for key in objects.shared_keys:
            shared.setdefault(key, item.path)
        built.append(objects)
    return built, problems


def _first_clash(objects: DefinitionObjects, owners: dict[tuple[str, str], Path],
                 shared: dict[str, Path]) -> DefinitionError | None:
    path = objects.item.path
    mine: set[tuple[str, str]] = set()
    for kind, name, where in objects.claimed():
        other = owners.get((kind, name))
        if kind == "asset key":  # the spec refuses the reserved prefixes; this catches any other overlap
            other = other or shared.get(name) or (path if name in objects.shared_keys else None)
        other = other or (path if (kind, name) in mine else None)
        if other is not None:
            place = "this file" if other == path else str(other)
            return DefinitionError(path, where, f"{kind} {name!r} is already defined by {place}")
        mine.add((kind, name))
    for key in sorted(objects.shared_keys):
        if ("asset key", key) in owners:
            return DefinitionError(path, "source_collection_ids",
                                   f"asset key {key!r} is already defined by {owners[('asset key', key)]}")
    return None


def load_buildable(folder: Path, storage: Storage | None = None) -> tuple[list[DefinitionObjects], list[DefinitionError]]:
    """What the code location loads from ``folder``, and one error per file it leaves out (``storage``:
    enrichment targets are checked against what is stored too)."""
    loaded, problems = load_definitions(folder, storage)
    built, clashes = build_each(loaded)
    return built, problems + clashes


def build_defs(definitions_dir: Path | None = None) -> dg.Definitions:
    folder = definitions_dir or default_definitions_dir()
    built, problems = load_buildable(folder, _storage_or_none())
    for problem in problems:
        logger.error("skipping cluster definition: %s", problem)
    loaded = [b.item for b in built]
    specs = [item.spec for item in loaded]
    collections = {cid: factory.collection_spec(cid) for spec in specs for cid in spec.source_collection_ids}
    return dg.Definitions(
        assets=[*collections.values(), *factory.taxonomy_specs(loaded), *(a for b in built for a in b.assets)],
        schedules=[s for b in built for s in b.schedules],
        sensors=[*(s for b in built for s in b.sensors), *webhooks.build_webhook_sensors(specs)],
        resources={"storage": storage_resource(), "llm": llm_resource(), "engine": engine_resource()},
        # One process for the whole run: each stage is already vectorised, and the multiprocess
        # executor would pay the heavy imports (scikit-learn, UMAP's numba kernels) once per step.
        executor=dg.in_process_executor,
        metadata={
            "definitions_dir": str(folder),
            "definition_errors": dg.MetadataValue.json([str(p) for p in problems]),
        },
    )
