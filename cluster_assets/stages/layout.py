"""Where each stage keeps its latest output, under ``<storage>/assets/<cluster_name>/``."""

from __future__ import annotations

from cluster_assets.spec import ClusterDefinition

SAMPLE = "sample.parquet"
EMBEDDINGS = "embeddings.parquet"
SAMPLE_EMBEDDINGS = "sample_embeddings.parquet"
FEATURES = "features.json"
MODEL = "model.pkl"
ASSIGNMENTS = "assignments.parquet"
# the assignments of the run before, kept for the drift check (checks.py)
PREVIOUS_ASSIGNMENTS = "previous_assignments.parquet"
CLUSTERS = "clusters.parquet"
COORDS = "coords.parquet"
LABELS = "labels.parquet"
HIERARCHY = "hierarchy.parquet"  # hierarchical: true: the tree of the clusters (node_id, parent_id, level, ...)

CENTROIDS_ARTIFACT = "centroids.parquet"
MEMBERS_ARTIFACT = "members.parquet"
HIERARCHY_ARTIFACT = "hierarchy.parquet"  # every node of the tree, parents labelled
MAP_PNG_ARTIFACT = "map.png"
MAP_HTML_ARTIFACT = "map.html"


def asset_parts(spec: ClusterDefinition, name: str) -> tuple[str, ...]:
    return ("assets", spec.cluster_name, name)


def artifact_parts(spec: ClusterDefinition, run_id: str, name: str) -> tuple[str, ...]:
    return ("artifacts", spec.cluster_name, run_id, name)


def seed(spec: ClusterDefinition) -> int:
    value = spec.algorithm_config.get("random_state", 0)
    return value if isinstance(value, int) else 0
