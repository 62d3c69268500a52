"""One cluster definition -> its Dagster assets: ``<cluster_name>/<stage>`` in group ``<cluster_name>``.

Each asset body calls one stage function and turns its ``StageResult`` into a
``MaterializeResult``. Assets are built inside ``build_cluster_assets``'s own
call so that every closure sees its own definition.
"""


import json
import logging
import warnings
from collections.abc import Sequence

import dagster as dg

from cluster_assets import checks, enrich_runs, lineage, partitions
from cluster_assets.enrich_runs import EnrichConfig
from cluster_assets.profiling import peak_rss
from cluster_assets.spec import ClusterDefinition, LoadedDefinition
from cluster_assets.spec.versions import code_version
from cluster_assets.stages import STAGES, Stage, StageResult, layout
from cluster_assets.storage import Storage

def collection_key(collection_id: str) -> dg.AssetKey:
    return dg.AssetKey(["collections", collection_id])


def collection_spec(collection_id: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=collection_key(collection_id),
        description=f"Source collection {collection_id!r}: a Parquet dataset under <storage>/collections/.",
        group_name="collections",
        kinds={"parquet"},
    )


def metadata_values(values: dict) -> dict[str, dg.MetadataValue]:
    metadata: dict[str, dg.MetadataValue] = {}
    for key, value in values.items():
        if isinstance(value, bool) or value is None:
            metadata[key] = dg.MetadataValue.text(str(value))
        elif isinstance(value, int):
            metadata[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            metadata[key] = dg.MetadataValue.float(value)
        elif isinstance(value, (dict, list)):
            metadata[key] = dg.MetadataValue.json(value)
        else:
            metadata[key] = dg.MetadataValue.text(str(value))
    return metadata


def result_metadata(result: StageResult, context: dg.AssetExecutionContext) -> dict[str, dg.MetadataValue]:
    metadata = metadata_values(result.metadata)
    for key, path in result.paths.items():
        metadata[key] = dg.MetadataValue.path(path)
    for key, text in result.markdown.items():
        metadata[key] = dg.MetadataValue.md(text)
    if result.row_count is not None:
        metadata["dagster/row_count"] = dg.MetadataValue.int(result.row_count)
    if result.uri:
        metadata["dagster/uri"] = dg.MetadataValue.path(result.uri)
    for warning in result.warnings:
        context.log.warning(warning)
    return metadata


def to_materialize_result(result: StageResult, context: dg.AssetExecutionContext,
                          check_results: list[dg.AssetCheckResult] | None = None) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=result_metadata(result, context), check_results=check_results or [])


def per_file_result(result: StageResult, context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """One materialization per file: the step's figures plus that file's own (rows, source file)."""
    step = result_metadata(result, context)
    step.pop("dagster/row_count", None)
    for partition in context.partition_keys:
        own = result.per_partition.get(partition)
        if own:
            context.add_asset_metadata(metadata_values(own), partition_key=partition)
    return dg.MaterializeResult(metadata=step)


def build_cluster_assets(spec: ClusterDefinition, source_file: str = "") -> list[dg.AssetsDefinition]:
    """One asset per declared stage: the per-file stages partitioned by the definition's files."""
    prefix = spec.cluster_name
    version = code_version(spec)
    files = partitions.files_partitions(spec)
    details = {
        "algorithm": spec.algorithm,
        "targets": ", ".join(sorted(set(spec.target_collection_ids().values()))),
    }

    def make(stage: Stage) -> dg.AssetsDefinition:
        description = stage.description.format(**details)
        if spec.description:
            description += f"\n\n{spec.description}"
        deps = [dg.AssetKey([prefix, name]) for name in stage.reads]
        if stage.reads_sources:
            deps += [collection_key(c) for c in spec.source_collection_ids]
        if stage.name == "enriched_collection" and spec.taxonomy:
            deps.append(taxonomy_key(spec.taxonomy.name))

        @dg.asset(
            key=dg.AssetKey([prefix, stage.name]),
            deps=deps,
            group_name=spec.group_name,
            description=description,
            kinds={"python", "parquet"},
            tags={"cluster_assets/stage": stage.name},
            op_tags={"cluster_assets/cluster": spec.group_name},
            metadata={"definition_file": source_file, "algorithm": spec.algorithm},
            code_version=version,
            required_resource_keys={"storage", *stage.resources},
            partitions_def=files if stage.per_file else None,
            # one run covers a range of files (or all of them): the step gets every key at once
            backfill_policy=dg.BackfillPolicy.single_run(),
            # steps of one definition never overlap, whichever run they belong to
            pool=pool_name(spec),
            check_specs=checks.check_specs(spec) if stage.name == checks.CHECKED_STAGE else None,
            # the reference's enrich request (run_id, target_collection_id, fields) as run config
            config_schema=EnrichConfig.to_config_schema() if stage.name == enrich_runs.STAGE else None,
        )
        def stage_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            storage = context.resources.storage.get()
            ctx = lineage.stage_context(context, spec, stage.name, storage, version)
            if "llm" in stage.resources:
                ctx.labeler = context.resources.llm.labeler(spec, storage)
            if stage.name == enrich_runs.STAGE:
                ctx.previously_enriched = frozenset(previous_enrichment_targets(context))
                lineage.apply_enrich_request(context, ctx, EnrichConfig(**(context.op_execution_context.op_config
                                                                           or {})))
            if "engine" in stage.resources:
                ctx.engine = context.resources.engine.get()
            with peak_rss() as memory:
                result = stage.run(ctx)
            result.metadata.update(memory)
            if stage.per_file:
                return per_file_result(result, context)
            results = []
            if stage.name == checks.CHECKED_STAGE and spec.checks.enabled:
                current = layout.read_current(storage, spec)
                previous = current.fit_id if current and current.fit_id != ctx.fit_id else \
                    (current.previous_fit_id if current else None)
                results = checks.evaluate(storage, spec, ctx.fit_id, previous)
                if checks.blocked(spec, results):
                    context.log.error(f"fit {ctx.fit_id} failed a blocking check: it does not become current")
                    result.commit = None
            if result.commit:
                result.commit()
            return to_materialize_result(result, context, results)

        return stage_asset

    with warnings.catch_warnings():
        # backfill_policy is marked beta; single-run backfills are what `--partition-range` needs
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [make(stage) for stage in STAGES]


def previous_enrichment_targets(context: dg.AssetExecutionContext) -> set[str]:
    """The collections the asset's latest materialization wrote (its ``target_collections`` metadata):
    a target without an owner manifest is adopted only if it is one of these (written before manifests)."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return set()
    value = materialization.metadata.get("target_collections")
    data = getattr(value, "value", value)
    return set(data) if isinstance(data, dict) else set()


def pool_name(spec: ClusterDefinition) -> str:
    return f"cluster_assets/{spec.group_name}"


def taxonomy_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["taxonomies", name])


def taxonomy_specs(loaded: Sequence[LoadedDefinition]) -> list[dg.AssetSpec]:
    """``taxonomies/<name>``: every taxonomy in storage or named by a definition, downstream of the labels
    of the clusters promoted into it (``cluster-assets taxonomy promote`` records its materializations)."""
    from cluster_assets.places import default_storage_root
    from cluster_assets.taxonomy import stored_taxonomy_sources

    names = {item.spec.taxonomy.name for item in loaded if item.spec.taxonomy}
    try:
        stored = stored_taxonomy_sources(Storage(default_storage_root()))
    except Exception as exc:  # an unreachable storage must not stop the code location from loading
        logging.getLogger("cluster_assets").warning("taxonomies not listed: %s", exc)
        stored = {}
    defined = {item.spec.cluster_name for item in loaded}
    return [
        dg.AssetSpec(
            key=taxonomy_key(name),
            deps=[dg.AssetKey([c, "labels"]) for c in stored.get(name, []) if c in defined],
            description=f"Taxonomy {name!r}: clusters promoted to lasting nodes under <storage>/taxonomies/{name}/. "
                        "Updated by `cluster-assets taxonomy promote`.",
            group_name="taxonomies",
            kinds={"parquet"},
        )
        for name in sorted(names | set(stored))
    ]

