"""Near-duplicate labels, found by embedding similarity and kept apart by a suffix.

Labels are embedded with the provider's embedding endpoint when it has one, else
with a local character n-gram TF-IDF (no call). Clusters are visited from the
largest down; a label whose cosine similarity to an earlier, kept label exceeds
the threshold keeps its words and gets a suffix: its own first keyword that
neither label already contains (``Running shoes (trail)``), or its cluster id
when there is none. Nothing is re-asked, so dedup costs at most one call.
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


def dedup_labels(cluster_ids: Sequence[int], labels: Sequence[str], keywords: Sequence[Sequence[str]],
                 sizes: Sequence[int], vectors: np.ndarray, threshold: float) -> tuple[list[str], list[Renamed]]:
    """New labels (same order as given) and the renames made."""
    out = list(labels)
    renamed: list[Renamed] = []
    kept: list[int] = []
    for i in sorted(range(len(labels)), key=lambda k: (-sizes[k], cluster_ids[k])):
        if kept:
            sims = vectors[kept] @ vectors[i]
            best = int(np.argmax(sims))
            if sims[best] > threshold:
                j = kept[best]
                taken = (labels[i] + " " + out[j]).lower()
                suffix = next((w for w in keywords[i] if w and w.lower() not in taken), None)
                out[i] = f"{labels[i]} ({suffix})" if suffix else f"{labels[i]} (cluster {cluster_ids[i]})"
                renamed.append(Renamed(int(cluster_ids[i]), labels[i], out[i], int(cluster_ids[j]),
                                       round(float(sims[best]), 4)))
        kept.append(i)
    return out, renamed
