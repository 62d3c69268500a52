"""Secrets (LLM keys, credentials in endpoint and media URLs) never reach logs, metadata, errors, caches or labels.

The key here is a gateway key no key-shaped pattern recognises (``gw_live_...``):
only the scrubber of configured secrets can catch it, whole or as the suffix a
provider echoes.
"""

from __future__ import annotations

import json
import logging
import socket
from urllib.parse import urlsplit

import pytest

from cluster_assets import webhooks
from cluster_assets.labeling import choose_labeler
from cluster_assets.labeling.cache import CACHE_PARTS, LabelCache
from cluster_assets.labeling.inputs import s3_presigner
from cluster_assets.labeling.providers import ProviderError
from cluster_assets.secrets import Scrubber, redact_url, url_secrets
from cluster_assets_tests.llm_servers import (  # noqa: F401 - fixtures
    GATEWAY_KEY, Answer, Status, anthropic_server, definition, evidence, media_urls, no_llm_environment,
    openai_server, text_mappings,
)

pytestmark = pytest.mark.usefixtures("no_llm_environment")
SUFFIX = GATEWAY_KEY[-12:]
PASSWORD = "pa55-w0rd-9d41c7"
QUOTED = f"key {GATEWAY_KEY} rejected (the key ending …{SUFFIX} is over quota)"
IMAGE_MAPPINGS = {"input_mappings": [{"input_key": "text", "source_type": "payload", "path": "title"},
                                     {"input_key": "image_url", "source_type": "blob", "path": "0.url"}]}


def leaks(text: str, *more: str) -> list[str]:
    return [s for s in (GATEWAY_KEY, SUFFIX, *more) if s in text]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the helpers ----------------------------------------------------------------------------------
def test_the_scrubber_removes_any_8_character_piece_of_a_configured_secret():
    scrub = Scrubber([GATEWAY_KEY, None, ""])
    text = f"whole {GATEWAY_KEY}, suffix {SUFFIX}, prefix {GATEWAY_KEY[:8]}!, inside x{GATEWAY_KEY[3:20]}y, " \
           f"too short {GATEWAY_KEY[-7:]}"
    assert scrub(text) == ("whole [redacted], suffix [redacted], prefix [redacted]!, inside x[redacted]y, "
                           f"too short {GATEWAY_KEY[-7:]}")
    assert scrub("nothing secret in these words") == "nothing secret in these words"
    answer = {"label": f"Plan {SUFFIX}", "keywords": ["a", GATEWAY_KEY], "confidence": 0.5}
    assert scrub.value(answer) == {"label": "Plan [redacted]", "keywords": ["a", "[redacted]"], "confidence": 0.5}
    assert leaks(repr(scrub)) == []


def test_urls_lose_their_credentials_and_keep_everything_else():
    assert redact_url(f"http://alice:{PASSWORD}@127.0.0.1:8080/v1") == "http://[redacted]@127.0.0.1:8080/v1"
    assert redact_url("https://gw.example/v1?api-key=abc123&region=eu") == \
        "https://gw.example/v1?api-key=[redacted]&region=eu"
    presigned = ("https://media.s3.example/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA1%2F2026"
                 "&X-Amz-Signature=5eb1d&X-Amz-Security-Token=FwoGZX")
    assert redact_url(presigned) == ("https://media.s3.example/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                                     "&X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]"
                                     "&X-Amz-Security-Token=[redacted]")
    for plain in ("http://127.0.0.1:8000/v1", "s3://media/images/0-0.png", None):
        assert redact_url(plain) == plain  # nothing to hide: unchanged (cache keys stay valid)
    assert url_secrets(f"http://alice:{PASSWORD}@h/v1?api-key=abc123&region=eu") == [PASSWORD, "abc123"]
    assert url_secrets(f"https://{GATEWAY_KEY}@h/v1") == [GATEWAY_KEY]
    # webhooks use the same module, and keep showing only scheme and host
    assert webhooks.redact(f"https://u:{PASSWORD}@hooks.example.com/T0/B0/XXXX?x=1") == "https://hooks.example.com/…"


# --- through the real SDKs against fake providers ----------------------------------------------------
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_gateway_key_quoted_whole_and_in_part_in_an_error_body_is_scrubbed(wire, request, caplog):
    caplog.set_level(logging.DEBUG)
    server = request.getfixturevalue(f"{wire}_server")
    server.queue(Status(500, f"upstream says: {QUOTED}"))
    spec = definition(provider=wire, base_url=server.base_url, max_retries=0, max_concurrency=1)
    outcome = choose_labeler(spec, {wire: GATEWAY_KEY}).label(evidence(clusters=2))
    reason = outcome.metadata["fallback_reason"]
    assert outcome.source == "mixed" and reason.startswith("HTTP 500: upstream says: key [redacted] rejected")
    assert leaks(reason + json.dumps(outcome.metadata) + "\n".join(outcome.warnings) + caplog.text) == []


def test_a_key_echoed_in_an_answer_is_scrubbed_before_it_is_cached_or_returned(openai_server, storage):
    openai_server.queue(Answer({"label": f"Gateway {GATEWAY_KEY}", "summary": f"Plans ending …{SUFFIX}",
                                "keywords": [SUFFIX, "plans"], "confidence": 0.8}))
    spec = definition(base_url=openai_server.base_url)
    labeler = choose_labeler(spec, {"openai": GATEWAY_KEY}, storage=storage)
    items = evidence(clusters=1)
    outcome = labeler.label(items)
    label = outcome.labels[0]
    assert outcome.source == "llm" and (label.label, label.keywords) == ("Gateway [redacted]", ["[redacted]", "plans"])
    cached = b"".join(storage.read_bytes(*CACHE_PARTS, e) for e in storage.list_dir(*CACHE_PARTS))
    assert b"Gateway [redacted]" in cached
    assert leaks(repr(outcome.labels) + json.dumps(outcome.metadata) + cached.decode()) == []

    # An entry cached before answers were scrubbed is scrubbed when read.
    LabelCache(storage, 3600).put(labeler.key_for(labeler.request_for(items[0]).prompt),
                                  {"label": f"Old {GATEWAY_KEY}", "summary": SUFFIX, "keywords": [], "confidence": 1})
    again = labeler.label(items)
    assert again.metadata["cache_hits"] == 1 and again.labels[0].label == "Old [redacted]"
    assert leaks(repr(again.labels)) == []


def test_a_connection_error_never_quotes_the_key_or_the_endpoints_credentials(caplog):
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    # A gateway taking the key as its user name, a password, and a tenant path naming the key's suffix.
    base_url = f"http://{GATEWAY_KEY}:{PASSWORD}@127.0.0.1:{port}/tenant/{SUFFIX}/v1"
    spec = definition(base_url=base_url, max_retries=0)
    labeler = choose_labeler(spec, {"openai": GATEWAY_KEY})
    outcome = labeler.label(evidence(clusters=1))
    reason = outcome.metadata["fallback_reason"]
    assert reason.startswith(f"cannot connect to http://[redacted]@127.0.0.1:{port}/tenant/[redacted]/v1")
    with pytest.raises(ProviderError) as raised:
        labeler.provider.embed(["a label"])
    assert "cannot connect" in str(raised.value)
    shown = reason + "\n".join(outcome.warnings) + str(raised.value) + repr(labeler.provider) + caplog.text
    assert leaks(shown, PASSWORD) == []


@pytest.mark.parametrize(("wire", "variable"), [("openai", "OPENAI_BASE_URL"), ("anthropic", "ANTHROPIC_BASE_URL")])
def test_credentials_in_the_sdks_base_url_variable_never_reach_logs_or_errors(wire, variable, request, monkeypatch,
                                                                              caplog):
    caplog.set_level(logging.DEBUG)
    server = request.getfixturevalue(f"{wire}_server")
    monkeypatch.setenv(variable, server.base_url.replace("://", f"://alice:{PASSWORD}@"))
    server.queue(Status(500, f"gateway user alice/{PASSWORD[2:]} is over quota"))
    spec = definition(provider=wire, max_retries=0, max_concurrency=1)  # no base_url: the SDK's variable
    outcome = choose_labeler(spec, {wire: GATEWAY_KEY}).label(evidence(clusters=2))
    assert len(server.completions()) == 2 and outcome.source == "mixed"  # the variable was honoured
    assert outcome.metadata["fallback_reason"] == "HTTP 500: gateway user alice/[redacted] is over quota"
    shown = caplog.text + json.dumps(outcome.metadata) + "\n".join(outcome.warnings)
    assert "HTTP Request: POST" in caplog.text  # the HTTP client's request log is kept, redacted
    assert leaks(shown, PASSWORD, PASSWORD[2:]) == []


def offline_presigner():
    """boto3's real SigV4 presigning (no network), with a session token as temporary credentials carry."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", region_name="us-east-1", endpoint_url="https://s3.example.invalid",
                          aws_access_key_id="AKIAEXAMPLEKEY123456", aws_secret_access_key="x" * 40,
                          aws_session_token="FwoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789",
                          config=Config(signature_version="s3v4"))
    return s3_presigner(client, 600)


def test_presigned_media_urls_are_sent_whole_but_never_logged_or_kept_in_errors(openai_server, caplog):
    caplog.set_level(logging.DEBUG)
    openai_server.queue(Status(500, lambda body: f"could not fetch {media_urls(body)[0]}"))
    spec = definition(base_url=openai_server.base_url, labeling_inputs=IMAGE_MAPPINGS, max_retries=0)
    outcome = choose_labeler(spec, {"openai": GATEWAY_KEY}, presign=offline_presigner()).label(
        evidence(clusters=1, documents=1))
    sent = media_urls(openai_server.completions()[0].body)[0]
    query = dict(p.split("=", 1) for p in urlsplit(sent).query.split("&"))
    credentials = [query["X-Amz-Signature"], query["X-Amz-Credential"], query["X-Amz-Security-Token"]]
    assert all(len(c) > 8 for c in credentials)  # the provider got the working URL
    reason = outcome.metadata["fallback_reason"]
    assert reason.startswith("HTTP 500: could not fetch https://s3.example.invalid/media/images/0-0.png?")
    assert "X-Amz-Signature=[redacted]" in reason
    shown = reason + "\n".join(outcome.warnings) + caplog.text
    assert [c for c in credentials if c in shown] == []


def test_the_cache_key_holds_no_credentials_of_media_urls_or_the_endpoint(openai_server):
    def key(base_url: str, image: str) -> str:
        labeler = choose_labeler(definition(base_url=base_url, labeling_inputs=IMAGE_MAPPINGS), {"openai": GATEWAY_KEY})
        item = evidence(clusters=1, documents=1)[0]
        item.representatives[0]["document_blobs"][0]["url"] = image
        return labeler.key_for(labeler.request_for(item).prompt)

    endpoint = openai_server.base_url.replace("://", "://alice:{}@")
    image = "https://cdn.example/img.png?X-Amz-Credential={0}&X-Amz-Signature={0}&X-Amz-Security-Token={0}"
    first = key(endpoint.format(PASSWORD), image.format("aaaa1111"))
    assert key(endpoint.format("another-password"), image.format("bbbb2222")) == first  # fresh signature: a hit
    assert key(endpoint.format(PASSWORD), image.replace("img.png", "other.png").format("aaaa1111")) != first
