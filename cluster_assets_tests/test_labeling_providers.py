"""What the real SDK clients send to (fake) providers on loopback, and how failures are handled."""

from __future__ import annotations

import json
import logging
import time

import pytest

from cluster_assets.labeling import LabelingConfigError, choose_labeler
from cluster_assets.labeling.llm import LLMLabeler
from cluster_assets.labeling.providers import OpenAIProvider
from cluster_assets_tests.llm_servers import (  # noqa: F401 - fixtures
    KEY, Answer, FakeLLMServer, Stall, Status, Text, anthropic_server, definition, documents, evidence, media_urls,
    no_llm_environment, openai_server, sent_schema, text_mappings, user_text,
)

pytestmark = pytest.mark.usefixtures("no_llm_environment")


def label(spec, keys=None, items=None, **kwargs):
    labeler = choose_labeler(spec, keys if keys is not None else {spec.llm_labeling.provider: KEY}, **kwargs)
    return labeler.label(items if items is not None else evidence())


# --- what is sent ---------------------------------------------------------------------------------
def test_openai_gets_only_the_mapped_fields_in_order_truncated(openai_server):
    spec = definition(base_url=openai_server.base_url, sample_text_max_length=12, max_samples_per_cluster=2,
                      labeling_inputs=text_mappings("metadata.department", "title"))
    outcome = label(spec)
    requests = openai_server.completions()
    assert len(requests) == 3 and outcome.source == "llm"
    by_cluster = {int(user_text(r.body).split()[1]): r for r in requests}
    body = by_cluster[0].body
    assert documents(body) == ["department0\nproduct 0-0", "department0\nproduct 0-1"]  # 2 most central, 12 chars each
    raw = json.dumps(body)
    for absent in ("SECRET-NOTE", "title words", "s3://media", "example.invalid", "p0-0"):
        assert absent not in raw
    assert by_cluster[0].headers["authorization"] == f"Bearer {KEY}"
    assert body["model"] == "fake-model" and body["messages"][0]["role"] == "system"
    labels = {l.cluster_id: l for l in outcome.labels}
    assert labels[0].label == "About department0" and labels[0].source == "llm" and labels[0].confidence == 0.9
    assert labels[0].representative_ids == ["p0-0", "p0-1", "p0-2"]
    assert outcome.metadata["llm_calls"] == 3 and outcome.metadata["input_tokens"] > 0


def test_without_mappings_the_payload_is_sent_as_json(openai_server):
    label(definition(base_url=openai_server.base_url, max_samples_per_cluster=1))
    docs = documents(openai_server.completions()[0].body)
    sent = json.loads(docs[0])
    assert set(sent) == {"title", "metadata", "document_blobs", "source_blobs"}


def test_custom_prompt_replaces_the_default_and_fills_placeholders(openai_server):
    spec = definition(base_url=openai_server.base_url, custom_prompt="Name these $count gadgets (cluster $cluster_id) in French.",
                      labeling_inputs=text_mappings("title"))
    label(spec, items=evidence(clusters=1))
    text = user_text(openai_server.completions()[0].body)
    assert text.startswith("Name these 10 gadgets (cluster 0) in French.")
    assert "Give the cluster a short label" not in text
    assert "Document 1:\nproduct 0-0 title words" in text and "JSON schema" in text


def test_response_shape_is_sent_as_a_strict_json_schema_and_lands_in_extra(openai_server):
    shape = {"sentiment": "positive | negative | neutral", "audience": ["string"]}
    spec = definition(base_url=openai_server.base_url, response_shape=shape, include_summary=False,
                      labeling_inputs=text_mappings("title"))
    outcome = label(spec)
    body = openai_server.completions()[0].body
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert list(schema["properties"]) == ["label", "keywords", "confidence", "sentiment", "audience"]
    assert schema["properties"]["sentiment"]["enum"] == ["positive", "negative", "neutral"]
    assert schema["properties"]["audience"] == {"type": "array", "items": {"type": "string"}}
    assert schema["required"] == list(schema["properties"]) and schema["additionalProperties"] is False
    assert body["max_completion_tokens"] == 1024
    first = outcome.labels[0]
    assert set(first.extra) == {"sentiment", "audience"}
    assert first.extra["sentiment"] in shape["sentiment"].split(" | ") and isinstance(first.extra["audience"], list)
    assert first.summary == "data summary 0"  # include_summary off: the data summary stays
    assert set(outcome.extra_types) == {"sentiment", "audience"}


def test_anthropic_messages_with_images_and_output_schema(anthropic_server):
    mappings = {"input_mappings": [{"input_key": "text", "source_type": "payload", "path": "title"},
                                   {"input_key": "image_url", "source_type": "blob", "path": "source_blobs.0.url"}]}
    spec = definition(provider="anthropic", base_url=anthropic_server.base_url, labeling_inputs=mappings,
                      response_shape={"mood": "calm | busy"}, max_output_tokens=300)
    outcome = label(spec)
    request = anthropic_server.completions()[0]
    body = request.body
    assert request.path == "/v1/messages"
    assert KEY in (request.headers.get("x-api-key", ""), request.headers.get("authorization", "").removeprefix("Bearer "))
    assert body["max_tokens"] == 300 and "You name clusters" in body["system"]
    blocks = body["messages"][0]["content"]
    images = [b for b in blocks if b["type"] == "image"]
    assert [b["source"]["type"] for b in images] == ["url"] * 3
    assert media_urls(body)[0].startswith("https://example.invalid/source/")
    assert body["output_config"]["format"]["type"] == "json_schema"
    assert sent_schema(body)["properties"]["mood"]["enum"] == ["calm", "busy"]
    assert outcome.source == "llm" and {l.extra["mood"] for l in outcome.labels} <= {"calm", "busy"}
    assert outcome.metadata["output_tokens"] > 0


def test_google_goes_through_its_openai_compatible_endpoint(openai_server, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    spec = definition(provider="google", model_name="gemini-fake", base_url=openai_server.base_url)
    outcome = choose_labeler(spec).label(evidence())  # the key from the environment
    request = openai_server.completions()[0]
    assert request.path == "/v1/chat/completions" and request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "gemini-fake" and request.body["max_tokens"] == 1024
    assert outcome.source == "llm" and outcome.metadata["llm_provider"] == "google"


def test_sdk_base_url_variables_are_honoured(openai_server, anthropic_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.base_url)
    assert label(definition()).source == "llm"
    assert label(definition(provider="anthropic")).source == "llm"
    assert len(openai_server.completions()) == 3 and len(anthropic_server.completions()) == 3


def test_s3_media_urls_are_presigned_before_sending(openai_server, moto_s3, storage):
    from cluster_assets.labeling.inputs import sigv4_s3_client

    client = sigv4_s3_client()
    client.create_bucket(Bucket="media")
    client.put_object(Bucket="media", Key="images/0-0.png", Body=b"IMG")
    mappings = {"input_mappings": [{"input_key": "text", "source_type": "payload", "path": "title"},
                                   {"input_key": "image_url", "source_type": "blob", "path": "0.url"}]}
    spec = definition(base_url=openai_server.base_url, labeling_inputs=mappings, presign_expiry_seconds=600)
    outcome = label(spec, items=evidence(clusters=1, documents=2), storage=storage)
    assert outcome.source == "llm"
    urls = media_urls(openai_server.completions()[0].body)
    assert len(urls) == 2 and all(u.startswith(moto_s3 + "/media/images/") for u in urls)
    assert all("X-Amz-Expires=600" in u and "X-Amz-Signature=" in u for u in urls)
    assert "s3://" not in json.dumps(openai_server.completions()[0].body)
    import urllib.request

    with urllib.request.urlopen(urls[0], timeout=10) as response:  # what the provider would fetch
        assert response.read() == b"IMG"
    # The cache key uses the s3:// URL, not the signature: a second run hits although signatures differ.
    again = label(spec, items=evidence(clusters=1, documents=2), storage=storage)
    assert again.metadata["cache_hits"] == 1 and len(openai_server.completions()) == 1


def test_a_modality_the_provider_cannot_take_fails_before_any_call(openai_server):
    spec = definition(base_url=openai_server.base_url, labeling_inputs={"input_mappings": [
        {"input_key": "image_url", "source_type": "blob", "path": "0.url"}]})

    class TextOnly(OpenAIProvider):
        media = {}  # takes text only

    provider = TextOnly(api_key=KEY, model="text-only-model", base_url=openai_server.base_url)
    with pytest.raises(LabelingConfigError, match=r"input_mappings\.0\.input_key: provider 'openai' \(model 'text-only-model'\) cannot take image_url"):
        LLMLabeler(spec.llm_labeling, provider)
    assert openai_server.requests == []


def test_a_mapping_missing_from_every_document_is_reported_once(openai_server):
    spec = definition(base_url=openai_server.base_url, labeling_inputs=text_mappings("title", "metadata.colour"))
    outcome = label(spec)
    warnings = [w for w in outcome.warnings if "metadata.colour" in w]
    assert len(warnings) == 1 and "none of the 9 documents" in warnings[0] and "input_mappings.1" in warnings[0]
    assert outcome.source == "llm"


# --- failures -------------------------------------------------------------------------------------
def test_rate_limits_are_retried_after_the_servers_delay(openai_server):
    openai_server.queue(Status(429, "slow down", {"retry-after-ms": "150"}), Status(503, "busy", {"retry-after": "0"}))
    spec = definition(base_url=openai_server.base_url, max_concurrency=1)
    outcome = label(spec, items=evidence(clusters=1))
    requests = openai_server.completions()
    assert len(requests) == 3 and outcome.source == "llm"
    assert requests[1].started - requests[0].finished >= 0.14  # waited as the server asked
    assert outcome.metadata["retries"] == 2 and outcome.metadata["llm_calls"] == 3 and outcome.metadata["fallbacks"] == 0


def test_malformed_or_incomplete_json_is_asked_again_then_falls_back(openai_server):
    openai_server.queue(Text("Sure! Here is the label: Trail shoes"), Text('{"label": "Trail shoes"}'))
    spec = definition(base_url=openai_server.base_url, max_concurrency=1, max_retries=2)
    outcome = label(spec, items=evidence(clusters=1))
    assert outcome.source == "llm" and outcome.metadata["retries"] == 2 and len(openai_server.completions()) == 3

    openai_server.queue(*[Text("{not json")] * 3)
    outcome = label(spec, items=evidence(clusters=2))
    assert len(openai_server.completions()) == 3 + 4  # 3 attempts for one cluster, 1 for the other
    assert outcome.source == "mixed" and outcome.metadata["fallbacks"] == 1
    fallen = [l for l in outcome.labels if l.source == "fallback"]
    assert len(fallen) == 1 and fallen[0].label == f"data label {fallen[0].cluster_id}"
    assert "invalid answer after 3 attempts" in outcome.metadata["fallback_reason"]
    assert any("fall back" in w for w in outcome.warnings)


def test_a_stalled_server_times_out_and_the_run_does_not_hang(openai_server):
    openai_server.queue(Stall(30), Stall(30))
    spec = definition(base_url=openai_server.base_url, timeout_seconds=0.5, max_retries=1, max_concurrency=1)
    start = time.monotonic()
    outcome = label(spec, items=evidence(clusters=1))
    elapsed = time.monotonic() - start
    assert elapsed < 5, elapsed
    assert outcome.source == "fallback" and "timeout" in outcome.metadata["fallback_reason"]
    assert outcome.metadata["llm_calls"] == 2 and outcome.metadata["retries"] == 1

    openai_server.queue(Stall(30))  # one stall, then an answer: the retry succeeds
    assert label(spec, items=evidence(clusters=1)).source == "llm"


def test_requests_in_flight_are_bounded_by_max_concurrency():
    server = FakeLLMServer("openai", delay=0.3).start()
    try:
        spec = definition(base_url=server.base_url, max_concurrency=3)
        start = time.monotonic()
        outcome = label(spec, items=evidence(clusters=9))
        elapsed = time.monotonic() - start
        assert outcome.source == "llm" and len(server.completions()) == 9
        assert server.max_in_flight == 3
        assert elapsed < 9 * 0.3  # not one round trip after the other
    finally:
        server.stop()


def test_a_refused_key_stops_the_provider_and_never_shows_the_key(openai_server, caplog):
    caplog.set_level(logging.DEBUG)
    openai_server.queue(Status(401, f"Incorrect API key provided: {KEY}. You can find your key at ..."))
    spec = definition(base_url=openai_server.base_url, max_concurrency=1)
    outcome = label(spec)
    assert len(openai_server.completions()) == 1  # fail-fast: the other clusters are not tried
    assert outcome.source == "fallback" and outcome.metadata["fallbacks"] == 3
    assert "authentication refused (HTTP 401)" in outcome.metadata["fallback_reason"]
    dumped = json.dumps(outcome.metadata) + json.dumps(outcome.warnings) + repr(outcome.labels)
    assert KEY not in dumped and KEY[:12] not in dumped
    assert KEY not in caplog.text


def test_error_messages_quoting_the_key_are_scrubbed(openai_server, caplog):
    caplog.set_level(logging.DEBUG)
    openai_server.queue(Status(500, f"upstream rejected key {KEY} (prefix {KEY[:10]}...)"))
    spec = definition(base_url=openai_server.base_url, max_retries=0)
    outcome = label(spec, items=evidence(clusters=1))
    reason = outcome.metadata["fallback_reason"]
    assert reason.startswith("HTTP 500") and "[redacted]" in reason
    assert KEY not in reason and KEY[:10] not in reason
    assert KEY not in caplog.text and KEY not in repr(choose_labeler(spec, {"openai": KEY}).provider)


def test_an_endpoint_without_structured_output_gets_plain_json(openai_server):
    openai_server.queue(Status(400, "response_format json_schema is not supported by this model"))
    spec = definition(base_url=openai_server.base_url, max_concurrency=1)
    outcome = label(spec)
    requests = openai_server.completions()
    assert "response_format" in requests[0].body and all("response_format" not in r.body for r in requests[1:])
    assert len(requests) == 4 and outcome.source == "llm" and outcome.metadata["structured_output"] is False


def test_no_key_falls_back_to_data_labels_with_the_reason(openai_server):
    spec = definition(base_url=openai_server.base_url, response_shape={"tone": "string"})
    outcome = choose_labeler(spec, {"openai": None}).label(evidence())
    assert outcome.source == "fallback" and "OPENAI_API_KEY" in outcome.metadata["fallback_reason"]
    assert [l.label for l in outcome.labels] == ["data label 0", "data label 1", "data label 2"]
    assert all(l.source == "fallback" and l.extra == {"tone": None} for l in outcome.labels)
    assert openai_server.requests == [] and outcome.warnings
    google = definition(provider="google", base_url=openai_server.base_url)
    assert "GEMINI_API_KEY or GOOGLE_API_KEY" in choose_labeler(google).label(evidence()).metadata["fallback_reason"]
    assert choose_labeler(definition(enabled=False)).label(evidence()).source == "data"


def test_an_overlong_answer_is_cut_to_the_label_bounds(openai_server):
    from cluster_assets import keywords as kw

    openai_server.queue(Answer({"label": "L" * 100_000, "summary": "S" * 1_000_000,
                                "keywords": ["k" * 500] * 50, "confidence": 0.5}))
    spec = definition(base_url=openai_server.base_url, labeling_inputs=text_mappings("title"))
    first = label(spec, items=evidence(clusters=1)).labels[0]
    assert first.source == "llm"
    assert first.label == "L" * (kw.MAX_LABEL_CHARS - 1) + "\u2026"
    assert first.summary == "S" * (kw.MAX_SUMMARY_CHARS - 1) + "\u2026"
    assert first.keywords == ["k" * (kw.MAX_KEYWORD_CHARS - 1) + "\u2026"] * kw.MAX_KEYWORDS


def test_data_labels_never_quote_a_run_on_token():
    import numpy as np

    from cluster_assets import keywords as kw

    texts = ["harbour crane " + "z" * 1_000_000, "harbour ships", "desert sand", "desert dunes"]
    words = kw.class_tfidf_keywords(texts, np.array([0, 0, 1, 1]))
    assert words == {0: ["harbour", "crane", "ships"], 1: ["desert", "dunes", "sand"]}
    long = kw.data_labels([0], {0: 2}, {0: ["w" * 100] * 30}, {0: ["a"]}, {0: "x" * 5000})[0]
    assert len(long.label) <= kw.MAX_LABEL_CHARS and len(long.summary) <= kw.MAX_SUMMARY_CHARS
    assert len(long.keywords) == kw.MAX_KEYWORDS and all(len(k) <= kw.MAX_KEYWORD_CHARS for k in long.keywords)
