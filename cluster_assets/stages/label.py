"""``labels``: name every cluster and write the run's ``centroids`` artifact.

Keywords and central documents come from the fitted sample (bounded work
whatever the collection's size); the labeler chosen by the definition turns
that evidence into labels.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets import hierarchy, quality
from cluster_assets import keywords as kw
from cluster_assets.features import feature_column_names, is_vector_type
from cluster_assets.labeling import ClusterEvidence, Labeler, choose_labeler
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.context import LineageError, StageContext
from cluster_assets.stages.embed import read_matrix, read_sample_keys, read_sample_matrix
from cluster_assets.stages.model import load_fit
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID

SNIPPET = 160
REPRESENTATIVE_COLLECTIONS = "representative_collection_ids"  # beside representative_ids, one per id
SILHOUETTE_SAMPLE = 5_000


def text_columns(schema: pa.Schema, spec: ClusterDefinition, feature_columns: set[str]) -> list[str]:
    """Payload text the keywords are drawn from: the labeling inputs' text paths, else every string field."""
    if spec.llm_labeling and spec.llm_labeling.labeling_inputs:
        paths = [m.path for m in spec.llm_labeling.labeling_inputs.input_mappings
                 if m.source_type == "payload" and m.input_key not in ("image_url", "video_url", "audio_url")]
        tops = [p.split(".")[0] for p in paths if p]
        chosen = [c for c in dict.fromkeys(tops) if c in schema.names]
        if chosen:
            return chosen
    return [f.name for f in schema if f.name != ID and f.name not in feature_columns
            and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_struct(f.type))]


def _row_text(row: dict) -> str:
    parts = []
    for value in row.values():
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            parts.append(_row_text(value))
    return " ".join(parts)


def payload_columns(schema: pa.Schema, features: set[str]) -> list[str]:
    """What a model is shown of a document without ``labeling_inputs``: every column but the id and the vectors
    (any feature column, whether this definition clusters on it or not)."""
    return [f.name for f in schema if f.name != ID and f.name not in features and not is_vector_type(f.type)]


def payload_rows_by_key(storage, spec: ClusterDefinition, keys: list[tuple[str, str]],
                        columns_for) -> dict[tuple[str, str], dict]:
    """(collection_id, document_id) -> payload dict for the given documents: each collection is searched for its
    own ids only, so a ``document_id`` that two collections share names two documents."""
    out: dict[tuple[str, str], dict] = {}
    wanted: dict[str, list[str]] = {}
    for cid, doc in keys:
        wanted.setdefault(cid, []).append(doc)
    for cid in spec.source_collection_ids:
        if cid not in wanted:
            continue
        dataset = storage.collection_dataset(cid)
        columns = columns_for(dataset.schema)
        ids = pa.array(wanted[cid], pa.string())
        table = dataset.to_table(columns=[ID] + columns, filter=pc.field(ID).cast(pa.string()).isin(ids))
        for row in table.to_pylist():
            out[(cid, str(row[ID]))] = row
    return out


def assigned_partitions(storage, spec: ClusterDefinition, fit_id: str, partitions: list[str], name: str) -> list[str]:
    """The files among ``partitions`` that have a per-file output ``name`` in the fit."""
    return [p for p in partitions if storage.exists(*layout.file_parts(spec, fit_id, p, name))]


def fit_clusters(storage, spec: ClusterDefinition, fit, X: np.ndarray, partitions: list[str],
                 result: StageResult) -> pa.Table:
    """One row per cluster of the fit: centroid and count over every assigned file, quality, hierarchy."""
    stats = quality.ClusterStats()
    noise_before = 0
    for p in partitions:
        table = storage.read_table(*layout.file_parts(spec, fit.fit_id, p, layout.STATS))
        stats.merge(quality.ClusterStats.from_table(table))
        before = (table.schema.metadata or {}).get(b"noise_before_reassignment")
        noise_before += int(before) if before is not None else int(stats_noise(table))
    cluster_ids = stats.cluster_ids()
    centroids = stats.centroids(cluster_ids).astype(np.float32).reshape(len(cluster_ids), X.shape[1])
    clusters = pa.table({
        "cluster_id": pa.array(cluster_ids, pa.int32()),
        "count": pa.array([stats.counts[c] for c in cluster_ids], pa.int64()),
        "centroid": pa.FixedSizeListArray.from_arrays(pa.array(centroids.reshape(-1)), X.shape[1]),
    })
    with timed(result, "quality_s"):
        readout = quality.assess(stats, X, fit.sample_labels, layout.seed(spec), SILHOUETTE_SAMPLE)
    for name, column in readout.columns().items():
        clusters = clusters.append_column(name, column)
    if spec.hierarchical:
        with timed(result, "hierarchy_s"):
            clusters = add_hierarchy(storage, spec, fit, clusters, centroids, result)
    documents = sum(stats.counts.values())
    noise = stats.counts.get(-1, 0)
    sizes = sorted((stats.counts[c] for c in cluster_ids), reverse=True)
    result.metadata.update({
        "documents": documents,
        "noise_documents": noise,
        "noise_share": round(noise / documents, 4) if documents else 0.0,
        "noise_share_before_reassignment": round(noise_before / documents, 4) if documents else 0.0,
        "largest_cluster": sizes[0] if sizes else 0,
        "smallest_cluster": sizes[-1] if sizes else 0,
        "cluster_sizes": {str(c): stats.counts[c] for c in cluster_ids},
        "fitted_on": len(X),
    })
    result.metadata.update(readout.metadata())
    result.markdown["cluster_quality"] = readout.markdown()
    return clusters


def stats_noise(table: pa.Table) -> int:
    """Noise documents of a stats table written before noise reassignment existed."""
    return quality.ClusterStats.from_table(table).counts.get(-1, 0)


def add_hierarchy(storage, spec: ClusterDefinition, fit, clusters: pa.Table, centroids: np.ndarray,
                  result: StageResult) -> pa.Table:
    """Group the clusters into a tree (``hierarchical: true``): parent_id and level columns, and the nodes file."""
    options = spec.hierarchy
    tree = hierarchy.cluster_hierarchy(
        clusters.column("cluster_id").to_pylist(), clusters.column("count").to_pylist(), centroids,
        algorithm=spec.algorithm, estimator=getattr(fit.model, "estimator_", None), point_labels=fit.sample_labels,
        levels=options.levels, branching=options.branching, top_nodes=options.top_nodes, linkage=options.linkage)
    storage.write_table(tree.to_table(), *layout.fit_parts(spec, fit.fit_id, layout.HIERARCHY))
    parent = tree.parent_of()
    level = dict(zip(tree.node_id.tolist(), tree.level.tolist()))
    ids = clusters.column("cluster_id").to_pylist()
    result.metadata.update({
        "hierarchy_levels": tree.depth,
        "hierarchy_nodes_per_level": [int((tree.level == i).sum()) for i in range(tree.depth)],
        "hierarchy_source": tree.source,
    })
    return (clusters.append_column("parent_id", pa.array([parent[c] for c in ids], pa.int32()))
            .append_column("level", pa.array([level[c] for c in ids], pa.int16())))


def run_labels(ctx: StageContext) -> StageResult:
    storage, spec, run_id = ctx.storage, ctx.spec, ctx.run_id
    fit_id = ctx.need_fit()
    result = StageResult()
    labeler = ctx.labeler or choose_labeler(spec, storage=storage)
    with timed(result, "duration_s"):
        fit = load_fit(storage, spec, fit_id)
        sample_ids, X = read_sample_matrix(storage, spec, fit.sample_id)
        sample_keys = read_sample_keys(storage, spec, fit.sample_id)
        labels = fit.sample_labels
        partitions = assigned_partitions(storage, spec, fit_id, ctx.all_partitions or ctx.partitions, layout.STATS)
        if not partitions:
            raise LineageError(f"no file is assigned in fit {fit_id} of {spec.cluster_name!r}: materialize "
                               f"{spec.cluster_name}/assignments first")
        if len(partitions) < len(ctx.all_partitions):
            result.warnings.append(f"{len(ctx.all_partitions) - len(partitions)} files are not assigned in this fit "
                                   f"yet: the counts leave them out")
        clusters = fit_clusters(storage, spec, fit, X, partitions, result)
        storage.write_table(clusters, *layout.fit_parts(spec, fit_id, layout.CLUSTERS))
        cluster_ids = clusters.column("cluster_id").to_pylist()
        counts = dict(zip(cluster_ids, clusters.column("count").to_pylist()))
        centroid_matrix = read_matrix(clusters.select(["centroid"]).rename_columns(["vector"]))
        centroids = {c: centroid_matrix[i] for i, c in enumerate(cluster_ids)}

        features = feature_column_names(spec.feature_addresses)
        texts_by_key = payload_rows_by_key(storage, spec, sample_keys, lambda s: text_columns(s, spec, features))
        texts = [_row_text({k: v for k, v in texts_by_key.get(key, {}).items() if k != ID}) for key in sample_keys]
        with timed(result, "keywords_s"):
            term_counts = kw.TermCounts.of(texts)
            keywords = kw.class_tfidf_keywords(texts, labels, counts=term_counts)
        per_cluster = spec.llm_labeling.max_samples_per_cluster if spec.llm_labeling else 5
        central = kw.central_indices(X, labels, centroids, per_cluster)
        representative_keys = {c: [sample_keys[i] for i in idx] for c, idx in central.items()}
        representative_ids = {c: [doc for _, doc in keys] for c, keys in representative_keys.items()}
        snippets = {c: texts[idx[0]][:SNIPPET] for c, idx in central.items() if len(idx) and texts[idx[0]]}
        coverage = kw.keyword_lift(texts, labels, keywords, counts=term_counts)
        data = kw.data_labels(cluster_ids, counts, keywords, representative_ids, snippets, coverage)

        wanted = [key for keys in representative_keys.values() for key in keys]
        payloads = payload_rows_by_key(storage, spec, wanted,
                                       lambda s: payload_columns(s, features))
        evidence = [
            ClusterEvidence(c, counts[c], keywords.get(c, []),
                            [payloads[k] for k in representative_keys.get(c, []) if k in payloads], label)
            for c, label in zip(cluster_ids, data)
        ]
        with timed(result, "labeling_s"):
            outcome = labeler.label(evidence)
        table = labels_table(outcome.labels, outcome.source, outcome.extra_types)
        table = table.append_column(REPRESENTATIVE_COLLECTIONS, pa.array(
            [representative_collections(l, representative_keys.get(l.cluster_id, [])) for l in outcome.labels],
            pa.list_(pa.string())))
        paths = {l.cluster_id: [l.label] for l in outcome.labels}
        if spec.hierarchical and storage.exists(*layout.fit_parts(spec, fit_id, layout.HIERARCHY)):
            with timed(result, "parent_labeling_s"):
                paths = label_hierarchy(storage, spec, run_id, fit_id, labeler, outcome.labels, texts, labels, result,
                                        term_counts)
        table = table.append_column("cluster_path", pa.array(
            [paths.get(c, []) for c in table.column("cluster_id").to_pylist()], pa.list_(pa.string())))
        storage.write_table(table, *layout.fit_parts(spec, fit_id, layout.LABELS))
        artifact = centroids_artifact(clusters, table)
        uri = storage.write_table(artifact, *layout.artifact_parts(spec, run_id, layout.CENTROIDS_ARTIFACT))
    result.row_count = len(cluster_ids)
    result.uri = uri
    result.commit = lambda: make_current(storage, spec, fit_id, fit.sample_id, partitions,
                                         result.metadata.get("mean_cohesion"), result.metadata.get("noise_share"))
    result.paths["centroids_artifact"] = uri
    result.metadata[layout.FIT_ID_KEY] = fit_id
    result.metadata.update(outcome.metadata)
    result.warnings.extend(outcome.warnings)
    result.metadata["num_clusters"] = len(cluster_ids)
    result.markdown["labels"] = labels_markdown(outcome.labels, counts)
    if not cluster_ids:
        result.warnings.append("every document is noise: loosen the algorithm's parameters")
    return result


def representative_collections(label: kw.ClusterLabel, keys: list[tuple[str, str]]) -> list[str]:
    """The collection of each of ``label.representative_ids`` (the data's representatives, in order)."""
    if [doc for _, doc in keys] == list(label.representative_ids):
        return [cid for cid, _ in keys]
    of = {doc: cid for cid, doc in keys}
    return [of.get(doc, "") for doc in label.representative_ids]


def make_current(storage, spec: ClusterDefinition, fit_id: str, sample_id: str, partitions: list[str],
                 cohesion: float | None = None, noise_share: float | None = None) -> None:
    """The fit becomes the one every later read uses (incremental runs, enrichment, the CLI)."""
    previous = layout.read_current(storage, spec)
    layout.write_current(storage, spec, layout.CurrentFit(
        fit_id=fit_id, sample_id=sample_id, partitions=list(partitions),
        previous_fit_id=(previous.previous_fit_id if previous and previous.fit_id == fit_id
                         else previous.fit_id if previous else None),
        cohesion=cohesion, noise_share=noise_share))


def labels_table(labels: list[kw.ClusterLabel], source: str, extra_types: dict | None = None) -> pa.Table:
    """One row per cluster; ``extra_types`` (response_shape fields) keep their columns and types even when null."""
    extra_types = extra_types or {}
    extra_names = list(extra_types) + sorted({k for label in labels for k in label.extra} - set(extra_types))
    columns = {
        "cluster_id": pa.array([l.cluster_id for l in labels], pa.int32()),
        "label": pa.array([l.label for l in labels], pa.string()),
        "summary": pa.array([l.summary for l in labels], pa.string()),
        "keywords": pa.array([l.keywords for l in labels], pa.list_(pa.string())),
        "representative_ids": pa.array([l.representative_ids for l in labels], pa.list_(pa.string())),
        "confidence": pa.array([float(l.confidence) for l in labels], pa.float32()),
        "labeling_source": pa.array([l.source for l in labels], pa.string()),
    }
    for name in extra_names:
        columns[name] = pa.array([l.extra.get(name) for l in labels], type=extra_types.get(name))
    return pa.table(columns)


def centroids_artifact(clusters: pa.Table, labels: pa.Table) -> pa.Table:
    """One row per cluster: the centroid and count of ``clusters`` with the label columns beside them."""
    row_of = {c: i for i, c in enumerate(labels.column("cluster_id").to_pylist())}
    take = pa.array([row_of.get(c) for c in clusters.column("cluster_id").to_pylist()], pa.int64())
    # quality (cohesion, separation, nearest_cluster_id) and hierarchy (parent_id, level) when the run has them
    extra = [c for c in ("parent_id", "level", "cohesion", "separation", "nearest_cluster_id") if c in clusters.column_names]
    table = clusters.select(["cluster_id", "centroid", "count", *extra])
    for name in labels.column_names:
        if name != "cluster_id":
            table = table.append_column(name, labels.column(name).take(take))
    return table


def labels_markdown(labels: list[kw.ClusterLabel], counts: dict[int, int]) -> str:
    rows = ["| cluster | documents | label | keywords |", "| --- | --- | --- | --- |"]
    for l in sorted(labels, key=lambda l: -counts.get(l.cluster_id, 0))[:50]:
        label = l.label.replace("|", "/")
        rows.append(f"| {l.cluster_id} | {counts.get(l.cluster_id, 0)} | {label} | {', '.join(l.keywords[:6])} |")
    return "\n".join(rows)


def label_hierarchy(storage, spec: ClusterDefinition, run_id: str, fit_id: str, labeler, leaf_labels: list[kw.ClusterLabel],
                    texts: list[str], sample_leaf: np.ndarray, result: StageResult,
                    term_counts: kw.TermCounts | None = None) -> dict[int, list[str]]:
    """Name the parents of the cluster tree, write the run's hierarchy artifact; each cluster's path of labels.

    A labeler with a ``label_parents(list[ParentEvidence])`` method (an LLM labeler) names the
    parents from their children's labels and keywords; otherwise, and on any failure, the data do.
    """
    tree = hierarchy.ClusterTree.from_table(storage.read_table(*layout.fit_parts(spec, fit_id, layout.HIERARCHY)))
    leaves = {l.cluster_id: l for l in leaf_labels}
    parents, meta = hierarchy.label_parents(tree, leaves, texts, sample_leaf,
                                            hook=getattr(labeler, "label_parents", None), term_counts=term_counts)
    named = {**leaves, **parents}
    nodes = tree.to_table()
    ids = nodes.column("node_id").to_pylist()
    nodes = (nodes.append_column("label", pa.array([named[n].label if n in named else f"Cluster {n}" for n in ids]))
             .append_column("summary", pa.array([named[n].summary if n in named else "" for n in ids]))
             .append_column("keywords", pa.array([list(named[n].keywords) if n in named else [] for n in ids],
                                                 pa.list_(pa.string()))))
    uri = storage.write_table(nodes, *layout.artifact_parts(spec, run_id, layout.HIERARCHY_ARTIFACT))
    result.paths["hierarchy_artifact"] = uri
    result.metadata.update(meta)
    result.markdown["hierarchy"] = hierarchy_markdown(tree, named)
    return hierarchy.node_paths(tree, named)


def hierarchy_markdown(tree: hierarchy.ClusterTree, named: dict[int, kw.ClusterLabel], limit: int = 60) -> str:
    """The tree as a nested list, largest branches first."""
    children = tree.children()
    count = dict(zip(tree.node_id.tolist(), tree.count.tolist()))
    lines: list[str] = []

    def walk(node: int, depth: int) -> None:
        if len(lines) >= limit:
            return
        label = named[node].label if node in named else f"Cluster {node}"
        lines.append(f"{'  ' * depth}- **{label}** ({count.get(node, 0)} documents)" if children[node]
                     else f"{'  ' * depth}- {label} ({count.get(node, 0)}; cluster {node})")
        for child in sorted(children[node], key=lambda c: -count.get(c, 0)):
            walk(child, depth + 1)

    for top in sorted(tree.node_id[tree.level == 0].tolist(), key=lambda n: -count.get(n, 0)):
        walk(top, 0)
    return "\n".join(lines)
