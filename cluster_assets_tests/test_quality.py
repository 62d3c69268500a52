"""The quality readout against scikit-learn's own functions on the digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.metrics import davies_bouldin_score, silhouette_score
from sklearn.metrics.pairwise import cosine_distances, cosine_similarity

from cluster_assets import quality


@pytest.fixture(scope="module")
def digits():
    X = load_digits().data.astype(np.float32)
    labels = KMeans(n_clusters=10, random_state=0, n_init="auto").fit_predict(X).astype(np.int64)
    labels[::17] = -1  # some noise, as a density algorithm would leave
    return X, labels


def streamed(X, labels, batch=256):
    stats = quality.ClusterStats()
    for start in range(0, len(X), batch):
        stats.update(X[start:start + batch], labels[start:start + batch])
    return stats


def test_streamed_cohesion_equals_mean_cosine_to_the_centroid(digits):
    X, labels = digits
    stats = streamed(X, labels)
    ids = stats.cluster_ids()
    assert ids == list(range(10))
    centroids = np.array([X[labels == c].mean(axis=0) for c in ids])
    np.testing.assert_allclose(stats.centroids(ids), centroids, rtol=1e-5, atol=1e-6)
    expected = [cosine_similarity(X[labels == c], centroids[i:i + 1]).mean() for i, c in enumerate(ids)]
    np.testing.assert_allclose(stats.cohesion(ids), expected, rtol=1e-6)
    # the in-memory helper agrees, and a cluster of identical points is perfectly cohesive
    np.testing.assert_allclose(quality.cohesion(X, labels, ids, centroids), expected, rtol=1e-6)
    same = np.tile(X[:1], (5, 1))
    assert quality.cohesion(same, np.zeros(5), [0], same[:1])[0] == pytest.approx(1.0)


def test_separation_is_the_cosine_distance_to_the_nearest_other_centroid(digits):
    X, labels = digits
    ids = sorted(set(labels.tolist()) - {-1})
    centroids = np.array([X[labels == c].mean(axis=0) for c in ids], dtype=np.float64)
    nearest, distance = quality.separation(centroids)
    D = cosine_distances(centroids)
    np.fill_diagonal(D, np.inf)
    np.testing.assert_array_equal(nearest, D.argmin(axis=1))
    np.testing.assert_allclose(distance, D.min(axis=1), rtol=1e-6, atol=1e-9)
    one, d1 = quality.separation(centroids[:1])
    assert one.tolist() == [-1] and np.isnan(d1[0])


def test_silhouette_and_davies_bouldin_match_scikit_learn_without_noise(digits):
    X, labels = digits
    keep = labels >= 0
    assert quality.silhouette(X, labels, sample=len(X)) == pytest.approx(silhouette_score(X[keep], labels[keep]))
    assert quality.davies_bouldin(X, labels) == pytest.approx(davies_bouldin_score(X[keep], labels[keep]))
    # a bounded sample estimates the full value closely, and reads at most that many points
    bounded = quality.silhouette(X, labels, seed=3, sample=600)
    assert bounded != pytest.approx(silhouette_score(X[keep], labels[keep]), abs=1e-9)
    assert bounded == pytest.approx(silhouette_score(X[keep], labels[keep]), abs=0.03)
    # undefined cases say so instead of raising
    assert quality.silhouette(X, np.zeros(len(X), np.int64)) is None
    assert quality.davies_bouldin(X, np.full(len(X), -1)) is None


def test_assess_reads_out_per_cluster_columns_and_run_metadata(digits):
    X, labels = digits
    readout = quality.assess(streamed(X, labels), X, labels, seed=0, silhouette_sample=10_000)
    assert readout.documents == len(X)
    assert readout.noise_share == pytest.approx((labels == -1).mean())
    assert readout.counts.tolist() == [int((labels == c).sum()) for c in range(10)]
    columns = readout.columns()
    assert set(columns) == {"cohesion", "separation", "nearest_cluster_id"}
    assert len(columns["cohesion"]) == 10
    meta = readout.metadata()
    keep = labels >= 0
    assert meta["silhouette"] == pytest.approx(silhouette_score(X[keep], labels[keep]), abs=1e-4)
    assert meta["davies_bouldin"] == pytest.approx(davies_bouldin_score(X[keep], labels[keep]), abs=1e-4)
    assert 0 < meta["min_cohesion"] <= meta["mean_cohesion"] <= 1
    # the Markdown lists the least cohesive cluster first
    worst = int(np.argmin(readout.cohesion))
    assert readout.markdown().splitlines()[2].startswith(f"| {worst} |")


def test_readouts_of_parts_add_up_to_the_mean_cosine_of_the_whole(digits):
    X, labels = digits
    ids = list(range(9))  # cluster 9 has no centroid: its members weigh nothing, as in the drift check
    centroids = {c: X[labels == c].mean(axis=0) * 2.0 + 1.0 for c in ids}  # not the parts' own centroids
    part_stats = [streamed(X[s], labels[s]) for s in np.array_split(np.arange(len(X)), 7)]
    summed = sum((quality.Readout.of(stats, centroids) for stats in part_stats), quality.Readout())
    merged = quality.ClusterStats()
    for stats in part_stats:
        merged.merge(stats)
    whole = quality.Readout.of(merged, centroids)
    centred = np.isin(labels, ids)
    cosines = np.array([cosine_similarity(X[i:i + 1], centroids[labels[i]][None])[0, 0] for i in np.flatnonzero(centred)])
    for readout in (summed, whole):
        assert (readout.documents, readout.noise_documents, readout.centred_documents) == (
            len(X), int((labels == -1).sum()), int(centred.sum()))
        assert readout.noise_share == pytest.approx((labels == -1).mean(), rel=1e-12)
        assert readout.cohesion == pytest.approx(cosines.mean(), rel=1e-6)
    assert summed.cosine_sum == pytest.approx(whole.cosine_sum, rel=1e-12)
    # the count-weighted mean of the clusters' cohesion, as the fit's readout was computed before
    counts = [merged.counts[c] for c in ids]
    assert whole.cohesion == pytest.approx(np.average(merged.cohesion(ids, np.array([centroids[c] for c in ids])),
                                                      weights=counts), rel=1e-12)
    assert quality.Readout.from_json(whole.to_json()) == whole
    assert quality.Readout.of(quality.ClusterStats(), centroids) == quality.Readout()
    assert (quality.Readout().cohesion, quality.Readout().noise_share) == (0.0, 0.0)


def test_whole_run_scores_are_undefined_when_every_document_is_its_own_cluster():
    # num_clusters equal to the number of documents: scikit-learn's scores need 2..n-1 labels
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    labels = np.arange(4)
    assert quality.davies_bouldin(X, labels) is None
    assert quality.silhouette(X, labels) is None
    assert quality.davies_bouldin(X, np.array([0, 0, 1, 2])) == pytest.approx(davies_bouldin_score(X, [0, 0, 1, 2]))
