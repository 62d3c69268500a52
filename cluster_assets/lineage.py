"""Which sample and fit a stage works in, from the run it is part of.

A stage reads an upstream from its own run when that upstream is materialized in the run,
otherwise from the latest complete fit (``assets/<cluster>/current.json``, written when a
fit's labels are) or, before any fit is complete, the upstream's latest materialization.
So two runs of one definition never read each other's half-written state, and a re-run
of one stage never mixes two fits.
"""

from __future__ import annotations

import dagster as dg

from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import BY_NAME, StageContext, layout
from cluster_assets.stages.sample import source_files
from cluster_assets.storage import Storage


def in_run(context: dg.AssetExecutionContext, key: dg.AssetKey) -> bool:
    selection = context.dagster_run.asset_selection
    return selection is None or key in selection


def latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey, name: str) -> str | None:
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(name)
    return getattr(value, "value", value)


def sample_id(context: dg.AssetExecutionContext, spec: ClusterDefinition, stage: str) -> str | None:
    key = lambda s: dg.AssetKey([spec.cluster_name, s])  # noqa: E731
    if in_run(context, key("sample")):
        return context.run_id
    if stage == "model" and not in_run(context, key("embeddings")):
        return latest_metadata(context, key("embeddings"), layout.SAMPLE_ID_KEY)
    return latest_metadata(context, key("sample"), layout.SAMPLE_ID_KEY)


def fit_id(context: dg.AssetExecutionContext, spec: ClusterDefinition, storage: Storage) -> str | None:
    if in_run(context, dg.AssetKey([spec.cluster_name, "model"])):
        return context.run_id
    current = layout.read_current(storage, spec)
    if current is not None:
        return current.fit_id
    return latest_metadata(context, dg.AssetKey([spec.cluster_name, "model"]), layout.FIT_ID_KEY)


def stage_context(context: dg.AssetExecutionContext, spec: ClusterDefinition, stage: str, storage: Storage,
                  code_version: str) -> StageContext:
    declared = BY_NAME[stage]
    ctx = StageContext(storage=storage, spec=spec, run_id=context.run_id, code_version=code_version)
    if stage in ("embeddings", "model"):
        ctx.sample_id = sample_id(context, spec, stage)
    elif stage != "sample":
        ctx.fit_id = fit_id(context, spec, storage)
    if declared.per_file:
        ctx.partitions = list(context.partition_keys)
    if stage in ("labels", "enriched_collection", "cluster_map"):
        ctx.all_partitions = list(source_files(storage, spec))
    return ctx


def apply_enrich_request(context: dg.AssetExecutionContext, ctx: StageContext, config) -> None:
    """An enrich request (``enrich_runs.EnrichConfig``): the fit of the named run, over the files it assigned,
    into the requested target with the requested fields; checked whole before anything is written."""
    from cluster_assets import enrich_runs

    if config.run_id is not None:
        ctx.fit_id = enrich_runs.fit_of_run(context.instance, ctx.spec, config.run_id)
        assigned = enrich_runs.check_fit_outputs(ctx.storage, ctx.spec, ctx.fit_id, config.run_id)
        skipped = [p for p in ctx.partitions if p not in assigned]
        if skipped:
            context.log.warning(f"fit {ctx.fit_id} assigned no documents of {len(skipped)} file(s) "
                                f"(e.g. {skipped[0]}): not enriched")
        ctx.partitions = [p for p in ctx.partitions if p in assigned]
        ctx.all_partitions = assigned
    ctx.spec = enrich_runs.requested_spec(ctx.spec, config)
