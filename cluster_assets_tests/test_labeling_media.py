"""Video and audio inputs, sent as each provider takes them, and the provider registry as the one source of truth."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from cluster_assets import resources
from cluster_assets.keywords import ClusterLabel
from cluster_assets.labeling import ClusterEvidence, choose_labeler
from cluster_assets.labeling.providers import MODALITIES, PROVIDERS
from cluster_assets.spec import parse_definition
from cluster_assets_tests.media import write_tone, write_video
from cluster_assets_tests.llm_servers import (  # noqa: F401 - fixtures
    KEY, anthropic_server, definition, no_llm_environment, openai_server, user_content,
)

pytestmark = pytest.mark.usefixtures("no_llm_environment")


def media_evidence(url: str) -> list[ClusterEvidence]:
    reps = [{"document_id": "m0", "title": "a clip", "document_blobs": [{"url": url}]}]
    return [ClusterEvidence(0, 1, ["clip"], reps, ClusterLabel(0, "data", "data summary", ["clip"], ["m0"], 0.2))]


def mappings(key: str) -> dict:
    return {"input_mappings": [{"input_key": "text", "source_type": "payload", "path": "title"},
                               {"input_key": key, "source_type": "blob", "path": "document_blobs.0.url"}]}


def test_a_video_goes_as_frames_to_openai_and_anthropic(tmp_path, openai_server, anthropic_server):
    video = write_video(tmp_path / "clip.mp4")
    for server, provider in ((openai_server, "openai"), (anthropic_server, "anthropic")):
        spec = definition(provider=provider, base_url=server.base_url, labeling_inputs=mappings("video_url"),
                          cache_ttl_seconds=0)
        outcome = choose_labeler(spec, {provider: KEY}).label(media_evidence(video))
        assert outcome.source == "llm", outcome.metadata
        parts = user_content(server.completions()[-1].body)
        if provider == "openai":
            images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        else:
            images = ["data:" + p["source"]["media_type"] + ";base64," + p["source"]["data"]
                      for p in parts if p["type"] == "image"]
        assert len(images) == 4 and all(i.startswith("data:image/jpeg;base64,") for i in images)
        from PIL import Image

        first = Image.open(io.BytesIO(base64.b64decode(images[0].split(",", 1)[1])))
        last = Image.open(io.BytesIO(base64.b64decode(images[-1].split(",", 1)[1])))
        assert first.size == (32, 32) and np.asarray(first).mean() < np.asarray(last).mean()  # spread over the clip
        assert video not in str(parts)  # the bytes, not the path


def test_audio_goes_inline_to_openai_and_is_refused_for_anthropic_at_validation(tmp_path, openai_server):
    tone = write_tone(tmp_path / "tone.wav")
    spec = definition(base_url=openai_server.base_url, labeling_inputs=mappings("audio_url"), cache_ttl_seconds=0)
    outcome = choose_labeler(spec, {"openai": KEY}).label(media_evidence(tone))
    assert outcome.source == "llm", outcome.metadata
    audio = [p for p in user_content(openai_server.completions()[-1].body) if p["type"] == "input_audio"]
    assert len(audio) == 1 and audio[0]["input_audio"]["format"] == "wav"
    assert base64.b64decode(audio[0]["input_audio"]["data"]) == open(tone, "rb").read()
    with pytest.raises(ValueError, match=r"llm_labeling: labeling_inputs.input_mappings.1.input_key: provider "
                                         r"'anthropic' cannot take audio_url inputs; it takes: image_url, text, "
                                         r"video_url"):
        definition(provider="anthropic_messages_v1", labeling_inputs=mappings("audio_url"))
    # an unreadable clip fails its cluster only, naming why
    spec = definition(base_url=openai_server.base_url, labeling_inputs=mappings("video_url"), cache_ttl_seconds=0)
    broken = choose_labeler(spec, {"openai": KEY}).label(media_evidence(tone))
    assert broken.source == "fallback" and "cannot read a media input: no video stream" in \
        broken.metadata["fallback_reason"]


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_registered_provider_is_known_everywhere_from_its_own_entry(name, monkeypatch):
    entry = PROVIDERS[name]
    assert resources.LLM_KEY_VARIABLES[f"{name}_api_key"] == entry.key_variables
    monkeypatch.setenv(entry.key_variables[-1], "k-" + name)
    assert getattr(resources.llm_resource(), f"{name}_api_key") is not None
    assert resources.LLMResource(**{f"{name}_api_key": "k"}).api_keys()[name] == "k"
    assert MODALITIES[name] == {"text", *entry.media}
    for alias in (name, *entry.aliases):
        body = {"cluster_name": "x", "source_collection_ids": ["c"], "feature_addresses": ["v"],
                "llm_labeling": {"provider": alias}}
        assert parse_definition(body).llm_labeling.provider == name
    spec = definition(provider=name)
    labeler = choose_labeler(spec, environ={entry.key_variables[0]: "sk-" + "x" * 30})
    assert type(labeler.provider) is entry
