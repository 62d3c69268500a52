"""``labels``: name every cluster and write the run's ``centroids`` artifact.

Keywords and central documents come from the fitted sample (bounded work
whatever the collection's size); the labeler chosen by the definition turns
that evidence into labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets import hierarchy
from cluster_assets import keywords as kw
from cluster_assets.features import parse_address
from cluster_assets.labeling import ClusterEvidence, Labeler, choose_labeler
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.embed import read_matrix
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID

SNIPPET = 160


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


def payload_rows(storage, spec: ClusterDefinition, ids: pa.Array, columns_for) -> dict[str, dict]:
    """document_id -> payload dict (feature columns left out) for the given ids."""
    out: dict[str, dict] = {}
    for cid in spec.source_collection_ids:
        dataset = storage.collection_dataset(cid)
        columns = columns_for(dataset.schema)
        table = dataset.to_table(columns=[ID] + columns, filter=pc.field(ID).cast(pa.string()).isin(ids))
        for row in table.to_pylist():
            out[str(row[ID])] = row
    return out


def run_labels(storage, spec: ClusterDefinition, run_id: str, labeler: Labeler | None = None) -> StageResult:
    result = StageResult()
    labeler = labeler or choose_labeler(spec, storage=storage)
    with timed(result, "duration_s"):
        sample = storage.read_table(*layout.asset_parts(spec, layout.SAMPLE_EMBEDDINGS))
        X = read_matrix(sample)
        sample_ids = sample.column(ID).combine_chunks()
        assigned = storage.read_table(*layout.asset_parts(spec, layout.ASSIGNMENTS))
        where = pd.Index(assigned.column(ID).to_numpy(zero_copy_only=False)).get_indexer(
            sample_ids.to_numpy(zero_copy_only=False))
        labels = assigned.column("cluster_id").to_numpy()[where].astype(np.int64)
        clusters = storage.read_table(*layout.asset_parts(spec, layout.CLUSTERS))
        cluster_ids = clusters.column("cluster_id").to_pylist()
        counts = dict(zip(cluster_ids, clusters.column("count").to_pylist()))
        centroid_matrix = read_matrix(clusters.select(["centroid"]).rename_columns(["vector"]))
        centroids = {c: centroid_matrix[i] for i, c in enumerate(cluster_ids)}

        features = {parse_address(a) for a in spec.feature_addresses}
        texts_by_id = payload_rows(storage, spec, sample_ids, lambda s: text_columns(s, spec, features))
        texts = [_row_text({k: v for k, v in texts_by_id.get(i, {}).items() if k != ID}) for i in sample_ids.to_pylist()]
        with timed(result, "keywords_s"):
            keywords = kw.class_tfidf_keywords(texts, labels)
        per_cluster = spec.llm_labeling.max_samples_per_cluster if spec.llm_labeling else 5
        central = kw.central_indices(X, labels, centroids, per_cluster)
        representative_ids = {c: [sample_ids[i].as_py() for i in idx] for c, idx in central.items()}
        snippets = {c: texts[idx[0]][:SNIPPET] for c, idx in central.items() if len(idx) and texts[idx[0]]}
        coverage = kw.keyword_coverage(texts, labels, keywords)
        data = kw.data_labels(cluster_ids, counts, keywords, representative_ids, snippets, coverage)

        wanted = pa.array([i for ids in representative_ids.values() for i in ids], pa.string())
        payloads = payload_rows(storage, spec, wanted, lambda s: [n for n in s.names if n != ID and n not in features])
        evidence = [
            ClusterEvidence(c, counts[c], keywords.get(c, []),
                            [payloads[i] for i in representative_ids[c] if i in payloads], label)
            for c, label in zip(cluster_ids, data)
        ]
        with timed(result, "labeling_s"):
            outcome = labeler.label(evidence)
        table = labels_table(outcome.labels, outcome.source, outcome.extra_types)
        paths = {l.cluster_id: [l.label] for l in outcome.labels}
        if spec.hierarchical and storage.exists(*layout.asset_parts(spec, layout.HIERARCHY)):
            with timed(result, "parent_labeling_s"):
                paths = label_hierarchy(storage, spec, run_id, labeler, outcome.labels, texts, labels, result)
        table = table.append_column("cluster_path", pa.array(
            [paths.get(c, []) for c in table.column("cluster_id").to_pylist()], pa.list_(pa.string())))
        storage.write_table(table, *layout.asset_parts(spec, layout.LABELS))
        artifact = centroids_artifact(clusters, table)
        uri = storage.write_table(artifact, *layout.artifact_parts(spec, run_id, layout.CENTROIDS_ARTIFACT))
    result.row_count = len(cluster_ids)
    result.uri = storage.uri(*layout.asset_parts(spec, layout.LABELS))
    result.paths["centroids_artifact"] = uri
    result.metadata.update(outcome.metadata)
    result.warnings.extend(outcome.warnings)
    result.metadata["num_clusters"] = len(cluster_ids)
    result.markdown["labels"] = labels_markdown(outcome.labels, counts)
    return result


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


def label_hierarchy(storage, spec: ClusterDefinition, run_id: str, labeler, leaf_labels: list[kw.ClusterLabel],
                    texts: list[str], sample_leaf: np.ndarray, result: StageResult) -> dict[int, list[str]]:
    """Name the parents of the cluster tree, write the run's hierarchy artifact; each cluster's path of labels.

    A labeler with a ``label_parents(list[ParentEvidence])`` method (an LLM labeler) names the
    parents from their children's labels and keywords; otherwise, and on any failure, the data do.
    """
    tree = hierarchy.ClusterTree.from_table(storage.read_table(*layout.asset_parts(spec, layout.HIERARCHY)))
    leaves = {l.cluster_id: l for l in leaf_labels}
    parents, meta = hierarchy.label_parents(tree, leaves, texts, sample_leaf,
                                            hook=getattr(labeler, "label_parents", None))
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
