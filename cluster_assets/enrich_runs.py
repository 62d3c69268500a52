"""Enrichment from a chosen past run into a chosen target: the reference's enrich request, as run config.

The reference's body ``{"run_id", "target_collection_id", "fields"}`` is the run config of
``<cluster>/enriched_collection`` (``EnrichConfig``): ``cluster-assets enrich`` submits it as one
Dagster run over every file, and a program submits the same config through GraphQL. The run id
is any run ``cluster-assets executions --json`` lists: a full run (its fit id is its run id) or a
run that assigned new files with an earlier fit (the ``cluster_assets/fit_id`` of its
materializations). Everything is checked before a file is written.
"""

from __future__ import annotations

import dagster as dg

from cluster_assets.spec import ClusterDefinition, parse_definition
from cluster_assets.stages import layout
from cluster_assets.stages.outputs import fit_files
from cluster_assets.storage import Storage

STAGE = "enriched_collection"


class EnrichConfig(dg.Config):
    """The reference's enrich request body; every field optional (default: the current fit, the definition's
    target and fields)."""

    run_id: str | None = None
    target_collection_id: str | None = None
    fields: list[str] | None = None

    def is_default(self) -> bool:
        return self.run_id is None and self.target_collection_id is None and self.fields is None


class EnrichRequestError(ValueError):
    """A run that cannot be enriched from, or a target or field the definition refuses."""


def fit_of_run(instance: dg.DagsterInstance, spec: ClusterDefinition, run_id: str) -> str:
    """The fit a run of ``spec`` made (a full run) or used (a run over new files)."""
    name = spec.cluster_name
    if instance.get_run_by_id(run_id) is None:
        raise EnrichRequestError(f"run {run_id!r} is not in the Dagster instance: `cluster-assets executions "
                                 f"{name} --json` lists the runs of {name!r}")
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    fits = []
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is None or materialization.asset_key.path[0] != name:
            continue
        if materialization.asset_key.path[-1] == "model":
            return run_id
        value = materialization.metadata.get(layout.FIT_ID_KEY)
        if value is not None:
            fits.append(str(getattr(value, "value", value)))
    if not fits:
        raise EnrichRequestError(f"run {run_id!r} fitted no model of {name!r} and assigned no file with one: "
                                 f"give a run that `cluster-assets executions {name} --json` lists with assignments")
    return fits[0]


def assigned_partitions(storage: Storage, spec: ClusterDefinition, fit_id: str) -> list[str]:
    """``<collection_id>/<file name>`` of every file of the definition's sources the fit assigned."""
    return [p for p in fit_files(storage, spec.cluster_name, fit_id)
            if layout.split_partition(p)[0] in spec.source_collection_ids]


def check_fit_outputs(storage: Storage, spec: ClusterDefinition, fit_id: str, run_id: str) -> list[str]:
    """The files assigned under ``fit_id``; an error naming the missing output when the fit's outputs are gone."""
    labels = layout.fit_parts(spec, fit_id, layout.LABELS)
    if not storage.exists(*labels):
        raise EnrichRequestError(f"run {run_id!r} of {spec.cluster_name!r}: the outputs of its fit {fit_id} are "
                                 f"gone ({storage.uri(*labels)} does not exist); nothing was written")
    files = assigned_partitions(storage, spec, fit_id)
    if not files:
        raise EnrichRequestError(f"run {run_id!r} of {spec.cluster_name!r}: fit {fit_id} has no assigned files "
                                 f"under {storage.uri(*layout.cluster_parts(spec, 'fits', fit_id, 'files'))}; "
                                 "nothing was written")
    return files


def requested_spec(spec: ClusterDefinition, config: EnrichConfig) -> ClusterDefinition:
    """The definition with the request's target and fields, validated as a definition would be."""
    if config.target_collection_id is None and config.fields is None:
        return spec
    enrichment = spec.enrichment.model_dump(exclude_none=True)
    if config.target_collection_id is not None:
        enrichment["target_collection_id"] = config.target_collection_id
    if config.fields is not None:
        enrichment["fields"] = list(config.fields)
    body = {**spec.model_dump(mode="json", by_alias=False, exclude_none=True), "enrichment": enrichment}
    try:
        return parse_definition(body)
    except ValueError as exc:
        raise EnrichRequestError(f"enrich request for {spec.cluster_name!r}: {exc}") from None


def run_config(spec: ClusterDefinition, defs: dg.Definitions, config: EnrichConfig) -> dict:
    """Run config that gives ``config`` to ``<cluster>/enriched_collection`` (the form GraphQL submits too)."""
    op = defs.resolve_assets_def(dg.AssetKey([spec.cluster_name, STAGE])).op.name
    return {"ops": {op: {"config": config.model_dump(exclude_none=True)}}}


def parse_fields(text: str | None) -> list[str] | None:
    return None if text is None else [f.strip() for f in text.split(",") if f.strip()]
