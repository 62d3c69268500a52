"""Labels from the data itself: class-based TF-IDF keywords and the most central documents.

This is the label every cluster gets without an LLM, and the fallback when a
provider fails.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy import sparse


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
# What is left of a contraction once the apostrophe splits it ("don't" -> "don", "t"), the same
# contractions written without one, and filler words no label should carry.
CONTRACTION_FRAGMENTS = {
    "don", "ve", "ll", "re", "didn", "doesn", "isn", "wasn", "aren", "weren", "couldn", "wouldn", "shouldn",
    "won", "haven", "hasn", "hadn", "ain", "mustn", "needn", "shan", "mightn", "dont", "doesnt", "didnt",
    "cant", "wont", "isnt", "wasnt", "arent", "im", "ive", "id", "youre", "youve", "youll", "theyre", "theyve",
    "thats", "theres", "whats", "lets", "hes", "shes", "weve", "ill", "oh", "ok", "okay", "yeah", "yes",
    "just", "like", "got", "get", "gets", "really", "also", "would", "could", "know", "think", "want",
    "say", "said", "says", "use", "used", "using", "way", "thing", "things", "lot", "good", "make",
}
# A term in more than this share of the documents says nothing about one cluster (on corpora large
# enough for shares to mean something).
MAX_DOCUMENT_SHARE = 0.5
MIN_DOCUMENTS_FOR_SHARE = 50
# A phrase is a keyword only when it occurs at least this often in the cluster.
MIN_PHRASE_COUNT = 2


def stop_words() -> list[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return sorted((ENGLISH_STOP_WORDS - NUMBER_WORDS) | CONTRACTION_FRAGMENTS)


def _vectorizer(**options):
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(stop_words=stop_words(), max_features=50_000, ngram_range=(1, 2),
                           token_pattern=rf"(?u)\b[a-zA-Z][a-zA-Z0-9]{{1,{MAX_KEYWORD_CHARS - 1}}}\b", **options)


@dataclass(frozen=True)
class TermCounts:
    """The documents tokenised once: every keyword and confidence of a labels run reads these counts."""

    counts: "sparse.csr_matrix"  # documents x terms
    terms: np.ndarray
    phrase: np.ndarray  # True for the two-word terms

    @classmethod
    def of(cls, texts: list[str]) -> "TermCounts | None":
        """None when there is nothing to count (no text, or only stop words)."""
        if not any(t.strip() for t in texts):
            return None
        vectorizer = _vectorizer()
        try:
            counts = vectorizer.fit_transform(texts).tocsr()
        except ValueError:  # only stop words
            return None
        terms = vectorizer.get_feature_names_out()
        return cls(counts, terms, np.array([" " in t for t in terms], dtype=bool))

    @property
    def documents(self) -> int:
        return self.counts.shape[0]

    def per_group(self, groups: np.ndarray, n_groups: int, terms: np.ndarray | None = None) -> np.ndarray:
        """Term counts summed per group (``groups``: one group per document, -1 for none): groups x terms
        (only the columns ``terms`` selects, before anything is made dense)."""
        from scipy import sparse

        groups = np.asarray(groups)
        mask = groups >= 0
        membership = sparse.csr_matrix((np.ones(mask.sum()), (groups[mask], np.flatnonzero(mask))),
                                       shape=(n_groups, self.documents))
        counts = self.counts if terms is None else self.counts[:, terms]
        return np.asarray((membership @ counts).todense(), dtype=np.float64)

    @cached_property
    def present(self) -> "sparse.csc_matrix":
        """documents x terms: whether the document holds the term (made once: the lift of every level reads it)."""
        return (self.counts > 0).tocsc()

    def holds(self, terms: list[str]) -> "sparse.csc_matrix":
        """documents x ``terms``, sparse: 1 where the document holds the term (a term not counted: nowhere)."""
        from scipy import sparse

        column = {t: i for i, t in enumerate(self.terms)}
        nowhere = sparse.csc_matrix((self.documents, 1), dtype=bool)
        return sparse.hstack([self.present[:, [column[t]]] if t in column else nowhere for t in terms]).tocsc()


def class_tfidf_keywords(texts: list[str], labels: np.ndarray, top_n: int = 10,
                         counts: TermCounts | None = None) -> dict[int, list[str]]:
    """Top terms per cluster by class-based TF-IDF (BERTopic's c-TF-IDF); noise (-1) is skipped.

    Beyond plain c-TF-IDF: stop words and contraction fragments never count; two-word phrases
    compete with words (when they occur ``MIN_PHRASE_COUNT`` times in the cluster); a term in
    more than half of a large corpus's documents is dropped; a term among the top ``top_n`` of
    several clusters has its score divided by how many, so a specific word beats one that heads
    many clusters; and a term whose words an earlier keyword already holds is skipped.
    ``counts``: ``texts`` already tokenised (``TermCounts.of``).
    """
    labels = np.asarray(labels)
    clusters = sorted(int(c) for c in np.unique(labels) if c >= 0)
    result: dict[int, list[str]] = {c: [] for c in clusters}
    counts = counts if counts is not None else TermCounts.of(texts)
    if not clusters or counts is None:
        return result
    terms, phrase = counts.terms, counts.phrase
    per_class = counts.per_group(labels, max(clusters) + 1)
    # words per class from single words only: phrases do not dilute the words' frequencies
    words_per_class = per_class[:, ~phrase].sum(axis=1, keepdims=True)
    tf = per_class / np.where(words_per_class == 0, 1, words_per_class)
    mean_words = words_per_class[words_per_class > 0].mean() if (words_per_class > 0).any() else 1.0
    term_freq = per_class.sum(axis=0)
    idf = np.log(1 + mean_words / np.where(term_freq == 0, 1, term_freq))
    scores = tf * idf
    scores[:, phrase] *= per_class[:, phrase] >= MIN_PHRASE_COUNT
    if counts.documents >= MIN_DOCUMENTS_FOR_SHARE:
        document_share = np.asarray(counts.present.sum(axis=0)).ravel() / counts.documents
        scores[:, document_share > MAX_DOCUMENT_SHARE] = 0.0
    heads = np.zeros(len(terms))
    for c in clusters:
        row = scores[c]
        top = np.argsort(-row, kind="stable")[:top_n]
        heads[top[row[top] > 0]] += 1
    scores = scores / np.maximum(heads, 1)
    for c in clusters:
        row = scores[c]
        chosen: list[str] = []
        covered: set[str] = set()
        for i in np.argsort(-row, kind="stable"):
            if row[i] <= 0 or len(chosen) == top_n:
                break
            words = set(str(terms[i]).split())
            if words <= covered:
                continue
            chosen.append(str(terms[i]))
            covered |= words
        result[c] = chosen
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


def keyword_lift(texts: list[str], labels: np.ndarray, keywords: dict[int, list[str]], top: int = 3,
                 counts: TermCounts | None = None) -> dict[int, float]:
    """A data label's confidence: how much more its top keywords describe its cluster than the rest.

    The share of the cluster's documents holding one of its ``top`` keywords (whole words and
    phrases) minus that share among every other document, floored at 0: near 1 for words only
    this cluster uses, near 0 for generic words every cluster has. ``counts``: ``texts`` already
    tokenised, by the analyzer the keywords came from.
    """
    labels = np.asarray(labels)
    tops = {c: list(dict.fromkeys(words[:top])) for c, words in keywords.items() if words}
    vocabulary = sorted({w for words in tops.values() for w in words})
    out = {c: 0.0 for c in keywords}
    if not vocabulary or not len(texts):
        return out
    if counts is not None:
        holds = counts.holds(vocabulary)
    else:  # one sparse pass over the texts, by the analyzer the keywords came from
        holds = _vectorizer(vocabulary=vocabulary, binary=True).transform(texts).tocsc()
    column = {w: i for i, w in enumerate(vocabulary)}
    for c, words in tops.items():
        members = labels == c
        if not members.any():
            continue
        hits = np.asarray(holds[:, [column[w] for w in words]].sum(axis=1)).ravel() > 0
        inside = hits[members].mean()
        outside = hits[~members].mean() if (~members).any() else 0.0
        out[c] = round(max(0.0, float(inside - outside)), 4)
    return out


def _sentence_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def data_labels(cluster_ids: list[int], counts: dict[int, int], keywords: dict[int, list[str]],
                representatives: dict[int, list[str]], snippets: dict[int, str],
                coverage: dict[int, float] | None = None) -> list[ClusterLabel]:
    """A label, summary and keywords for every cluster from its keywords and central documents.

    Labels are distinct: a label another (larger) cluster already carries takes the next
    keyword its words do not hold, or the cluster id. ``coverage`` is the confidence
    (``keyword_lift``).
    """
    labels = []
    used: set[str] = set()
    for c in sorted(cluster_ids, key=lambda c: (-counts.get(c, 0), c)):
        words = keywords.get(c, [])
        label = " / ".join(words[:3]) if words else f"Cluster {c}"
        for extra in words[3:]:
            if label.lower() not in used:
                break
            label = " / ".join(words[:2] + [extra])
        if label.lower() in used:
            label = f"{label} (cluster {c})"
        used.add(label.lower())
        snippet = snippets.get(c, "")
        n = counts.get(c, 0)
        summary = f"A cluster of {n} document{'s' if n != 1 else ''}"
        summary += f" about {_sentence_list(words[:5])}." if words else "."
        if snippet:
            summary += f' The most central one reads: "{snippet.strip()}"'
            summary += "" if snippet.rstrip().endswith((".", "!", "?", "\u2026")) else "\u2026"
        confidence = round((coverage or {}).get(c, 0.0), 4)
        labels.append((c, bounded(ClusterLabel(c, label, summary, words, representatives.get(c, []), confidence))))
    order = {c: i for i, c in enumerate(cluster_ids)}
    return [label for _, label in sorted(labels, key=lambda item: order[item[0]])]
