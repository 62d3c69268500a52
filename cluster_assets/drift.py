"""Drift between two runs' assignments, and the size profile of one run's assignments.

Pure numpy/Arrow functions (no Dagster): the asset checks in ``checks.py`` call them.
Cluster ids are arbitrary between two fits (k-means may call the same group 3 one day
and 7 the next), so drift matches the two runs' clusters first (Hungarian matching on
the contingency table) and then counts the documents whose cluster changed; the
adjusted Rand index, which needs no matching, is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

ID = "document_id"


@dataclass(frozen=True)
class Drift:
    compared: int  # documents present in both runs
    changed: int  # of those, documents whose (matched) cluster differs
    ari: float  # adjusted Rand index between the two runs on the compared documents

    @property
    def changed_share(self) -> float:
        return self.changed / self.compared if self.compared else 0.0


def aligned_labels(previous: pa.Table, current: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids of the documents present in both tables, in the same order."""
    prev_ids = previous.column(ID).to_numpy(zero_copy_only=False)
    where = pd.Index(prev_ids).get_indexer(current.column(ID).to_numpy(zero_copy_only=False))
    found = where >= 0
    prev = previous.column("cluster_id").to_numpy()[where[found]]
    curr = current.column("cluster_id").to_numpy()[found]
    return prev.astype(np.int64), curr.astype(np.int64)


def matched_changes(previous: np.ndarray, current: np.ndarray) -> int:
    """Documents that changed cluster once each current cluster is matched to at most one previous one.

    Noise (-1) matches only noise.
    """
    from scipy.optimize import linear_sum_assignment

    if len(previous) == 0:
        return 0
    prev_ids, prev_inv = np.unique(previous, return_inverse=True)
    curr_ids, curr_inv = np.unique(current, return_inverse=True)
    table = np.zeros((len(prev_ids), len(curr_ids)), dtype=np.int64)
    np.add.at(table, (prev_inv, curr_inv), 1)
    kept = 0
    prev_noise = np.flatnonzero(prev_ids == -1)
    curr_noise = np.flatnonzero(curr_ids == -1)
    if len(prev_noise) and len(curr_noise):
        kept += int(table[prev_noise[0], curr_noise[0]])
    rows = np.flatnonzero(prev_ids >= 0)
    cols = np.flatnonzero(curr_ids >= 0)
    if len(rows) and len(cols):
        sub = table[np.ix_(rows, cols)]
        r, c = linear_sum_assignment(sub, maximize=True)
        kept += int(sub[r, c].sum())
    return int(len(previous) - kept)


def drift(previous: pa.Table, current: pa.Table) -> Drift:
    from sklearn.metrics import adjusted_rand_score

    prev, curr = aligned_labels(previous, current)
    ari = float(adjusted_rand_score(prev, curr)) if len(prev) else 1.0
    return Drift(compared=len(prev), changed=matched_changes(prev, curr), ari=ari)


@dataclass(frozen=True)
class Sizes:
    documents: int
    noise: int
    sizes: dict[int, int]  # cluster id -> documents (noise left out)

    @property
    def noise_share(self) -> float:
        return self.noise / self.documents if self.documents else 0.0

    @property
    def largest_share(self) -> float:
        return max(self.sizes.values()) / self.documents if self.sizes and self.documents else 0.0

    def empty_clusters(self, min_size: int = 1) -> list[int]:
        """Cluster ids 0..max with fewer than ``min_size`` documents (a missing id is an empty cluster)."""
        if not self.sizes:
            return []
        return [c for c in range(max(self.sizes) + 1) if self.sizes.get(c, 0) < min_size]


def cluster_sizes(assignments: pa.Table) -> Sizes:
    labels = assignments.column("cluster_id").to_numpy().astype(np.int64)
    ids, counts = np.unique(labels, return_counts=True)
    sizes = {int(c): int(n) for c, n in zip(ids, counts) if c >= 0}
    noise = int(counts[ids == -1].sum()) if len(ids) else 0
    return Sizes(documents=len(labels), noise=noise, sizes=sizes)
