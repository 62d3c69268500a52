"""Naming clusters: the evidence each labeler sees, and the choice of labeler.

Data labels (class-based TF-IDF keywords and central documents) are always
computed; an LLM labeler, when configured and keyed, replaces them cluster by
cluster and falls back to them on any failure.

Modules, one job each: ``inputs`` (input mappings, presigning, modality checks),
``prompts`` (templates), ``shape`` (response shape -> JSON schema, parsing),
``providers`` (retry/backoff/fail-fast base class; one transport per provider),
``cache`` (TTL label cache under the storage root), ``dedup`` (near-duplicate
labels), ``llm`` (the labeler: concurrency, fallback, metadata), ``choose``.
"""

from cluster_assets.labeling.base import ClusterEvidence, DataLabeler, Labeler, LabelingOutcome
from cluster_assets.labeling.choose import choose_labeler, key_from_environment
from cluster_assets.labeling.inputs import LabelingConfigError

__all__ = ["ClusterEvidence", "DataLabeler", "LabelingOutcome", "Labeler", "LabelingConfigError",
           "choose_labeler", "key_from_environment"]
