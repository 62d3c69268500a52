"""Versions of a definition: which edits mark its assets stale, and which make the event sensor refit."""

from __future__ import annotations

import hashlib
import json

from cluster_assets.spec.definition import ClusterDefinition

# Fields that never change what a run writes: editing them marks nothing stale.
NOT_IN_OUTPUTS = {"description", "metadata", "triggers", "webhooks", "retention"}
# Fields that change the fit, the per-file outputs or the enriched columns: editing them makes the event
# sensor refit (a new file assigned by the old fit would not match the files a new fit writes). Labeling and
# the check thresholds are not among them: new files take the labels the fit already has.
FIT_FIELDS = {"source_collection_ids", "feature_addresses", "algorithm", "algorithm_config", "dimension_reduction",
              "hierarchical", "hierarchy", "sample_size", "cluster_space", "outliers", "normalize", "enrichment",
              "taxonomy"}


def _digest(spec: ClusterDefinition, **fields) -> str:
    body = spec.model_dump(mode="json", **fields)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def code_version(spec: ClusterDefinition) -> str:
    """Dagster's code version of every asset of the definition: changes when a field that changes what a run
    writes changes, so the UI flags assets built from an older definition (a new description, trigger,
    webhook or retention policy does not)."""
    return _digest(spec, exclude=NOT_IN_OUTPUTS)


def fit_version(spec: ClusterDefinition) -> str:
    """Changes when a field the fit or the per-file outputs follow changes: what makes the event sensor refit."""
    return _digest(spec, include=FIT_FIELDS)


def whole_version(spec: ClusterDefinition) -> str:
    """What fits recorded before ``fit_version`` existed (2026-11-26): the whole definition but its retention."""
    return _digest(spec, exclude={"retention"})
