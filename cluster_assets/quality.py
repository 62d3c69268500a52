"""How good a clustering is: per cluster and for the whole run.

Per cluster (exact, over every assigned document, in one streaming pass):
- ``cohesion``: mean cosine similarity of the members to their centroid. The
  mean of ``cos(x, c)`` is ``mean(x / |x|) . c / |c|``, so summing unit vectors
  per cluster while streaming gives it without a second pass;
- ``separation``: cosine distance from the centroid to the nearest other
  centroid (``nearest_cluster_id`` names it);
- ``count``.

Whole run (on a bounded sample, noise left out): silhouette (scikit-learn's,
at most ``SILHOUETTE_SAMPLE`` points), Davies-Bouldin (scikit-learn's), and the
noise share over every document.

Between runs (used by the asset checks in ``checks.py``): ``drift`` (share of
documents that changed cluster after matching cluster ids, and the adjusted
Rand index) and ``cluster_sizes`` (noise, empty and giant clusters) over an
assignments table.

Pure numpy: no Dagster import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

ID = "document_id"
SILHOUETTE_SAMPLE = 5_000
DAVIES_BOULDIN_SAMPLE = 50_000


def unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms == 0, 1.0, norms)


class ClusterStats:
    """Per-cluster count, sum and sum of unit vectors, accumulated batch by batch."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.sums: dict[int, np.ndarray] = {}
        self.unit_sums: dict[int, np.ndarray] = {}

    def update(self, X: np.ndarray, labels: np.ndarray) -> "ClusterStats":
        from scipy import sparse

        labels = np.asarray(labels)
        if not len(labels):
            return self
        clusters, inverse = np.unique(labels, return_inverse=True)
        onehot = sparse.csr_matrix((np.ones(len(labels)), (inverse, np.arange(len(labels)))),
                                   shape=(len(clusters), len(labels)))
        X64 = np.asarray(X, dtype=np.float64)
        sums = np.asarray(onehot @ X64)
        units = np.asarray(onehot @ unit_rows(X64))
        per = np.diff(onehot.indptr)
        for row, c in enumerate(clusters.tolist()):
            self.counts[c] = self.counts.get(c, 0) + int(per[row])
            self.sums[c] = self.sums.get(c, 0) + sums[row]
            self.unit_sums[c] = self.unit_sums.get(c, 0) + units[row]
        return self

    def cluster_ids(self) -> list[int]:
        return sorted(c for c in self.counts if c >= 0)

    def centroids(self, cluster_ids: list[int] | None = None) -> np.ndarray:
        ids = self.cluster_ids() if cluster_ids is None else cluster_ids
        return np.array([self.sums[c] / self.counts[c] for c in ids]).reshape(len(ids), -1)

    def cohesion(self, cluster_ids: list[int] | None = None, centroids: np.ndarray | None = None) -> np.ndarray:
        """Mean cosine similarity of each cluster's members to its centroid."""
        ids = self.cluster_ids() if cluster_ids is None else cluster_ids
        if not ids:
            return np.zeros(0)
        C = self.centroids(ids) if centroids is None else np.asarray(centroids, dtype=np.float64)
        mean_units = np.array([self.unit_sums[c] / self.counts[c] for c in ids])
        return np.einsum("ij,ij->i", mean_units, unit_rows(C))


def cohesion(X: np.ndarray, labels: np.ndarray, cluster_ids: list[int], centroids: np.ndarray) -> np.ndarray:
    """Mean cosine similarity to the centroid, from the documents themselves (in memory)."""
    return ClusterStats().update(X, labels).cohesion(cluster_ids, centroids)


def separation(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each centroid: the index of the nearest other centroid and the cosine distance to it.

    A single cluster has no neighbour: index -1 and distance NaN.
    """
    C = unit_rows(np.asarray(centroids, dtype=np.float64))
    k = len(C)
    if k < 2:
        return np.full(k, -1, np.int64), np.full(k, np.nan)
    sim = C @ C.T
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argmax(sim, axis=1)
    return nearest.astype(np.int64), 1.0 - sim[np.arange(k), nearest]


def _clustered(X: np.ndarray, labels: np.ndarray, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.flatnonzero(np.asarray(labels) >= 0)
    if len(keep) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(keep, limit, replace=False))
    return np.asarray(X)[keep], np.asarray(labels)[keep]


def silhouette(X: np.ndarray, labels: np.ndarray, seed: int = 0, sample: int = SILHOUETTE_SAMPLE,
               metric: str = "euclidean") -> float | None:
    """scikit-learn's silhouette on at most ``sample`` clustered points; None if it is undefined."""
    from sklearn.metrics import silhouette_score

    Xs, ls = _clustered(X, labels, sample, seed)
    n_labels = len(np.unique(ls))
    if n_labels < 2 or n_labels >= len(ls):
        return None
    return float(silhouette_score(Xs, ls, metric=metric))


def davies_bouldin(X: np.ndarray, labels: np.ndarray, seed: int = 0,
                   sample: int = DAVIES_BOULDIN_SAMPLE) -> float | None:
    """scikit-learn's Davies-Bouldin index (lower is better) on the clustered points of a bounded sample."""
    from sklearn.metrics import davies_bouldin_score

    Xs, ls = _clustered(X, labels, sample, seed)
    if len(np.unique(ls)) < 2:
        return None
    return float(davies_bouldin_score(Xs, ls))


@dataclass
class Quality:
    """The readout of one run."""

    cluster_ids: list[int]
    counts: np.ndarray
    cohesion: np.ndarray
    separation: np.ndarray
    nearest_cluster_id: np.ndarray
    silhouette: float | None
    davies_bouldin: float | None
    noise_share: float
    documents: int
    sample_size: int

    def columns(self) -> dict[str, pa.Array]:
        """Per-cluster columns, aligned with ``cluster_ids``."""
        return {
            "cohesion": pa.array(np.round(self.cohesion, 6), pa.float32()),
            "separation": pa.array(np.round(self.separation, 6), pa.float32(),
                                   mask=np.isnan(self.separation) if len(self.separation) else None),
            "nearest_cluster_id": pa.array(self.nearest_cluster_id, pa.int32(), mask=self.nearest_cluster_id < 0),
        }

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"noise_share": round(self.noise_share, 4), "quality_sample": self.sample_size}
        if self.silhouette is not None:
            out["silhouette"] = round(self.silhouette, 4)
        if self.davies_bouldin is not None:
            out["davies_bouldin"] = round(self.davies_bouldin, 4)
        if len(self.cohesion):
            out["mean_cohesion"] = round(float(np.average(self.cohesion, weights=np.maximum(self.counts, 1))), 4)
            out["min_cohesion"] = round(float(self.cohesion.min()), 4)
        finite = self.separation[np.isfinite(self.separation)] if len(self.separation) else self.separation
        if len(finite):
            out["min_separation"] = round(float(finite.min()), 4)
        return out

    def markdown(self, limit: int = 15) -> str:
        """The least cohesive clusters first: where a user should look."""
        if not self.cluster_ids:
            return "No clusters."
        rows = ["| cluster | documents | cohesion | separation | nearest |", "| --- | --- | --- | --- | --- |"]
        order = np.argsort(self.cohesion, kind="stable")[:limit]
        for i in order:
            sep = "" if np.isnan(self.separation[i]) else f"{self.separation[i]:.3f}"
            near = "" if self.nearest_cluster_id[i] < 0 else str(int(self.nearest_cluster_id[i]))
            rows.append(f"| {self.cluster_ids[i]} | {int(self.counts[i])} | {self.cohesion[i]:.3f} | {sep} | {near} |")
        return "\n".join(rows)


def assess(stats: ClusterStats, sample_X: np.ndarray, sample_labels: np.ndarray, seed: int = 0,
           silhouette_sample: int = SILHOUETTE_SAMPLE) -> Quality:
    """The run's readout from streamed per-cluster stats and the fitted sample."""
    ids = stats.cluster_ids()
    C = stats.centroids(ids) if ids else np.zeros((0, np.asarray(sample_X).shape[1]))
    nearest_index, sep = separation(C)
    nearest = np.array([ids[i] if i >= 0 else -1 for i in nearest_index], dtype=np.int64)
    documents = sum(stats.counts.values())
    noise = stats.counts.get(-1, 0)
    return Quality(
        cluster_ids=ids,
        counts=np.array([stats.counts[c] for c in ids], dtype=np.int64),
        cohesion=stats.cohesion(ids, C) if ids else np.zeros(0),
        separation=sep,
        nearest_cluster_id=nearest,
        silhouette=silhouette(sample_X, sample_labels, seed, silhouette_sample),
        davies_bouldin=davies_bouldin(sample_X, sample_labels, seed),
        noise_share=noise / documents if documents else 0.0,
        documents=documents,
        sample_size=int(min(silhouette_sample, int((np.asarray(sample_labels) >= 0).sum()))),
    )


# --- between runs: drift and sizes of an assignments table (document_id, cluster_id) --------------

@dataclass
class Drift:
    compared: int  # documents present in both runs
    changed: int  # of those, how many changed cluster after matching ids
    ari: float  # adjusted Rand index of the two labelings on the shared documents
    mapping: dict[int, int]  # previous cluster id -> the current cluster id it was matched to

    @property
    def changed_share(self) -> float:
        return self.changed / self.compared if self.compared else 0.0


def contingency(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(previous ids, current ids, counts[i, j] of documents in previous i and current j)."""
    prev_ids, prev_inv = np.unique(previous, return_inverse=True)
    cur_ids, cur_inv = np.unique(current, return_inverse=True)
    table = np.zeros((len(prev_ids), len(cur_ids)), dtype=np.int64)
    np.add.at(table, (prev_inv, cur_inv), 1)
    return prev_ids, cur_ids, table


def aligned_labels(previous: pa.Table, current: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The cluster ids of the documents present in both tables, in the same order."""
    import pandas as pd

    prev_ids = previous.column(ID).to_numpy(zero_copy_only=False)
    cur_ids = current.column(ID).to_numpy(zero_copy_only=False)
    where = pd.Index(prev_ids).get_indexer(cur_ids)
    found = where >= 0
    prev = previous.column("cluster_id").to_numpy(zero_copy_only=False)[where[found]].astype(np.int64)
    cur = current.column("cluster_id").to_numpy(zero_copy_only=False)[found].astype(np.int64)
    return prev, cur


def drift(previous: pa.Table, current: pa.Table) -> Drift:
    """How much the clustering moved between two assignments tables.

    Cluster ids are arbitrary from run to run, so previous and current clusters
    are first matched one to one to keep the most documents in place (the
    Hungarian method on the contingency table); noise (-1) matches only noise.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score

    prev, cur = aligned_labels(previous, current)
    if not len(prev):
        return Drift(0, 0, 1.0, {})
    prev_ids, cur_ids, table = contingency(prev, cur)
    weights = table.copy()
    noise_prev, noise_cur = prev_ids == -1, cur_ids == -1
    weights[noise_prev[:, None] != noise_cur[None, :]] = 0  # noise never matches a cluster
    rows, cols = linear_sum_assignment(-weights)
    kept = int(weights[rows, cols].sum())
    mapping = {int(prev_ids[r]): int(cur_ids[c]) for r, c in zip(rows, cols) if weights[r, c] > 0}
    return Drift(len(prev), len(prev) - kept, float(adjusted_rand_score(prev, cur)), mapping)


@dataclass
class Sizes:
    documents: int
    noise: int
    sizes: dict[int, int]  # cluster id -> documents (noise left out)

    @property
    def noise_share(self) -> float:
        return self.noise / self.documents if self.documents else 0.0

    @property
    def largest_share(self) -> float:
        return max(self.sizes.values(), default=0) / self.documents if self.documents else 0.0

    def empty_clusters(self, min_size: int) -> list[int]:
        """Ids in 0..max id holding fewer than ``min_size`` documents (a missing id holds none)."""
        top = max(self.sizes, default=-1)
        return [c for c in range(top + 1) if self.sizes.get(c, 0) < min_size]


def cluster_sizes(assignments: pa.Table) -> Sizes:
    labels = assignments.column("cluster_id").to_numpy(zero_copy_only=False)
    labels = labels[~np.isnan(labels)] if labels.dtype.kind == "f" else labels
    ids, counts = np.unique(labels.astype(np.int64), return_counts=True)
    sizes = {int(c): int(n) for c, n in zip(ids, counts) if c >= 0}
    noise = int(counts[ids == -1].sum()) if len(ids) else 0
    return Sizes(int(len(labels)), noise, sizes)
