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

Run-to-run drift is ``drift.py``'s (the asset checks).

Pure numpy: no Dagster import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

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
        # float32 products per batch (a million rows of embeddings stream through here), float64 totals
        onehot = sparse.csr_matrix((np.ones(len(labels), np.float32), (inverse, np.arange(len(labels)))),
                                   shape=(len(clusters), len(labels)))
        X32 = np.asarray(X, dtype=np.float32)
        sums = np.asarray(onehot @ X32, dtype=np.float64)
        units = np.asarray(onehot @ unit_rows(X32), dtype=np.float64)
        per = np.diff(onehot.indptr)
        for row, c in enumerate(clusters.tolist()):
            self.counts[c] = self.counts.get(c, 0) + int(per[row])
            self.sums[c] = self.sums.get(c, 0) + sums[row]
            self.unit_sums[c] = self.unit_sums.get(c, 0) + units[row]
        return self

    def merge(self, other: "ClusterStats") -> "ClusterStats":
        for c, n in other.counts.items():
            self.counts[c] = self.counts.get(c, 0) + n
            self.sums[c] = self.sums.get(c, 0) + other.sums[c]
            self.unit_sums[c] = self.unit_sums.get(c, 0) + other.unit_sums[c]
        return self

    def to_table(self) -> pa.Table:
        """One row per cluster (noise included): what ``from_table`` reads back."""
        ids = sorted(self.counts)
        dim = len(next(iter(self.sums.values()))) if self.sums else 0
        sums = np.array([self.sums[c] for c in ids], dtype=np.float64).reshape(-1)
        units = np.array([self.unit_sums[c] for c in ids], dtype=np.float64).reshape(-1)
        return pa.table({
            "cluster_id": pa.array(ids, pa.int32()),
            "count": pa.array([self.counts[c] for c in ids], pa.int64()),
            "sum": pa.FixedSizeListArray.from_arrays(pa.array(sums), dim) if dim else pa.array([], pa.list_(pa.float64())),
            "unit_sum": pa.FixedSizeListArray.from_arrays(pa.array(units), dim) if dim else pa.array([], pa.list_(pa.float64())),
        })

    @classmethod
    def from_table(cls, table: pa.Table) -> "ClusterStats":
        stats = cls()
        if not table.num_rows:
            return stats
        dim = table.schema.field("sum").type.list_size
        sums = table.column("sum").combine_chunks().flatten().to_numpy().reshape(-1, dim)
        units = table.column("unit_sum").combine_chunks().flatten().to_numpy().reshape(-1, dim)
        for i, (c, n) in enumerate(zip(table.column("cluster_id").to_pylist(), table.column("count").to_pylist())):
            stats.counts[c] = n
            stats.sums[c] = sums[i]
            stats.unit_sums[c] = units[i]
        return stats

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


@dataclass(frozen=True)
class Readout:
    """Documents, noise and count-weighted cohesion of some documents against given centroids, kept as sums:
    the readout of several files is the sum of theirs (``+``), so each file's can be stored on its own."""

    documents: int = 0
    noise_documents: int = 0
    centred_documents: int = 0  # members of the clusters that have a centroid: the cohesion's weights
    cosine_sum: float = 0.0  # those members' cosine similarity to their centroid, summed

    @classmethod
    def of(cls, stats: ClusterStats, centroids: dict[int, np.ndarray]) -> "Readout":
        ids = [c for c in stats.cluster_ids() if c in centroids]
        counts = np.array([stats.counts[c] for c in ids], dtype=np.int64)
        cohesion = stats.cohesion(ids, np.array([centroids[c] for c in ids]))
        # a cluster's cohesion is its members' mean cosine: times its count, their sum
        return cls(documents=sum(stats.counts.values()), noise_documents=stats.counts.get(-1, 0),
                   centred_documents=int(counts.sum()), cosine_sum=float(cohesion @ counts))

    def __add__(self, other: "Readout") -> "Readout":
        return Readout(self.documents + other.documents, self.noise_documents + other.noise_documents,
                       self.centred_documents + other.centred_documents, self.cosine_sum + other.cosine_sum)

    @property
    def cohesion(self) -> float:
        """The clusters' cohesion averaged with their counts as weights."""
        return self.cosine_sum / self.centred_documents if self.centred_documents else 0.0

    @property
    def noise_share(self) -> float:
        return self.noise_documents / self.documents if self.documents else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "Readout":
        return cls(int(value["documents"]), int(value["noise_documents"]), int(value["centred_documents"]),
                   float(value["cosine_sum"]))


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
    n_labels = len(np.unique(ls))
    if n_labels < 2 or n_labels >= len(ls):  # scikit-learn's own bounds: 2..n_samples-1 labels
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

