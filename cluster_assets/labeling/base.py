from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from cluster_assets.keywords import ClusterLabel


@dataclass
class ClusterEvidence:
    """What is known of one cluster when it is named."""

    cluster_id: int
    count: int
    keywords: list[str]
    representatives: list[dict[str, Any]]  # the most central documents, nearest first, as payload dicts
    data_label: ClusterLabel


@dataclass
class LabelingOutcome:
    labels: list[ClusterLabel]
    source: str  # "data", "llm", "mixed" (some clusters fell back) or "fallback"
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # for the run's log
    extra_types: dict[str, pa.DataType] = field(default_factory=dict)  # response_shape columns and their types


class Labeler(Protocol):
    def label(self, evidence: list[ClusterEvidence]) -> LabelingOutcome: ...


class DataLabeler:
    """The labels the data gives: no calls, never fails."""

    def __init__(self, reason: str | None = None, extra_types: dict[str, pa.DataType] | None = None):
        self.reason = reason
        self.extra_types = extra_types or {}

    def label(self, evidence: list[ClusterEvidence]) -> LabelingOutcome:
        metadata = {"labeling_source": "fallback" if self.reason else "data"}
        warnings = []
        if self.reason:
            metadata["fallback_reason"] = self.reason
            warnings.append(f"labels fall back to data-derived labels: {self.reason}")
        labels = [e.data_label for e in evidence]
        if self.reason:
            from dataclasses import replace

            labels = [replace(l, source="fallback", extra={n: None for n in self.extra_types}) for l in labels]
        return LabelingOutcome(labels, metadata["labeling_source"], metadata, warnings, dict(self.extra_types))
