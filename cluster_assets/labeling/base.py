from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

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
    source: str  # "data", "llm" or "fallback"
    metadata: dict[str, Any] = field(default_factory=dict)


class Labeler(Protocol):
    def label(self, evidence: list[ClusterEvidence]) -> LabelingOutcome: ...


class DataLabeler:
    """The labels the data gives: no calls, never fails."""

    def __init__(self, reason: str | None = None):
        self.reason = reason

    def label(self, evidence: list[ClusterEvidence]) -> LabelingOutcome:
        metadata = {"labeling_source": "fallback" if self.reason else "data"}
        if self.reason:
            metadata["fallback_reason"] = self.reason
        return LabelingOutcome([e.data_label for e in evidence], metadata["labeling_source"], metadata)
