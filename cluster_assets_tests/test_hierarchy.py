"""Hierarchy: merge trees checked against scipy and hdbscan, levels, parent labels."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.cluster.hierarchy import cophenet, cut_tree, linkage
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from cluster_assets.stages.outputs import read_output
from cluster_assets import hierarchy
from cluster_assets.keywords import ClusterLabel

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    X = data.data.astype(np.float64)
    labels = KMeans(n_clusters=30, random_state=0, n_init="auto").fit_predict(X)
    ids = list(range(30))
    counts = np.array([(labels == c).sum() for c in ids])
    centroids = np.array([X[labels == c].mean(axis=0) for c in ids])
    return X, data.target, labels, ids, counts, centroids


@pytest.mark.parametrize("method", hierarchy.LINKAGES)
def test_unit_weights_equal_scipy_linkage(digits, method):
    *_, centroids = digits
    ours = hierarchy.weighted_linkage(centroids, None, method)
    theirs = linkage(centroids, method)
    np.testing.assert_allclose(ours[:, 2], theirs[:, 2], rtol=1e-9)
    assert (cut_tree(ours, [3, 8]) == cut_tree(theirs, [3, 8])).all()
    assert centroids.flags.writeable and np.isfinite(centroids).all()


@pytest.mark.parametrize("method", ["ward", "average"])
def test_weights_act_as_documents_sitting_on_their_centroid(digits, method):
    *_, counts, centroids = digits
    ours = hierarchy.weighted_linkage(centroids, counts, method)
    # scipy over every document placed on its centroid: duplicates merge at height 0 first,
    # then the whole clusters merge exactly as the weighted tree says
    theirs = linkage(np.repeat(centroids, counts, axis=0), method)
    np.testing.assert_allclose(ours[:, 2], theirs[-(len(centroids) - 1):, 2], rtol=1e-7)
    # and weights change the tree: unweighted ward merges in another order
    assert not np.allclose(ours[:, 2], hierarchy.weighted_linkage(centroids, None, method)[:, 2])


def test_level_sizes():
    assert hierarchy.level_sizes(30) == [8, 30]
    assert hierarchy.level_sizes(50) == [4, 13, 50]
    assert hierarchy.level_sizes(10) == [3, 10]
    assert hierarchy.level_sizes(2) == [2]
    assert hierarchy.level_sizes(200, levels=3) == [6, 35, 200]
    assert hierarchy.level_sizes(100, branching=10) == [10, 100]
    assert hierarchy.level_sizes(30, top_nodes=5)[0] == 5
    for k in (3, 7, 50, 400):
        sizes = hierarchy.level_sizes(k)
        assert sizes[-1] == k and sizes == sorted(set(sizes)) and 2 <= sizes[0] <= 8
    with pytest.raises(ValueError, match="either levels or branching"):
        hierarchy.level_sizes(10, levels=3, branching=2)


def test_tree_is_nested_with_a_handful_at_the_top(digits):
    _, _, _, ids, counts, centroids = digits
    tree = hierarchy.cluster_hierarchy(ids, counts, centroids, algorithm="kmeans", levels=3)
    assert tree.depth == 3 and tree.source == "centroids"
    top = tree.node_id[tree.level == 0]
    assert 2 <= len(top) <= 8 and (tree.parent_id[tree.level == 0] == -1).all()
    leaves = tree.node_id[tree.is_leaf]
    assert sorted(leaves.tolist()) == ids and (tree.level[tree.is_leaf] == 2).all()
    assert tree.node_id[~tree.is_leaf].min() == max(ids) + 1  # parent ids continue after the clusters
    parents = tree.parent_of()
    levels = dict(zip(tree.node_id.tolist(), tree.level.tolist()))
    count = dict(zip(tree.node_id.tolist(), tree.count.tolist()))
    for node, parent in parents.items():
        if parent >= 0:
            assert levels[parent] == levels[node] - 1
    for node in tree.node_id[~tree.is_leaf].tolist():  # a parent holds its children's documents
        assert count[node] == sum(count[c] for c in tree.children()[node])
    assert sum(count[n] for n in top.tolist()) == counts.sum()
    # the parent centroid is the weighted mean of its clusters
    some = int(top[0])
    under = [leaf for leaf in ids if tree.path(leaf)[0] == some]
    expected = (centroids[under] * counts[under, None]).sum(0) / counts[under].sum()
    np.testing.assert_allclose(tree.centroid[tree.node_id == some][0], expected, rtol=1e-5)
    # the table round-trips
    again = hierarchy.ClusterTree.from_table(tree.to_table())
    assert again.parent_of() == tree.parent_of() and again.source == tree.source


def test_hdbscan_tree_follows_its_condensed_tree():
    import hdbscan

    X = PCA(10, random_state=0).fit_transform(load_digits().data)
    est = hdbscan.HDBSCAN(min_cluster_size=15).fit(X)
    labels = est.labels_
    ids = sorted(set(labels.tolist()) - {-1})
    assert len(ids) >= 4
    Z = hierarchy.hdbscan_linkage(est, labels, ids)
    assert Z is not None and len(Z) == len(ids) - 1
    # independent reading of the condensed tree: two clusters merge at 1/lambda of the split
    # that separated them, i.e. of the birth lambda of the children of their lowest common ancestor
    tree = est.condensed_tree_.to_pandas()
    n = len(labels)
    clusters = tree[tree.child >= n]
    parent = dict(zip(clusters.child, clusters.parent))
    birth = dict(zip(clusters.child, clusters.lambda_val))
    node_of = {}
    for node in est.condensed_tree_._select_clusters():
        points = tree[(tree.parent == node) & (tree.child < n)].child.to_numpy()
        node_of[int(np.bincount(labels[points][labels[points] >= 0]).argmax())] = node

    def ancestors(node):
        out = [node]
        while out[-1] in parent:
            out.append(parent[out[-1]])
        return out

    coph = cophenet(Z)
    pair = 0
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            a, b = ancestors(node_of[ids[i]]), ancestors(node_of[ids[j]])
            lca = next(x for x in a if x in b)
            child_of_lca = a[a.index(lca) - 1]
            assert coph[pair] == pytest.approx(1.0 / birth[child_of_lca])
            pair += 1
    counts = [int((labels == c).sum()) for c in ids]
    cents = np.array([X[labels == c].mean(0) for c in ids])
    t = hierarchy.cluster_hierarchy(ids, counts, cents, algorithm="hdbscan", estimator=est, point_labels=labels)
    assert t.source == "hdbscan_condensed_tree" and t.depth >= 2
    # a model without a condensed tree falls back to the centroids
    t2 = hierarchy.cluster_hierarchy(ids, counts, cents, algorithm="hdbscan", estimator=object(), point_labels=labels)
    assert t2.source.startswith("centroids")


def leaf_labels_for(ids, texts, labels):
    from cluster_assets import keywords as kw

    words = kw.class_tfidf_keywords(texts, labels)
    return {c: ClusterLabel(c, " / ".join(words[c][:3]), "", words[c], [f"doc-{c}"]) for c in ids}


def test_parent_data_labels_come_from_the_merged_documents(digits):
    X, target, labels, ids, counts, centroids = digits
    texts = [f"handwritten digit {DIGITS[t]}" for t in target]
    tree = hierarchy.cluster_hierarchy(ids, counts, centroids, levels=3)
    leaves = leaf_labels_for(ids, texts, labels)
    parents, meta = hierarchy.label_parents(tree, leaves, texts, labels)
    assert meta["parent_labeling_source"] == "data"
    assert set(parents) == set(tree.node_id[~tree.is_leaf].tolist())
    children = tree.children()
    for node, label in parents.items():
        under = [leaf for leaf in ids if node in tree.path(leaf)]
        members = np.isin(labels, under)
        # the parent's first keyword is a digit name most common among its merged documents
        names = [DIGITS[t] for t in target[members]]
        top_names = {w for w in set(names) if names.count(w) >= 0.2 * len(names)}
        assert label.keywords and label.keywords[0] in top_names, (label, top_names)
        assert str(len(children[node])) in label.summary
    paths = hierarchy.node_paths(tree, {**leaves, **parents})
    assert all(len(p) == 3 for p in paths.values())
    assert paths[0][-1] == leaves[0].label



def test_a_parent_s_confidence_means_what_a_leaf_s_does(digits):
    """Lift, not coverage: the share of the branch's documents holding one of its top three keywords as a
    whole word, minus that share among the other documents of its level. Every document here also says
    "handwritten digit" and "categorical", so a share that did not subtract, or matched "cat" inside
    "categorical", would read near 1 for any parent."""
    X, target, labels, ids, counts, centroids = digits
    texts = [f"handwritten digit {DIGITS[t]} categorical" for t in target]
    texts = [t + (" cat" if i % 50 == 0 else "") for i, t in enumerate(texts)]
    tree = hierarchy.cluster_hierarchy(ids, counts, centroids, levels=3)
    parents, _ = hierarchy.label_parents(tree, leaf_labels_for(ids, texts, labels), texts, labels)
    words_of = [set(t.split()) for t in texts]
    checked = 0
    for level in range(tree.depth - 1):
        ancestor = tree.ancestor_at(level)
        branch_of = np.array([ancestor.get(int(c), -1) for c in labels])
        for node in tree.node_id[(tree.level == level) & ~tree.is_leaf].tolist():
            top = parents[node].keywords[:3]
            hits = np.array([any(w in words for w in top) for words in words_of])
            inside, outside = hits[branch_of == node].mean(), hits[branch_of != node].mean()
            assert parents[node].confidence == pytest.approx(max(0.0, inside - outside), abs=1e-4), node
            checked += 1
    assert checked >= 3 and max(p.confidence for p in parents.values()) > 0.3

def test_parent_label_hook_sees_children_and_failures_fall_back(digits, monkeypatch):
    X, target, labels, ids, counts, centroids = digits
    texts = [f"handwritten digit {DIGITS[t]}" for t in target]
    tree = hierarchy.cluster_hierarchy(ids, counts, centroids, levels=3)
    leaves = leaf_labels_for(ids, texts, labels)
    seen = []

    def hook(evidence):
        seen.append(evidence)
        return [ClusterLabel(e.node_id, f"group of {len(e.children)}", "", e.keywords, [], 0.9, "llm")
                for e in evidence]

    parents, meta = hierarchy.label_parents(tree, leaves, texts, labels, hook=hook)
    assert meta["parent_labeling_source"] == "llm"
    assert [e[0].level for e in seen] == [1, 0]  # bottom-up: top parents see their children's new labels
    top = seen[1][0]
    assert all(c.label.startswith("group of") for c in top.children)
    assert "sub-clusters" in top.prompt_text() and top.children[0].label in top.prompt_text()
    assert all(p.label.startswith("group of") for p in parents.values())

    def broken(evidence):
        raise RuntimeError(f"provider down (key {os.environ['OPENAI_API_KEY']})")

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-1234567890")
    parents, meta = hierarchy.label_parents(tree, leaves, texts, labels, hook=broken)
    assert meta["parent_labeling_source"] == "fallback" and "provider down" in meta["parent_fallback_reason"]
    assert "sk-test-secret" not in meta["parent_fallback_reason"]  # secrets never reach metadata
    assert all(p.source == "data" for p in parents.values())


def test_few_clusters_have_no_parents():
    tree = hierarchy.cluster_hierarchy([0, 1], [5, 5], np.eye(2))
    assert tree.depth == 1 and (tree.parent_id == -1).all()
    assert hierarchy.label_parents(tree, {}, [], np.zeros(0))[0] == {}


def test_hierarchical_run_carries_tree_quality_and_paths(demo_storage, definitions_dir):
    """products (eight departments) with hdbscan: the condensed tree, quality columns, parent labels, cluster_path."""
    import pyarrow.compute as pc
    from sklearn.metrics.pairwise import cosine_similarity

    from cluster_assets_tests.conftest import materialize_group, write_definition

    write_definition(definitions_dir, {
        "cluster_name": "shop", "source_collection_ids": ["products"], "feature_addresses": ["text_embedding"],
        "algorithm": "hdbscan", "algorithm_config": {"min_cluster_size": 15},
        "dimension_reduction": {"method": "pca", "components": 2},
        "hierarchical": True, "hierarchy": {"top_nodes": 3},
        "enrichment": {"fields": ["label", "cluster_path"]}})
    result = materialize_group(definitions_dir, "shop")
    meta = {e.materialization.asset_key.path[-1]: e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    # the fit's readout is on labels, which aggregates every file's assignments
    assert meta["labels"]["hierarchy_source"].value == "hdbscan_condensed_tree"
    assert meta["labels"]["hierarchy_nodes_per_level"].value[0] == 3
    for key in ("silhouette", "davies_bouldin", "noise_share", "mean_cohesion"):
        assert key in meta["labels"]
    assert "cohesion" in meta["labels"]["cluster_quality"].value
    assert "**" in meta["labels"]["hierarchy"].value  # parents in bold in the tree view

    storage = demo_storage
    run = result.run_id
    centroids = storage.read_table("artifacts", "shop", run, "centroids.parquet")
    assert {"parent_id", "level", "cohesion", "separation", "nearest_cluster_id", "cluster_path"} <= set(
        centroids.column_names)
    # cohesion recomputed here from the stored embeddings (the sample is every document here) and assignments
    emb = read_output(storage, "shop", "embeddings.parquet")
    assert emb.num_rows == 1200
    X = np.array(emb.column("vector").to_pylist())
    assigned = read_output(storage, "shop", "assignments.parquet").column("cluster_id").to_numpy()
    C = np.array(centroids.column("centroid").to_pylist())
    for i, c in enumerate(centroids.column("cluster_id").to_pylist()):
        members = X[assigned == c]
        assert centroids.column("count")[i].as_py() == len(members)
        assert centroids.column("cohesion")[i].as_py() == pytest.approx(
            cosine_similarity(members, C[i:i + 1]).mean(), abs=1e-4)
    tree = storage.read_table("artifacts", "shop", run, "hierarchy.parquet")
    nodes = dict(zip(tree.column("node_id").to_pylist(), tree.to_pylist()))
    depth = max(r["level"] for r in nodes.values()) + 1
    for row in nodes.values():
        assert row["parent_id"] == -1 or nodes[row["parent_id"]]["level"] == row["level"] - 1
        assert row["label"]
    # the enriched documents carry their path from the top of the tree down to their cluster
    enriched = storage.collection_dataset("products_shop_enriched").to_table()
    clustered = enriched.filter(pc.greater_equal(enriched.column("cluster_id"), 0))
    for row in clustered.slice(0, 50).to_pylist():
        path = row["cluster_path"]
        assert len(path) == depth and path[-1] == row["label"]
        top = nodes[row["cluster_id"]]
        while top["parent_id"] != -1:
            top = nodes[top["parent_id"]]
        assert path[0] == top["label"]
    noise = enriched.filter(pc.equal(enriched.column("cluster_id"), -1))
    assert noise.num_rows == 0 or noise.column("cluster_path").null_count == noise.num_rows
