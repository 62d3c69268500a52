"""The label cache across runs and the near-duplicate label dedup."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cluster_assets.labeling import choose_labeler
from cluster_assets.labeling.cache import CACHE_PARTS, LabelCache
from cluster_assets.labeling.dedup import ComparedLabels, dedup_labels, local_vectors, merge_groups, normalise
from cluster_assets_tests.llm_servers import (  # noqa: F401 - fixtures
    KEY, anthropic_server, definition, documents, evidence, no_llm_environment, openai_server, text_mappings,
)

pytestmark = pytest.mark.usefixtures("no_llm_environment")


def run(spec, storage, provider="openai", items=None):
    return choose_labeler(spec, {provider: KEY}, storage=storage).label(items or evidence(clusters=4))


def dedup_run(server, storage, **options):
    """Four clusters labelled by ``server`` with embedding dedup on; returns the outcome and cluster -> label."""
    provider = "openai" if server.wire == "openai" else "anthropic"
    spec = definition(provider=provider, base_url=server.base_url, labeling_inputs=text_mappings("title"),
                      use_embedding_dedup=True, **options)
    outcome = run(spec, storage, provider=provider)
    return outcome, {l.cluster_id: l.label for l in outcome.labels}


def test_a_second_run_within_the_ttl_makes_no_call(openai_server, storage):
    spec = definition(base_url=openai_server.base_url, labeling_inputs=text_mappings("title"),
                      response_shape={"tone": "formal | casual"})
    first = run(spec, storage)
    assert len(openai_server.completions()) == 4
    assert (first.metadata["cache_hits"], first.metadata["cache_misses"]) == (0, 4)
    second = run(spec, storage)
    assert len(openai_server.completions()) == 4  # nothing new reached the server
    assert (second.metadata["cache_hits"], second.metadata["cache_misses"], second.metadata["llm_calls"]) == (4, 0, 0)
    assert [(l.label, l.extra, l.confidence, l.source) for l in second.labels] == \
           [(l.label, l.extra, l.confidence, l.source) for l in first.labels]
    entries = storage.list_dir(*CACHE_PARTS)
    assert len(entries) == 4
    stored = b"".join(storage.read_bytes(*CACHE_PARTS, e) for e in entries)
    assert KEY.encode() not in stored and b"Document 1" not in stored and b"schema" not in stored  # answers only

    # Whatever changes the answer changes the key: an edited document, another prompt, another model.
    changed = evidence(clusters=4)
    changed[0].representatives[0]["title"] = "a different product"
    third = run(spec, storage, items=changed)
    assert (third.metadata["cache_hits"], third.metadata["cache_misses"]) == (3, 1)
    other_prompt = definition(base_url=openai_server.base_url, labeling_inputs=text_mappings("title"),
                              response_shape={"tone": "formal | casual"}, custom_prompt="Name it.")
    assert run(other_prompt, storage).metadata["cache_misses"] == 4
    other_model = definition(base_url=openai_server.base_url, labeling_inputs=text_mappings("title"),
                             response_shape={"tone": "formal | casual"}, model_name="other-model")
    assert run(other_model, storage).metadata["cache_misses"] == 4
    assert len(openai_server.completions()) == 4 + 1 + 4 + 4


def test_entries_expire_after_the_ttl_and_a_zero_ttl_disables_the_cache(openai_server, storage):
    now = [1_000_000.0]
    cache = LabelCache(storage, ttl_seconds=60, clock=lambda: now[0])
    cache.put("k", {"label": "x"})
    assert cache.get("k") == {"label": "x"}
    now[0] += 61
    assert cache.get("k") is None

    spec = definition(base_url=openai_server.base_url, cache_ttl_seconds=0)
    first, second = run(spec, storage), run(spec, storage)
    assert len(openai_server.completions()) == 8 and second.metadata["cache_hits"] == 0
    assert first.metadata["cache_enabled"] is False and storage.list_dir(*CACHE_PARTS) == ["k.json"]


def test_failed_clusters_are_not_cached(openai_server, storage):
    from cluster_assets_tests.llm_servers import Text

    openai_server.queue(*[Text("no json")] * 4)
    spec = definition(base_url=openai_server.base_url, max_retries=3, max_concurrency=1)
    first = run(spec, storage, items=evidence(clusters=1))
    assert first.source == "fallback"
    second = run(spec, storage, items=evidence(clusters=1))
    assert second.source == "llm" and second.metadata["cache_misses"] == 1


def same_label_answers(body: dict) -> dict:
    """Clusters 0 and 1 get near-identical labels; cluster 2 a different one."""
    first = documents(body)[0]
    cluster = int(first.split()[1].split("-")[0])
    label = {0: "Running shoes", 1: "Running Shoes!", 2: "Coffee makers", 3: "Garden tools"}[cluster]
    return {"label": label, "summary": "s", "keywords": [f"kw{cluster}", "shoes"], "confidence": 0.8}


def test_near_duplicate_labels_get_a_suffix_using_provider_embeddings(openai_server, storage):
    openai_server.answer = same_label_answers
    outcome, labels = dedup_run(openai_server, storage, embedding_similarity_threshold=0.8, embedding_model="embed-fake")
    # cluster 0 is the largest (count 40): it keeps the label; cluster 1 gets its own first keyword
    assert labels == {0: "Running shoes", 1: "Running Shoes! (kw1)", 2: "Coffee makers", 3: "Garden tools"}
    embedding_calls = openai_server.embeddings()
    assert len(embedding_calls) == 1 and embedding_calls[0].body["model"] == "embed-fake"
    assert sorted(embedding_calls[0].body["input"]) == sorted(["Running shoes", "Running Shoes!", "Coffee makers",
                                                               "Garden tools"])
    assert outcome.metadata["dedup_method"] == "provider" and outcome.metadata["dedup_renamed_count"] == 1
    assert outcome.metadata["dedup_renamed"][0]["similar_to"] == 0

    without = definition(base_url=openai_server.base_url, labeling_inputs=text_mappings("title"))
    plain = run(without, storage)
    assert [l.label for l in plain.labels][:2] == ["Running shoes", "Running Shoes!"]
    assert "dedup_method" not in plain.metadata


def test_anthropic_has_no_embedding_endpoint_so_dedup_is_local(anthropic_server, storage):
    anthropic_server.answer = same_label_answers
    outcome, labels = dedup_run(anthropic_server, storage, embedding_similarity_threshold=0.7)
    assert outcome.metadata["dedup_method"] == "local_tfidf"
    assert len(set(labels.values())) == 4
    assert all(r.path == "/v1/messages" for r in anthropic_server.requests)


def test_dedup_threshold_decides_what_counts_as_a_duplicate():
    names = ["Trail running shoes", "Trail running shoe", "Espresso machines"]
    vectors = normalise(local_vectors(names))
    similarity = float(vectors[0] @ vectors[1])
    compared = ComparedLabels.of([0, 1, 2], names, [5, 3, 9], vectors)
    strict, renamed = dedup_labels(compared, [["a"], ["trail", "kids"], ["b"]], threshold=similarity + 0.01)
    assert strict == names and renamed == []
    loose, renamed = dedup_labels(compared, [["a"], ["trail", "kids"], ["b"]], threshold=similarity - 0.01)
    assert loose == ["Trail running shoes", "Trail running shoe (kids)", "Espresso machines"]  # 'trail' is taken
    assert renamed[0].similar_to == 0 and np.isclose(renamed[0].similarity, similarity, atol=1e-4)
    books = ComparedLabels.of([0, 7], ["Books", "books"], [2, 1], normalise(local_vectors(["Books", "books"])))
    fallback_suffix, _ = dedup_labels(books, [[], ["books"]], 0.5)
    assert fallback_suffix == ["Books", "books (cluster 7)"]
    assert json.dumps(fallback_suffix)


def test_no_two_clusters_share_a_label_after_dedup():
    # three near-identical labels: the dedup gave the second and the third the same suffix ("trail")
    names = ["Running Shoes", "Running Shoes", "Running Shoes"]
    vectors = normalise(local_vectors(names))
    out, renamed = dedup_labels(ComparedLabels.of([0, 1, 2], names, [9, 5, 3], vectors),
                                [["road"], ["trail"], ["trail", "kids"]], 0.8)
    assert len({n.lower() for n in out}) == 3, out
    assert out == ["Running Shoes", "Running Shoes (trail)", "Running Shoes (kids)"]
    # an exact repeat is a duplicate whatever the threshold
    out, _ = dedup_labels(ComparedLabels.of([0, 1], ["Online Ads", "Online Ads"], [2, 1], np.eye(2)),
                          [["ads"], ["ads"]], 0.99)
    assert out == ["Online Ads", "Online Ads (cluster 1)"]


def test_merge_strategy_records_which_clusters_share_a_label():
    names = ["Running shoes", "Running Shoes!", "Coffee makers", "running shoes"]
    vectors = normalise(local_vectors(names))
    out, merged = merge_groups(ComparedLabels.of([0, 1, 2, 3], names, [40, 30, 20, 10], vectors), 0.6)
    assert out == ["Running shoes", "Running shoes", "Coffee makers", "Running shoes"]
    assert merged == [[1, 3], [0, 3], [], [0, 1]]


def test_contrast_reasks_near_duplicates_with_their_neighbours_labels(openai_server, storage):
    def answers(body: dict) -> dict:
        prompt = json.dumps(body)
        cluster = int(documents(body)[0].split()[1].split("-")[0])
        if "Other clusters of this collection" in prompt:
            assert "'Running shoes'" in prompt and "kw0" in prompt  # the neighbour's label and keywords
            return {"label": f"Trail running shoes {cluster}", "summary": "s", "keywords": ["trail"], "confidence": 0.7}
        return same_label_answers(body)

    openai_server.answer = answers
    outcome, labels = dedup_run(openai_server, storage, embedding_similarity_threshold=0.8, dedup_strategy="contrast")
    assert labels == {0: "Running shoes", 1: "Trail running shoes 1", 2: "Coffee makers", 3: "Garden tools"}
    assert outcome.metadata["dedup_reasked"] == 1 and outcome.metadata["dedup_renamed_count"] == 0
    assert len(openai_server.completions()) == 5
    # the same run again: the labels and the contrasted answer all come from the cache
    _, again = dedup_run(openai_server, storage, embedding_similarity_threshold=0.8, dedup_strategy="contrast")
    assert again == labels and len(openai_server.completions()) == 5

    merged, _ = dedup_run(openai_server, storage, dedup_strategy="merge", cache_ttl_seconds=0)
    by_id = {l.cluster_id: l for l in merged.labels}
    assert by_id[1].label == by_id[0].label == "Running shoes"
    assert by_id[0].extra["merged_with"] == [1] and by_id[2].extra["merged_with"] == []


def test_contrast_reasks_are_counted_in_the_calls_and_tokens_paid(openai_server, storage):
    refused = []

    def answers(body: dict) -> dict:
        cluster = int(documents(body)[0].split()[1].split("-")[0])
        if "Other clusters of this collection" in json.dumps(body):
            if not refused:  # the first contrast answer is invalid: asked again, a retry paid for
                refused.append(cluster)
                return {"label": " ", "summary": "s", "keywords": ["x"], "confidence": 0.5}
            return {"label": f"Trail running shoes {cluster}", "summary": "s", "keywords": ["trail"], "confidence": 0.7}
        return same_label_answers(body)

    openai_server.answer = answers
    outcome, labels = dedup_run(openai_server, storage, embedding_similarity_threshold=0.8, dedup_strategy="contrast")
    assert labels[1] == "Trail running shoes 1" and outcome.metadata["dedup_reasked"] == 1
    paid = openai_server.completions()
    assert len(paid) == 4 + 2  # a request per cluster, then the contrast re-ask and its retry
    meta = outcome.metadata
    assert (meta["llm_calls"], meta["retries"]) == (len(paid), 1)
    assert meta["input_tokens"] == sum(r.input_tokens for r in paid) > 0
    assert meta["output_tokens"] == sum(r.output_tokens for r in paid) > 0
    assert (meta["cache_hits"], meta["cache_misses"]) == (0, 5)  # every request looked up, the re-ask too

    # the same run again pays nothing: the labels and the contrasted answer come from the cache
    again, _ = dedup_run(openai_server, storage, embedding_similarity_threshold=0.8, dedup_strategy="contrast")
    assert len(openai_server.completions()) == len(paid)
    assert (again.metadata["llm_calls"], again.metadata["input_tokens"], again.metadata["output_tokens"]) == (0, 0, 0)
    assert (again.metadata["cache_hits"], again.metadata["cache_misses"]) == (5, 0)


def test_contrast_with_nothing_to_re_ask_embeds_the_labels_once(openai_server, storage):
    """Distinct labels: no re-ask, so no second (paid) embedding call for labels that did not change."""
    def distinct(body: dict) -> dict:
        cluster = int(documents(body)[0].split()[1].split("-")[0])
        return {"label": ["Running shoes", "Coffee makers", "Garden tools", "Desk lamps"][cluster], "summary": "s",
                "keywords": [f"kw{cluster}"], "confidence": 0.8}

    openai_server.answer = distinct
    outcome, _ = dedup_run(openai_server, storage, embedding_similarity_threshold=0.95, dedup_strategy="contrast")
    assert outcome.metadata["dedup_reasked"] == 0
    assert len(openai_server.embeddings()) == outcome.metadata["embedding_calls"] == 1
