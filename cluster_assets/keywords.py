"""Labels from the data itself: class-based TF-IDF keywords and the most central documents.

This is the label every cluster gets without an LLM, and the fallback when a
provider fails.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClusterLabel:
    cluster_id: int
    label: str
    summary: str
    keywords: list[str]
    representative_ids: list[str]
    confidence: float = 0.0
    source: str = "data"
    extra: dict = field(default_factory=dict)


# Every stored label keeps to these bounds, whatever the data or a model said: the label columns of the
# enriched collection and the prompts of parent labels carry them for every document of a cluster.
MAX_KEYWORD_CHARS = 40  # a longer "word" (a hash, a base64 blob, a run-on token) is not a keyword
MAX_KEYWORDS = 20
MAX_LABEL_CHARS = 120
MAX_SUMMARY_CHARS = 1_000


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def bounded(label: ClusterLabel) -> ClusterLabel:
    """``label`` with its label, summary, keywords and string extras cut to the bounds above."""
    return dataclasses.replace(
        label,
        label=clip(label.label, MAX_LABEL_CHARS),
        summary=clip(label.summary, MAX_SUMMARY_CHARS),
        keywords=[clip(k, MAX_KEYWORD_CHARS) for k in label.keywords[:MAX_KEYWORDS]],
        extra={k: clip(v, MAX_SUMMARY_CHARS) if isinstance(v, str) else v for k, v in label.extra.items()},
    )


# Number words carry meaning in titles ("two-person tent", "digit seven"): keep them.
NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "eight", "nine", "ten", "eleven", "twelve",
                "fifteen", "twenty", "forty", "fifty", "sixty", "hundred", "first", "third"}


def stop_words() -> list[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return sorted(ENGLISH_STOP_WORDS - NUMBER_WORDS)


def class_tfidf_keywords(texts: list[str], labels: np.ndarray, top_n: int = 10) -> dict[int, list[str]]:
    """Top terms per cluster by class-based TF-IDF (BERTopic's c-TF-IDF); noise (-1) is skipped."""
    from sklearn.feature_extraction.text import CountVectorizer

    labels = np.asarray(labels)
    clusters = sorted(int(c) for c in np.unique(labels) if c >= 0)
    result: dict[int, list[str]] = {c: [] for c in clusters}
    if not clusters or not any(t.strip() for t in texts):
        return result
    vectorizer = CountVectorizer(stop_words=stop_words(), max_features=50_000,
                                 token_pattern=rf"(?u)\b[a-zA-Z][a-zA-Z0-9]{{1,{MAX_KEYWORD_CHARS - 1}}}\b")
    try:
        counts = vectorizer.fit_transform(texts)
    except ValueError:  # only stop words
        return result
    terms = vectorizer.get_feature_names_out()
    from scipy import sparse

    mask = labels >= 0
    membership = sparse.csr_matrix(
        (np.ones(mask.sum()), (labels[mask], np.flatnonzero(mask))), shape=(max(clusters) + 1, len(texts))
    )
    per_class = np.asarray((membership @ counts).todense(), dtype=np.float64)
    words_per_class = per_class.sum(axis=1, keepdims=True)
    tf = per_class / np.where(words_per_class == 0, 1, words_per_class)
    mean_words = words_per_class[words_per_class > 0].mean() if (words_per_class > 0).any() else 1.0
    term_freq = per_class.sum(axis=0)
    idf = np.log(1 + mean_words / np.where(term_freq == 0, 1, term_freq))
    scores = tf * idf
    for c in clusters:
        row = scores[c]
        top = np.argsort(-row, kind="stable")[:top_n]
        result[c] = [str(terms[i]) for i in top if row[i] > 0]
    return result


def central_indices(X: np.ndarray, labels: np.ndarray, centroids: dict[int, np.ndarray], k: int) -> dict[int, np.ndarray]:
    """For each cluster, the indices of its ``k`` members nearest its centroid, nearest first."""
    out: dict[int, np.ndarray] = {}
    for c, centre in centroids.items():
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            out[c] = members
            continue
        dist = np.linalg.norm(X[members] - centre, axis=1)
        order = np.argsort(dist, kind="stable")[:k]
        out[c] = members[order]
    return out


def keyword_coverage(texts: list[str], labels: np.ndarray, keywords: dict[int, list[str]], top: int = 3) -> dict[int, float]:
    """Share of each cluster's documents that mention at least one of its top keywords."""
    coverage = {}
    lowered = [t.lower() for t in texts]
    for c, words in keywords.items():
        members = np.flatnonzero(np.asarray(labels) == c)
        if not len(members) or not words:
            coverage[c] = 0.0
            continue
        hits = sum(any(w in lowered[i] for w in words[:top]) for i in members)
        coverage[c] = hits / len(members)
    return coverage


def data_labels(cluster_ids: list[int], counts: dict[int, int], keywords: dict[int, list[str]],
                representatives: dict[int, list[str]], snippets: dict[int, str],
                coverage: dict[int, float] | None = None) -> list[ClusterLabel]:
    """A label, summary and keywords for every cluster from its keywords and central documents."""
    labels = []
    for c in cluster_ids:
        words = keywords.get(c, [])
        label = " / ".join(words[:3]) if words else f"Cluster {c}"
        snippet = snippets.get(c, "")
        summary = f"{counts.get(c, 0)} documents"
        if words:
            summary += f" about {', '.join(words[:5])}"
        if snippet:
            summary += f"; most central: {snippet!r}"
        # Confidence of a data label: how many of the cluster's documents its keywords describe.
        confidence = round((coverage or {}).get(c, 0.0), 4)
        labels.append(bounded(ClusterLabel(c, label, summary, words, representatives.get(c, []), confidence)))
    return labels
