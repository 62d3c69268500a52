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


# --- labels a person would keep -------------------------------------------------------------

from cluster_assets.keywords import data_labels, keyword_lift  # noqa: E402


def forum_corpus():
    """Three topics written as people write on a forum: contractions, fillers, a word every topic uses."""
    topics = {
        0: ["I don't think the telescope lens is clean, people say the mirror needs collimation",
            "I've got a new telescope mirror; don't know if the lens focus is right, people say"],
        1: ["we'll bake sourdough bread tonight, I don't want the yeast dough to overproof, people say",
            "you've got to feed the sourdough starter before the bread dough, people think"],
        2: ["the bike chain skipped on the rear derailleur, I don't think people ride gears like this",
            "I've replaced the bike chain and the derailleur cable; people say gears shift better"],
    }
    texts, labels = [], []
    for c, lines in topics.items():
        for i in range(8):
            texts.append(lines[i % 2])
            labels.append(c)
    return texts, np.array(labels)


FRAGMENTS = {"don", "ve", "ll", "re", "got", "think", "want", "know", "say"}


def test_keywords_hold_no_stop_word_or_contraction_fragment_and_phrases_compete():
    texts, labels = forum_corpus()
    keywords = class_tfidf_keywords(texts, labels)
    for words in keywords.values():
        assert not {t for w in words for t in w.split()} & FRAGMENTS, words
    # "people" is in every document: no cluster is headed by it
    assert all("people" not in words[:3] for words in keywords.values()), keywords
    assert any(" " in w for words in keywords.values() for w in words), keywords  # phrases such as "bike chain"


def test_a_word_heading_many_clusters_loses_to_a_specific_one():
    # "tao" is frequent in all four clusters; each also has a word of its own
    texts = [f"tao tao {w} tao" for w in ("rivers", "mountains", "poems", "ships") for _ in range(5)]
    labels = np.repeat(np.arange(4), 5)
    keywords = class_tfidf_keywords(texts, labels)
    assert [words[0] for words in keywords.values()] == ["rivers", "mountains", "poems", "ships"]


def test_confidence_falls_for_generic_keywords_and_labels_are_distinct_sentences():
    texts = ["shared words here"] * 6 + ["telescope mirror"] * 3 + ["shared words here"] * 3
    labels = np.array([0] * 6 + [1] * 6)
    generic = {0: ["shared", "words"], 1: ["telescope", "mirror"]}
    lift = keyword_lift(texts, labels, generic)
    assert lift[0] < 0.6 and lift[1] == 0.5  # cluster 0's words are everywhere: coverage 1.0, lift 0.5 at most
    labelled = data_labels([0, 1, 2], {0: 6, 1: 6, 2: 2}, {0: ["shared", "words", "x"], 1: ["shared", "words", "x", "mirror"],
                                                           2: []}, {}, {1: "telescope mirror"}, lift)
    assert len({l.label for l in labelled}) == 3
    assert labelled[1].label == "shared / words / mirror"  # cluster 0 (first at equal size) keeps its label
    assert labelled[0].summary == "A cluster of 6 documents about shared, words and x."
    assert labelled[1].summary.startswith("A cluster of 6 documents about shared, words, x and mirror. The most")
