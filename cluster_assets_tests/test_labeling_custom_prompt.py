"""custom_prompt as the reference writes it: answers as a JSON array over clusters, mapped back by id."""

from __future__ import annotations

import json
import re

import pytest

from cluster_assets.labeling import choose_labeler
from cluster_assets_tests.llm_servers import (  # noqa: F401 - fixtures
    KEY, FakeLLMServer, anthropic_server, definition, evidence, no_llm_environment, openai_server, text_mappings,
    user_text,
)

pytestmark = pytest.mark.usefixtures("no_llm_environment")

# the reference's own example
REFERENCE_PROMPT = ('Name each cluster of these products. Return JSON array: '
                    '[{"cluster_id": "cl_0", "label": "...", "keywords": [...]}]')


def labeler(server: FakeLLMServer, **llm):
    provider = "openai" if server.wire == "openai" else "anthropic"
    spec = definition(provider=provider, base_url=server.base_url, labeling_inputs=text_mappings("title"),
                      cache_ttl_seconds=0, use_embedding_dedup=False, **llm)
    return choose_labeler(spec, {provider: KEY})


def test_a_per_cluster_request_answered_with_the_reference_array_is_accepted(openai_server):
    # every request gets the whole array the prompt describes (ids as "cl_N" and as numbers): mapped by id
    openai_server.answer = lambda body: [{"cluster_id": "cl_0", "label": "Zero things", "keywords": ["zero"]},
                                         {"cluster_id": 1, "label": "One things", "keywords": ["one"]},
                                         {"cluster_id": "cl_2", "label": "Two things", "keywords": ["two"]}]
    outcome = labeler(openai_server, custom_prompt=REFERENCE_PROMPT).label(evidence(clusters=3))
    assert outcome.source == "llm", outcome.metadata
    assert {l.cluster_id: (l.label, l.keywords) for l in outcome.labels} == {
        0: ("Zero things", ["zero"]), 1: ("One things", ["one"]), 2: ("Two things", ["two"])}
    # what the answer left out (summary, confidence) comes from the data
    assert outcome.labels[0].summary == "data summary 0" and outcome.labels[0].confidence == 0.25
    # a one-element list for a single cluster is accepted whatever id it gives
    openai_server.answer = lambda body: [{"cluster_id": "cl_9", "label": "Only one", "keywords": ["x"]}]
    single = labeler(openai_server, custom_prompt=REFERENCE_PROMPT).label(evidence(clusters=1))
    assert single.source == "llm" and single.labels[0].label == "Only one"


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_clusters_placeholder_sends_at_most_20_clusters_a_request_and_maps_answers_back(wire):
    server = FakeLLMServer(wire).start()
    try:
        def answer(body):
            ids = [int(n) for n in re.findall(r"Cluster cl_(\d+) holds", user_text(body))]
            # the model names clusters both ways, and forgets the last one of each request
            return [{"cluster_id": f"cl_{c}" if c % 2 else c, "label": f"Group {c}", "keywords": [f"w{c}"],
                     "summary": f"about {c}", "confidence": 0.8} for c in ids[:-1]]

        server.answer = answer
        prompt = "Here are $num_clusters clusters:\n$clusters\nReturn JSON array: [{\"cluster_id\": \"cl_0\", ...}]"
        outcome = labeler(server, custom_prompt=prompt).label(evidence(clusters=25, documents=1))
        requests = server.completions()
        assert len(requests) == 2
        listed = sorted(len(re.findall(r"Cluster cl_\d+ holds", user_text(r.body))) for r in requests)
        assert listed == [5, 20]
        first = user_text(requests[0].body)
        assert first.startswith("Here are ") and "Document 1:\nproduct" in first
        labels = {l.cluster_id: l for l in outcome.labels}
        forgotten = {int(re.findall(r"Cluster cl_(\d+) holds", user_text(r.body))[-1]) for r in requests}
        assert all(labels[c].label == f"Group {c}" and labels[c].source == "llm" for c in range(25) if c not in forgotten)
        assert all(labels[c].source == "fallback" for c in forgotten)
        assert outcome.source == "mixed" and outcome.metadata["llm_calls"] == 2
        assert "has no entry for cl_" in outcome.metadata["fallback_reason"]
        assert KEY not in json.dumps(outcome.metadata)
    finally:
        server.stop()


def test_a_contrast_re_ask_under_a_clusters_prompt_lists_its_cluster_where_clusters_stands(openai_server, storage):
    """The re-ask is the user's prompt about one cluster, never the prompt with "$clusters" left in its text."""
    names = {0: "Running shoes", 1: "Running Shoes!", 2: "Coffee makers", 3: "Garden tools"}
    reasks = []

    def answer(body):
        text = user_text(body)
        ids = [int(n) for n in re.findall(r"Cluster cl_(\d+) holds", text)]
        if "Other clusters of this collection" in text:
            reasks.append(text)
            return [{"cluster_id": f"cl_{ids[0]}", "label": "Trail running shoes", "keywords": ["trail"]}]
        return [{"cluster_id": f"cl_{c}", "label": names[c], "keywords": [f"kw{c}", "shoes"]} for c in ids]

    openai_server.answer = answer
    spec = definition(provider="openai", base_url=openai_server.base_url, labeling_inputs=text_mappings("title"),
                      custom_prompt="Name these:\n$clusters\n" + REFERENCE_PROMPT, use_embedding_dedup=True,
                      embedding_similarity_threshold=0.8, dedup_strategy="contrast", cache_ttl_seconds=0)
    outcome = choose_labeler(spec, {"openai": KEY}, storage=storage).label(evidence(clusters=4))
    assert {l.cluster_id: l.label for l in outcome.labels}[1].startswith("Trail running shoes")
    assert len(reasks) == 1 and "$clusters" not in reasks[0]
    assert re.findall(r"Cluster cl_(\d+) holds", reasks[0]) == ["1"] and reasks[0].startswith("Name these:")
    assert "'Running shoes'" in reasks[0]  # the neighbour it must differ from


def test_a_batch_s_clusters_are_each_a_cache_hit_or_a_miss_answered_or_not(openai_server, storage):
    def answer(body):  # the model forgets the last cluster of the request
        ids = [int(n) for n in re.findall(r"Cluster cl_(\d+) holds", user_text(body))]
        return [{"cluster_id": f"cl_{c}", "label": f"Group {c}", "keywords": [f"w{c}"]} for c in ids[:-1]]

    openai_server.answer = answer
    spec = definition(provider="openai", base_url=openai_server.base_url, labeling_inputs=text_mappings("title"),
                      custom_prompt="Name these:\n$clusters", use_embedding_dedup=False)
    first = choose_labeler(spec, {"openai": KEY}, storage=storage).label(evidence(clusters=4))
    assert (first.metadata["cache_hits"], first.metadata["cache_misses"]) == (0, 4)
    again = choose_labeler(spec, {"openai": KEY}, storage=storage).label(evidence(clusters=4))
    assert (again.metadata["cache_hits"], again.metadata["cache_misses"]) == (3, 1)  # the forgotten one asked again
