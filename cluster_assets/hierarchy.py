"""Parent-child relationships between the clusters of a run, as a tree with levels.

Two sources of a merge tree over the clusters (a scipy linkage matrix whose
leaves are the clusters, in the order given):

- an algorithm with a tree of its own (its registry entry's ``tree``): hdbscan's
  condensed tree, restricted to the selected clusters, with heights
  ``1 / lambda`` of each split; EVoC's coarser layers (``layers_linkage``);
- every other algorithm: agglomerative clustering of the centroids where each
  centroid weighs as many documents as its cluster holds (weighted Ward or
  average linkage give exactly what the linkage over the documents would give
  if every document sat on its centroid; single and complete do not depend on
  weights).

The merge tree is then cut into nested levels (``level_sizes``): level 0 is the
top (a handful of nodes), the clusters themselves are the last level. Leaves
keep their cluster ids; parent nodes get ids above the largest cluster id.

Parents are named from their children: data labels by class-based TF-IDF over
the merged documents of each level, or, through a small hook, by any labeler
that reads ``ParentEvidence`` (the children's labels and keywords).

Pure numpy/scipy: no Dagster import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from cluster_assets import keywords as kw
from cluster_assets.keywords import ClusterLabel

LINKAGES = ("ward", "average", "complete", "single")
DEFAULT_BRANCHING = 4
DEFAULT_TOP_MAX = 8  # "a handful" of nodes at the top


# --- merge trees ------------------------------------------------------------------------------

def weighted_linkage(centroids: np.ndarray, weights: np.ndarray | None = None, method: str = "ward") -> np.ndarray:
    """A scipy-format linkage matrix over ``centroids``, each weighing ``weights`` documents.

    Row ``i`` merges clusters ``Z[i, 0]`` and ``Z[i, 1]`` (ids ``< k`` are the
    centroids, ``k + j`` the cluster made by row ``j``) at height ``Z[i, 2]``;
    ``Z[i, 3]`` counts the centroids below. Heights follow scipy's definitions,
    so with unit weights the result equals ``scipy.cluster.hierarchy.linkage``.
    """
    from scipy.cluster import hierarchy as sch

    if method not in LINKAGES:
        raise ValueError(f"unknown linkage {method!r}; valid: {', '.join(LINKAGES)}")
    C = np.array(centroids, dtype=np.float64)  # a copy: merged centroids are written in place
    k = len(C)
    if k < 2:
        return np.zeros((0, 4))
    if method in ("single", "complete"):
        return sch.linkage(C, method=method)
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64).copy()
    if w.shape != (k,) or (w <= 0).any():
        raise ValueError("weights: one positive weight per centroid")
    sq = np.einsum("ij,ij->i", C, C)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * C @ C.T, 0.0)
    if method == "ward":
        D = dist2 * (w[:, None] * w[None, :]) / (w[:, None] + w[None, :])
    else:
        D = np.sqrt(dist2)
    np.fill_diagonal(D, np.inf)
    ids = np.arange(k)
    leaves = np.ones(k)
    Z = np.zeros((k - 1, 4))
    for step in range(k - 1):
        i, j = divmod(int(np.argmin(D)), k)
        if i > j:
            i, j = j, i
        d = D[i, j]
        height = math.sqrt(2.0 * d) if method == "ward" else d
        a, b = sorted((ids[i], ids[j]))
        Z[step] = (a, b, height, leaves[i] + leaves[j])
        wi, wj = w[i], w[j]
        if method == "ward":
            C[i] = (wi * C[i] + wj * C[j]) / (wi + wj)
            w[i] = wi + wj
            diff = C - C[i]
            row = np.einsum("ij,ij->i", diff, diff) * (w[i] * w) / (w[i] + w)
        else:
            row = (wi * D[i] + wj * D[j]) / (wi + wj)
            w[i] = wi + wj
        alive = np.isfinite(D[j]) | np.isfinite(D[i])  # clusters still to merge (before j is retired)
        alive[i] = alive[j] = False
        row = np.where(alive, row, np.inf)
        D[i, :] = row
        D[:, i] = row
        D[j, :] = np.inf
        D[:, j] = np.inf
        ids[i] = k + step
        leaves[i] += leaves[j]
    return Z


def hdbscan_linkage(estimator: Any, point_labels: np.ndarray, cluster_ids: Sequence[int]) -> np.ndarray | None:
    """The merge tree of hdbscan's condensed tree over ``cluster_ids``, or None if it cannot be read.

    Each selected cluster of the condensed tree is matched to the label most of
    its points carry; internal nodes above two or more selected clusters become
    merges at height ``1 / lambda`` of their split.
    """
    try:
        tree = estimator.condensed_tree_.to_numpy()
        selected = list(estimator.condensed_tree_._select_clusters())
    except (AttributeError, ValueError, TypeError):
        return None
    point_labels = np.asarray(point_labels)
    n = len(point_labels)
    parent, child, lam = tree["parent"].astype(np.int64), tree["child"].astype(np.int64), tree["lambda_val"]
    clusters_only = child >= n
    children: dict[int, list[int]] = {}
    birth: dict[int, float] = {}
    for p, c, l in zip(parent[clusters_only], child[clusters_only], lam[clusters_only]):
        children.setdefault(int(p), []).append(int(c))
        birth[int(c)] = float(l)
    # which selected cluster each cluster node belongs to (itself or its nearest selected ancestor)
    owner: dict[int, int] = {}
    stack = [(int(parent.min()), None)] if len(parent) else []
    selected_set = set(int(s) for s in selected)
    while stack:
        node, inherited = stack.pop()
        mine = node if node in selected_set else inherited
        if mine is not None:
            owner[node] = mine
        stack.extend((c, mine) for c in children.get(node, []))
    votes: dict[int, dict[int, int]] = {}
    points = ~clusters_only
    for p, c in zip(parent[points], child[points]):
        s = owner.get(int(p))
        if s is not None and 0 <= c < n and point_labels[c] >= 0:
            votes.setdefault(s, {}).setdefault(int(point_labels[c]), 0)
            votes[s][int(point_labels[c])] += 1
    label_of = {s: max(v.items(), key=lambda kv: kv[1])[0] for s, v in votes.items()}
    leaf_index = {cid: i for i, cid in enumerate(cluster_ids)}
    node_leaf = {s: leaf_index[l] for s, l in label_of.items() if l in leaf_index}
    if sorted(node_leaf.values()) != list(range(len(cluster_ids))):
        return None  # not a one-to-one match: let the caller fall back to the centroids
    k = len(cluster_ids)
    merges: list[tuple[int, int, float]] = []  # (a, b, height) in post-order; ids as in linkage
    next_id = [k]

    def reduce(node: int) -> int | None:
        if node in node_leaf:
            return node_leaf[node]
        below = [r for r in (reduce(c) for c in children.get(node, [])) if r is not None]
        if not below:
            return None
        split = [birth[c] for c in children.get(node, [])]
        height = 1.0 / max(min(split), 1e-12)
        current = below[0]
        for other in below[1:]:
            merges.append((current, other, height))
            current = next_id[0]
            next_id[0] += 1
        return current

    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(tree) + 1000))
    reduce(int(parent.min()))
    if len(merges) != k - 1:
        return None
    # linkage rows must come in merge order with non-decreasing heights; post-order keeps children first
    order = np.lexsort((np.arange(len(merges)), [m[2] for m in merges]))
    renumber = {k + old: k + new for new, old in enumerate(order)}
    Z = np.zeros((k - 1, 4))
    sizes = np.ones(2 * k - 1)
    for new, old in enumerate(order):
        a, b, h = merges[old]
        a, b = renumber.get(a, a), renumber.get(b, b)
        heights_below = [Z[x - k, 2] for x in (a, b) if x >= k]
        h = max([h, *heights_below])  # guard against equal/odd lambdas: keep the tree monotonic
        sizes[k + new] = sizes[a] + sizes[b]
        Z[new] = (min(a, b), max(a, b), h, sizes[k + new])
    return Z


def layers_linkage(point_labels: np.ndarray, cluster_ids: Sequence[int],
                   coarser: Sequence[np.ndarray]) -> np.ndarray | None:
    """The merge tree given by coarser clusterings of the same points (EVoC's layers), or None.

    Each cluster's parent in a coarser layer is the label most of its points carry there;
    two clusters merge at height ``l + 1`` where ``l`` is the first coarser layer giving them
    the same parent, and clusters that never share one merge above every layer.
    """
    from scipy.cluster import hierarchy as sch
    from scipy.spatial.distance import squareform

    k = len(cluster_ids)
    if k < 2 or not len(coarser):
        return None
    point_labels = np.asarray(point_labels)
    parents = np.full((len(coarser), k), -1, dtype=np.int64)
    for l, layer in enumerate(coarser):
        layer = np.asarray(layer)
        if layer.shape != point_labels.shape:
            return None
        for i, c in enumerate(cluster_ids):
            votes = layer[(point_labels == c) & (layer >= 0)]
            if len(votes):
                parents[l, i] = np.bincount(votes).argmax()
    height = np.full((k, k), float(len(coarser) + 1))
    for l in range(len(coarser) - 1, -1, -1):
        same = (parents[l][:, None] == parents[l][None, :]) & (parents[l][:, None] >= 0)
        height[same] = l + 1
    np.fill_diagonal(height, 0.0)
    return sch.linkage(squareform(height, checks=False), method="single")


# --- levels -----------------------------------------------------------------------------------

def level_sizes(k: int, levels: int | None = None, branching: int | None = None,
                top_nodes: int | None = None) -> list[int]:
    """How many nodes each level holds, top first; the last entry is ``k`` (the clusters).

    ``levels`` counts the clusters' own level (2 = a top level above the
    clusters); ``branching`` is the typical number of children per parent;
    ``top_nodes`` fixes the top's size. With ``branching`` the top holds at
    most ``branching`` nodes; by default, branching 4 up to a top of at most 8. Fewer than 3 clusters have no parents.
    """
    if levels is not None and branching is not None:
        raise ValueError("give either levels or branching, not both")
    if k <= 2:
        return [k] if k else []
    if top_nodes is not None:
        top_nodes = max(1, min(int(top_nodes), k - 1))
    if levels is not None:
        if levels < 2:
            raise ValueError("levels: at least 2 (a top level above the clusters)")
        top = top_nodes or min(DEFAULT_TOP_MAX, max(2, round(k ** (1 / levels))))
        top = min(top, k - 1)
        sizes = [round(top * (k / top) ** (j / (levels - 1))) for j in range(levels)]
    else:
        b = branching or DEFAULT_BRANCHING
        if b < 2:
            raise ValueError("branching: at least 2")
        top_max = top_nodes or branching or DEFAULT_TOP_MAX
        sizes = [k]
        s = k
        while True:
            s = max(2, math.ceil(s / b))  # a top of one node says nothing
            if top_nodes is not None:
                s = max(s, top_nodes)
            sizes.append(s)
            if s <= top_max or s >= sizes[-2]:
                break
        sizes.reverse()
    sizes[-1] = k
    out: list[int] = []
    for s in sizes:  # strictly increasing, at most k
        s = int(min(max(s, 1), k))
        if not out or s > out[-1]:
            out.append(s)
    return out


@dataclass
class ClusterTree:
    """Nodes of a hierarchy: leaves are the clusters, parents have ids above them.

    Arrays are aligned by node; ``parent_id`` is -1 at the top level; level 0
    is the top, ``depth - 1`` the clusters.
    """

    node_id: np.ndarray
    parent_id: np.ndarray
    level: np.ndarray
    count: np.ndarray
    centroid: np.ndarray
    is_leaf: np.ndarray
    source: str = "centroids"

    @property
    def depth(self) -> int:
        return int(self.level.max()) + 1 if len(self.level) else 0

    def parent_of(self) -> dict[int, int]:
        return dict(zip(self.node_id.tolist(), self.parent_id.tolist()))

    def path(self, node: int) -> list[int]:
        """Node ids from the top down to ``node``."""
        parents = self.parent_of()
        out = [int(node)]
        while parents.get(out[-1], -1) >= 0:
            out.append(parents[out[-1]])
        return out[::-1]

    def ancestor_at(self, level: int) -> dict[int, int]:
        """Leaf id -> the id of its ancestor at ``level`` (itself at the leaf level)."""
        return {leaf: self.path(leaf)[level] for leaf in self.node_id[self.is_leaf].tolist()}

    def children(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {int(n): [] for n in self.node_id}
        for n, p in zip(self.node_id.tolist(), self.parent_id.tolist()):
            if p >= 0:
                out[p].append(n)
        return out

    def to_table(self) -> pa.Table:
        dim = self.centroid.shape[1] if self.centroid.ndim == 2 else 0
        return pa.table({
            "node_id": pa.array(self.node_id, pa.int32()),
            "parent_id": pa.array(self.parent_id, pa.int32()),
            "level": pa.array(self.level, pa.int16()),
            "count": pa.array(self.count, pa.int64()),
            "is_leaf": pa.array(self.is_leaf, pa.bool_()),
            "centroid": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(self.centroid, np.float32).reshape(-1)), dim),
        }).replace_schema_metadata({"source": self.source})

    @classmethod
    def from_table(cls, table: pa.Table) -> "ClusterTree":
        centroid = table.column("centroid").combine_chunks()
        dim = centroid.type.list_size
        source = (table.schema.metadata or {}).get(b"source", b"centroids").decode()
        return cls(
            node_id=table.column("node_id").to_numpy().astype(np.int64),
            parent_id=table.column("parent_id").to_numpy().astype(np.int64),
            level=table.column("level").to_numpy().astype(np.int64),
            count=table.column("count").to_numpy().astype(np.int64),
            centroid=centroid.flatten().to_numpy(zero_copy_only=False).reshape(len(centroid), dim),
            is_leaf=table.column("is_leaf").to_numpy(zero_copy_only=False).astype(bool),
            source=source,
        )


def build_tree(cluster_ids: Sequence[int], counts: Sequence[int], centroids: np.ndarray, Z: np.ndarray,
               sizes: Sequence[int], source: str = "centroids") -> ClusterTree:
    """Cut the merge tree ``Z`` into the nested levels ``sizes`` (top first, last = the clusters)."""
    from scipy.cluster.hierarchy import cut_tree

    cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    centroids = np.asarray(centroids, dtype=np.float64).reshape(len(cluster_ids), -1)
    k = len(cluster_ids)
    parent_sizes = [int(s) for s in sizes[:-1]]
    node_ids = [cluster_ids]
    parents = []
    levels = [np.full(k, len(parent_sizes), dtype=np.int64)]
    node_counts = [counts]
    node_centroids = [centroids]
    leaves = [np.ones(k, dtype=bool)]
    if not parent_sizes or k < 3:
        return ClusterTree(cluster_ids, np.full(k, -1, np.int64), np.zeros(k, np.int64), counts,
                           centroids.astype(np.float32), np.ones(k, bool), source)
    groups = cut_tree(Z, n_clusters=parent_sizes)  # (k, levels) nested group numbers
    next_id = int(cluster_ids.max()) + 1
    level_ids: list[np.ndarray] = []  # per parent level: leaf -> node id
    for level in range(len(parent_sizes)):
        g = groups[:, level]
        # number groups in the order of their smallest cluster id, for stable ids
        first = {}
        for leaf in np.argsort(cluster_ids, kind="stable"):
            first.setdefault(int(g[leaf]), len(first))
        ids = np.array([next_id + first[int(x)] for x in g], dtype=np.int64)
        next_id += len(first)
        level_ids.append(ids)
    leaf_parent = level_ids[-1]
    for level, ids in enumerate(level_ids):
        unique = np.unique(ids)
        w = np.array([counts[ids == u].sum() for u in unique], dtype=np.float64)
        cent = np.array([(centroids[ids == u] * counts[ids == u, None]).sum(axis=0) for u in unique]) / \
            np.maximum(w, 1)[:, None]
        if level == 0:
            par = np.full(len(unique), -1, np.int64)
        else:
            above = level_ids[level - 1]
            par = np.array([above[np.flatnonzero(ids == u)[0]] for u in unique], dtype=np.int64)
        node_ids.append(unique)
        parents.append(par)
        levels.append(np.full(len(unique), level, np.int64))
        node_counts.append(w.astype(np.int64))
        node_centroids.append(cent)
        leaves.append(np.zeros(len(unique), bool))
    parents.insert(0, leaf_parent)
    return ClusterTree(
        node_id=np.concatenate(node_ids), parent_id=np.concatenate(parents), level=np.concatenate(levels),
        count=np.concatenate(node_counts), centroid=np.concatenate(node_centroids).astype(np.float32),
        is_leaf=np.concatenate(leaves), source=source,
    )


def cluster_hierarchy(cluster_ids: Sequence[int], counts: Sequence[int], centroids: np.ndarray, *,
                      algorithm: str = "", estimator: Any = None, point_labels: np.ndarray | None = None,
                      levels: int | None = None, branching: int | None = None, top_nodes: int | None = None,
                      linkage: str = "ward") -> ClusterTree:
    """The tree of a run's clusters: the algorithm's own tree when it has one, else the centroids'."""
    from cluster_assets.algorithms import REGISTRY

    k = len(cluster_ids)
    sizes = level_sizes(k, levels, branching, top_nodes)
    Z, source = None, "centroids"
    info = REGISTRY.get(algorithm)
    if info is not None and info.tree and estimator is not None and point_labels is not None and k >= 3:
        Z, source = info.tree(estimator, point_labels, list(cluster_ids))
    if Z is None and k >= 3:
        Z = weighted_linkage(centroids, np.maximum(np.asarray(counts, dtype=np.float64), 1), linkage)
    return build_tree(cluster_ids, counts, centroids, Z if Z is not None else np.zeros((0, 4)), sizes, source)


# --- labels for parents -----------------------------------------------------------------------

@dataclass
class ChildSummary:
    node_id: int
    label: str
    keywords: list[str]
    count: int
    summary: str = ""


@dataclass
class ParentEvidence:
    """What a labeler is told about a parent: its children's names and the merged documents' keywords."""

    node_id: int
    level: int
    count: int
    children: list[ChildSummary]
    keywords: list[str]
    data_label: ClusterLabel
    extra: dict = field(default_factory=dict)

    def prompt_text(self, max_children: int = 30) -> str:
        """The children as a prompt section: one line each, largest first."""
        lines = [f"A group of {self.count} documents made of {len(self.children)} sub-clusters:"]
        for c in sorted(self.children, key=lambda c: -c.count)[:max_children]:
            words = ", ".join(c.keywords[:8])
            lines.append(f"- {c.label} ({c.count} documents; keywords: {words})")
        if self.keywords:
            lines.append(f"Keywords of the whole group: {', '.join(self.keywords[:10])}")
        return "\n".join(lines)


ParentLabelHook = Callable[[list[ParentEvidence]], Any]


def _combined_children_label(children: list[ChildSummary]) -> str:
    ordered = sorted(children, key=lambda c: -c.count)
    label = " · ".join(c.label for c in ordered[:2])
    if len(ordered) > 2:
        label += f" (+{len(ordered) - 2} more)"
    return label


def parent_keywords(tree: ClusterTree, texts: Sequence[str], sample_leaf: np.ndarray,
                    top_n: int = 10, counts: kw.TermCounts | None = None) -> dict[int, list[str]]:
    """Top words of every parent by class-based TF-IDF over the documents it merges.

    Term frequencies are those of the parent's documents; the inverse document
    frequency is taken over the clusters themselves, as if each cluster were a
    class. With only a handful of parents per level, an idf over the parents
    would favour words every document shares ("handwritten", "digit"); over
    the clusters those words weigh little and the words that set a branch
    apart come first. Words only, from the tokenisation the leaves' keywords
    use (``counts``, or ``texts`` tokenised here).
    """
    sample_leaf = np.asarray(sample_leaf, dtype=np.int64)
    parents = tree.node_id[~tree.is_leaf].tolist()
    out: dict[int, list[str]] = {p: [] for p in parents}
    counts = counts if counts is not None else kw.TermCounts.of(list(texts))
    if not parents or counts is None:
        return out
    terms = counts.terms[~counts.phrase]
    leaves = tree.node_id[tree.is_leaf].tolist()
    leaf_row = {leaf: i for i, leaf in enumerate(leaves)}
    rows = np.array([leaf_row.get(int(c), -1) for c in sample_leaf], dtype=np.int64)
    per_leaf = counts.per_group(rows, len(leaves), terms=~counts.phrase)
    words_per_leaf = per_leaf.sum(axis=1)
    mean_words = words_per_leaf[words_per_leaf > 0].mean() if (words_per_leaf > 0).any() else 1.0
    term_freq = per_leaf.sum(axis=0)
    idf = np.log(1 + mean_words / np.where(term_freq == 0, 1, term_freq))
    for parent in parents:
        under = [leaf_row[leaf] for leaf in leaves if parent in tree.path(leaf)]
        merged = per_leaf[under].sum(axis=0)
        total = merged.sum()
        if total == 0:
            continue
        scores = merged / total * idf
        top = np.argsort(-scores, kind="stable")[:top_n]
        out[parent] = [str(terms[i]) for i in top if scores[i] > 0]
    return out


def label_parents(tree: ClusterTree, leaf_labels: dict[int, ClusterLabel], texts: Sequence[str],
                  sample_leaf: np.ndarray, hook: ParentLabelHook | None = None,
                  top_n: int = 10, term_counts: kw.TermCounts | None = None) -> tuple[dict[int, ClusterLabel], dict[str, Any]]:
    """Labels for every parent node, bottom level first, and metadata on how they were made.

    Data labels: class-based TF-IDF over the documents each parent merges
    (``texts`` with their leaf cluster ``sample_leaf``; -1 = noise), see
    ``parent_keywords``; their confidence is the leaves' (``keyword_lift``), against
    the other branches of their level. ``term_counts``: ``texts`` already tokenised. A ``hook``
    (e.g. an LLM labeler's ``label_parents``) receives ``ParentEvidence`` for
    each level and returns labels (a list of ``ClusterLabel`` or an object with
    ``.labels``); on any error, or for nodes it leaves out, the data labels stay.
    """
    sample_leaf = np.asarray(sample_leaf, dtype=np.int64)
    labels: dict[int, ClusterLabel] = dict(leaf_labels)
    meta: dict[str, Any] = {"parent_labeling_source": "data"}
    if tree.depth < 2:
        return {}, meta
    children = tree.children()
    counts = dict(zip(tree.node_id.tolist(), tree.count.tolist()))
    out: dict[int, ClusterLabel] = {}
    if term_counts is None and len(texts):
        term_counts = kw.TermCounts.of(list(texts))
    words = parent_keywords(tree, texts, sample_leaf, top_n, term_counts) if term_counts is not None else {}
    for level in range(tree.depth - 2, -1, -1):
        ancestor = tree.ancestor_at(level)
        doc_labels = np.array([ancestor.get(int(c), -1) if c >= 0 else -1 for c in sample_leaf], dtype=np.int64)
        coverage = kw.keyword_lift(list(texts), doc_labels, words, counts=term_counts) if term_counts is not None else {}
        nodes = tree.node_id[(tree.level == level) & ~tree.is_leaf].tolist()
        evidence = []
        for node in nodes:
            kids = [ChildSummary(c, labels[c].label if c in labels else f"Cluster {c}",
                                 list(labels[c].keywords) if c in labels else [], counts.get(c, 0),
                                 labels[c].summary if c in labels else "")
                    for c in children[node]]
            node_words = words.get(node, [])
            reps = [labels[c].representative_ids[0] for c in children[node]
                    if c in labels and labels[c].representative_ids]
            if node_words:
                label = " / ".join(node_words[:3])
            else:
                label = _combined_children_label(kids)
            summary = f"{counts.get(node, 0)} documents in {len(kids)} clusters: " + \
                "; ".join(k.label for k in sorted(kids, key=lambda k: -k.count)[:5])
            data = ClusterLabel(node, label, summary, node_words, reps, round(coverage.get(node, 0.0), 4))
            evidence.append(ParentEvidence(node, level, counts.get(node, 0), kids, node_words, data))
        chosen = {e.node_id: e.data_label for e in evidence}
        if hook is not None and evidence:
            try:
                result = hook(evidence)
                given = getattr(result, "labels", result) or []
                for item in given:
                    if isinstance(item, ClusterLabel) and item.cluster_id in chosen:
                        chosen[item.cluster_id] = item
                source = getattr(result, "source", "llm")
                meta["parent_labeling_source"] = source
                # a labeler's own metadata (e.g. fallback reasons), never its keys
                for key, value in (getattr(result, "metadata", None) or {}).items():
                    meta[f"parent_{key}" if not key.startswith("parent_") else key] = value
            except Exception as exc:  # labels never block a run
                meta["parent_labeling_source"] = "fallback"
                meta["parent_fallback_reason"] = _scrubbed(f"{type(exc).__name__}: {str(exc)[:200]}")
        labels.update(chosen)
        out.update(chosen)
    return out, meta


def _scrubbed(text: str) -> str:
    """An error message without API keys (from the environment, or anything shaped like one)."""
    import os

    from cluster_assets.labeling.providers import KEY_VARIABLES
    from cluster_assets.labeling.providers.base import scrub

    return scrub(text, [os.environ.get(name) for names in KEY_VARIABLES.values() for name in names])


def node_paths(tree: ClusterTree, labels: dict[int, ClusterLabel]) -> dict[int, list[str]]:
    """Leaf id -> the labels from the top down to the leaf (``cluster_path``)."""
    return {
        leaf: [labels[n].label if n in labels else f"Cluster {n}" for n in tree.path(leaf)]
        for leaf in tree.node_id[tree.is_leaf].tolist()
    }
