"""Naming clusters: the evidence each labeler sees, and the choice of labeler.

Data labels (class-based TF-IDF keywords and central documents) are always
computed; an LLM labeler, when configured and keyed, replaces them cluster by
cluster and falls back to them on any failure.
"""

from cluster_assets.labeling.base import ClusterEvidence, LabelingOutcome, Labeler
from cluster_assets.labeling.choose import choose_labeler

__all__ = ["ClusterEvidence", "LabelingOutcome", "Labeler", "choose_labeler"]
