"""One cluster definition -> its Dagster assets: ``<cluster_name>/<stage>`` in group ``<cluster_name>``.

Each asset body calls one stage function and turns its ``StageResult`` into a
``MaterializeResult``. Assets are built inside ``build_cluster_assets``'s own
call so that every closure sees its own definition.
"""


import json
import logging
from collections.abc import Callable, Sequence

import dagster as dg

from cluster_assets import stages
from cluster_assets.profiling import peak_rss
from cluster_assets.spec import ClusterDefinition, LoadedDefinition
from cluster_assets.stages import StageResult
from cluster_assets.storage import Storage

STAGES = ("sample", "embeddings", "assignments", "reduced_coords", "labels", "enriched_collection", "cluster_map")

DESCRIPTIONS = {
    "sample": "Checks document ids and picks the seeded sample the models are fitted on.",
    "embeddings": "Resolves the feature addresses into one validated float32 matrix for every document.",
    "assignments": "Fits {algorithm} on the sample and assigns every document to a cluster (-1 = noise).",
    "reduced_coords": "Map coordinates (UMAP/PCA) for every document; writes the run's members.parquet.",
    "labels": "Names every cluster (label, summary, keywords); writes the run's centroids.parquet.",
    "enriched_collection": "Writes the source documents with cluster_id and label fields to {targets}.",
    "cluster_map": "The labelled map of the clusters: a PNG shown here, map.png and the interactive map.html "
                   "beside the run's artifacts.",
}


def collection_key(collection_id: str) -> dg.AssetKey:
    return dg.AssetKey(["collections", collection_id])


def collection_spec(collection_id: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=collection_key(collection_id),
        description=f"Source collection {collection_id!r}: a Parquet dataset under <storage>/collections/.",
        group_name="collections",
        kinds={"parquet"},
    )


def to_materialize_result(result: StageResult, context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    metadata: dict[str, dg.MetadataValue] = {}
    for key, value in result.metadata.items():
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
    return dg.MaterializeResult(metadata=metadata)


def build_cluster_assets(spec: ClusterDefinition, source_file: str = "") -> list[dg.AssetsDefinition]:
    prefix = spec.cluster_name
    keys = {stage: dg.AssetKey([prefix, stage]) for stage in STAGES}
    upstream = {
        "sample": [collection_key(c) for c in spec.source_collection_ids],
        "embeddings": [keys["sample"]],
        "assignments": [keys["embeddings"]],
        "reduced_coords": [keys["assignments"]],
        "labels": [keys["reduced_coords"]],
        "enriched_collection": [keys["labels"]] + ([taxonomy_key(spec.taxonomy.name)] if spec.taxonomy else []),
        "cluster_map": [keys["reduced_coords"], keys["labels"]],
    }
    tags = {"cluster_assets/cluster": spec.group_name}
    details = {
        "algorithm": spec.algorithm,
        "targets": ", ".join(sorted(set(spec.target_collection_ids().values()))),
    }

    def make(stage: str, run: Callable[[dg.AssetExecutionContext, Storage], StageResult],
             resources: frozenset[str] = frozenset()) -> dg.AssetsDefinition:
        description = DESCRIPTIONS[stage].format(**details)
        if spec.description:
            description += f"\n\n{spec.description}"

        @dg.asset(
            key=keys[stage],
            deps=upstream[stage],
            group_name=spec.group_name,
            description=description,
            kinds={"python", "parquet"},
            tags={"cluster_assets/stage": stage},
            op_tags=tags,
            metadata={"definition_file": source_file, "algorithm": spec.algorithm},
            code_version=_code_version(spec),
            required_resource_keys={"storage", *resources},
        )
        def stage_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            with peak_rss() as memory:
                result = run(context, context.resources.storage.get())
            result.metadata.update(memory)
            return to_materialize_result(result, context)

        return stage_asset

    return [
        make("sample", lambda ctx, st: stages.run_sample(st, spec)),
        make("embeddings", lambda ctx, st: stages.run_embeddings(st, spec)),
        make("assignments", lambda ctx, st: stages.run_assignments(st, spec)),
        make("reduced_coords", lambda ctx, st: stages.run_reduced_coords(st, spec, ctx.run_id)),
        make("labels", lambda ctx, st: stages.run_labels(st, spec, ctx.run_id, ctx.resources.llm.labeler(spec, st)),
             resources=frozenset({"llm"})),
        make("enriched_collection", lambda ctx, st: stages.run_enrichment(st, spec, previous_enrichment_targets(ctx))),
        make("cluster_map", lambda ctx, st: stages.run_cluster_map(st, spec, ctx.run_id)),
    ]


def previous_enrichment_targets(context: dg.AssetExecutionContext) -> set[str]:
    """The collections the asset's latest materialization wrote (its ``target_collections`` metadata)."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return set()
    value = materialization.metadata.get("target_collections")
    data = getattr(value, "value", value)
    return set(data) if isinstance(data, dict) else set()


def _code_version(spec: ClusterDefinition) -> str:
    """Changes when the definition changes, so the UI flags assets built from an older definition."""
    import hashlib

    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]


def build_definitions(loaded: Sequence[LoadedDefinition]) -> tuple[list, list[dg.AssetSpec]]:
    assets: list = []
    collections: dict[str, dg.AssetSpec] = {}
    for item in loaded:
        assets.extend(build_cluster_assets(item.spec, str(item.path)))
        for cid in item.spec.source_collection_ids:
            collections.setdefault(cid, collection_spec(cid))
    return assets, list(collections.values()) + taxonomy_specs(loaded)


def taxonomy_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["taxonomies", name])


def taxonomy_specs(loaded: Sequence[LoadedDefinition]) -> list[dg.AssetSpec]:
    """``taxonomies/<name>``: every taxonomy in storage or named by a definition, downstream of the labels
    of the clusters promoted into it (``cluster-assets taxonomy promote`` records its materializations)."""
    from cluster_assets.resources import default_storage_root
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

