"""Near-duplicate labels, found by embedding similarity and kept apart, or merged on purpose.

Labels are embedded with the provider's embedding endpoint when it has one, else
with a local character n-gram TF-IDF (no call). Clusters are visited from the
largest down; a label whose cosine similarity to an earlier, kept label exceeds
the threshold (or that equals a label already given) is a near duplicate.

- ``dedup_labels`` keeps its words and adds a suffix: its own first keyword that
  no label given so far holds (``Running shoes (trail)``), or its cluster id
  when there is none. After it, no two clusters share a label.
- ``merge_groups`` leaves the labels as they are and records which clusters share
  one (the reference's "labels above the threshold are merged"): ``merged_with``.
- The LLM labeler's ``contrast`` strategy re-asks the model for the near
  duplicates (``near_duplicates``) with their neighbours' labels and keywords,
  then applies ``dedup_labels`` to whatever still collides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Renamed:
    cluster_id: int
    old: str
    new: str
    similar_to: int
    similarity: float


def local_vectors(texts: Sequence[str]) -> np.ndarray:
    """Character n-gram TF-IDF, L2-normalised rows: spelling-level similarity without a model."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not texts:
        return np.zeros((0, 0))
    matrix = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True).fit_transform(list(texts))
    return matrix.toarray()


def normalise(vectors) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1, norms)


def label_vectors(labels: Sequence[str], embed: Callable[[list[str]], list[list[float]] | None] | None
                  ) -> tuple[np.ndarray, str, str | None]:
    """(unit vectors, method, warning): the provider's embeddings when it has them, else the local ones."""
    warning = None
    if embed is not None:
        try:
            vectors = embed(list(labels))
            if vectors is not None:
                array = normalise(vectors)
                if array.shape[0] == len(labels):
                    return array, "provider", None
                warning = f"embedding endpoint returned {array.shape[0]} vectors for {len(labels)} labels"
        except Exception as exc:  # noqa: BLE001 - dedup must not fail the labels; the message is pre-scrubbed
            warning = f"embedding endpoint failed ({exc}); dedup used the local vectorizer"
    return normalise(local_vectors(labels)), "local_tfidf", warning


@dataclass(frozen=True)
class ComparedLabels:
    """Labels in the order dedup visits them (largest cluster first, then by id) and their pairwise
    cosine similarities: what every dedup strategy reads, computed once."""

    cluster_ids: list[int]
    labels: list[str]
    order: list[int]
    similarity: np.ndarray

    @classmethod
    def of(cls, cluster_ids: Sequence[int], labels: Sequence[str], sizes: Sequence[int],
           vectors: np.ndarray) -> ComparedLabels:
        order = sorted(range(len(labels)), key=lambda k: (-sizes[k], cluster_ids[k]))
        vectors = np.asarray(vectors, dtype=np.float64)
        return cls([int(c) for c in cluster_ids], list(labels), order, vectors @ vectors.T)


def same_text(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def near_duplicates(compared: ComparedLabels, threshold: float) -> dict[int, list[int]]:
    """Index of each near-duplicate label -> the indices of the earlier (larger) labels it is close to,
    in the order they are visited."""
    labels, similarity = compared.labels, compared.similarity
    out: dict[int, list[int]] = {}
    kept: list[int] = []
    for i in compared.order:
        close = [j for j in kept if similarity[j, i] > threshold or same_text(labels[j], labels[i])]
        if close:
            out[i] = close
        kept.append(i)
    return out


def dedup_labels(compared: ComparedLabels, keywords: Sequence[Sequence[str]],
                 threshold: float) -> tuple[list[str], list[Renamed]]:
    """New labels (same order as given), no two alike (case-insensitive), and the renames made."""
    labels, ids, similarity = compared.labels, compared.cluster_ids, compared.similarity
    out = list(labels)
    renamed: list[Renamed] = []
    kept: list[int] = []
    given: set[str] = set()
    for i in compared.order:
        if kept:
            sims = similarity[kept, i]
            best = int(np.argmax(sims))
            if sims[best] > threshold or labels[i].strip().lower() in given:
                j = kept[best] if sims[best] > threshold else next(k for k in kept if same_text(out[k], labels[i]))
                taken = " ".join([labels[i], *(out[k] for k in kept)]).lower()
                suffix = next((w for w in keywords[i] if w and w.lower() not in taken
                               and f"{labels[i]} ({w})".lower() not in given), None)
                out[i] = f"{labels[i]} ({suffix})" if suffix else f"{labels[i]} (cluster {ids[i]})"
                renamed.append(Renamed(ids[i], labels[i], out[i], ids[j], round(float(similarity[j, i]), 4)))
        given.add(out[i].strip().lower())
        kept.append(i)
    return out, renamed


def merge_groups(compared: ComparedLabels, threshold: float) -> tuple[list[str], list[list[int]]]:
    """Labels merged on purpose: each near duplicate takes the label of the larger cluster it is
    closest to, and every cluster of a group lists the others' ids (``merged_with``; empty alone)."""
    ids = compared.cluster_ids
    out = list(compared.labels)
    group = list(range(len(out)))
    for i, close in near_duplicates(compared, threshold).items():
        j = close[int(np.argmax(compared.similarity[close, i]))]
        group[i] = group[j]
        out[i] = out[j]
    merged = [[ids[k] for k in range(len(out)) if k != i and group[k] == group[i]] for i in range(len(out))]
    return out, merged
