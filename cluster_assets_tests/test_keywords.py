"""c-TF-IDF keywords on a corpus small enough to score by hand."""

from __future__ import annotations

import numpy as np

from cluster_assets.keywords import class_tfidf_keywords

# cluster 0: apple x2, banana, cherry (4 words); cluster 1: banana, grape x3, melon (5 words); noise: kiwi, apple.
TEXTS = ["apple banana", "apple cherry", "banana grape", "grape grape melon", "kiwi apple"]
LABELS = np.array([0, 0, 1, 1, -1])
# Noise is left out of the counts. Mean words per cluster A = 4.5; idf = log(1 + A / count over clusters):
#   apple, banana log(3.25) = 1.1787   cherry, melon log(5.5) = 1.7047   grape log(2.5) = 0.9163
# score = (count in cluster / words in cluster) * idf:
#   cluster 0: apple 2/4 * 1.1787 = 0.589, cherry 1/4 * 1.7047 = 0.426, banana 1/4 * 1.1787 = 0.295
#   cluster 1: grape 3/5 * 0.9163 = 0.550, melon 1/5 * 1.7047 = 0.341, banana 1/5 * 1.1787 = 0.236


def test_keywords_are_the_hand_computed_c_tf_idf_ranking():
    assert class_tfidf_keywords(TEXTS, LABELS) == {0: ["apple", "cherry", "banana"], 1: ["grape", "melon", "banana"]}
    assert class_tfidf_keywords(TEXTS, LABELS, top_n=2) == {0: ["apple", "cherry"], 1: ["grape", "melon"]}


def test_no_keyword_is_absent_from_its_clusters_documents():
    keywords = class_tfidf_keywords(TEXTS, LABELS, top_n=10)
    for cluster, words in keywords.items():
        present = {w for text, label in zip(TEXTS, LABELS) if label == cluster for w in text.split()}
        assert words and set(words) <= present, (cluster, words)
