"""The reference's labeling examples as written, through a Dagster run: a custom prompt that asks for a JSON
array over ``$clusters``, video and audio inputs, and a feature address that names its extractor and version."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from cluster_assets.stages import layout
from cluster_assets.stages.outputs import read_output
from cluster_assets_tests.conftest import materialize_group, write_definition
from cluster_assets_tests.llm_servers import (  # noqa: F401 - fixtures
    KEY, no_llm_environment, openai_server, user_content, user_text,
)
from cluster_assets_tests.media import write_tone, write_video

pytestmark = pytest.mark.usefixtures("no_llm_environment")
PER_CLUSTER = 8
ADDRESS = "mixpeek://clip_extractor@v2/clip_vec"


def clips_table(video: str, tone: str) -> pa.Table:
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.1, size=(PER_CLUSTER, 4)) for c in (0.0, 3.0, 6.0)]).astype(np.float32)
    blobs = pa.array([[{"url": video}, {"url": tone}]] * len(X), pa.list_(pa.struct([("url", pa.string())])))
    schema = pa.schema([("document_id", pa.string()), ("title", pa.string()),
                        pa.field("clip_vec", pa.list_(pa.float32()),
                                 metadata={"extractor": "clip_extractor", "extractor_version": "v2"}),
                        ("document_blobs", blobs.type)])
    return pa.Table.from_arrays([pa.array([f"clip-{i:03d}" for i in range(len(X))]),
                                 pa.array([f"clip {i // PER_CLUSTER} take {i}" for i in range(len(X))]),
                                 pa.array(list(X), pa.list_(pa.float32())), blobs], schema=schema)


def clips_definition(name: str, address: str, base_url: str) -> dict:
    return {
        "cluster_name": name, "source_collection_ids": ["clips"], "feature_addresses": [address],
        "algorithm": "kmeans", "algorithm_config": {"num_clusters": 3},
        "llm_labeling": {
            "provider": "openai_chat_v1", "model_name": "fake-model", "base_url": base_url,
            "cache_ttl_seconds": 0, "max_samples_per_cluster": 1, "use_embedding_dedup": False,
            "custom_prompt": "Here are $num_clusters clusters:\n$clusters\n"
                             'Return JSON array: [{"cluster_id": "cl_0", "label": "...", "keywords": [...]}]',
            "labeling_inputs": {"input_mappings": [
                {"input_key": "text", "source_type": "payload", "path": "title"},
                {"input_key": "video_url", "source_type": "blob", "path": "document_blobs.0.url"},
                {"input_key": "audio_url", "source_type": "blob", "path": "document_blobs.1.url"}]},
        },
    }


def test_reference_prompt_video_audio_and_addressed_feature_in_one_dagster_run(
        tmp_path, storage, definitions_dir, openai_server, monkeypatch):
    video, tone = write_video(tmp_path / "clip.mp4"), write_tone(tmp_path / "tone.wav")
    table = clips_table(video, tone)
    storage.write_collection("clips", table.schema, [table])
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    def answer(body):  # as the prompt asks: one array over the clusters, ids as "cl_N" and as numbers
        ids = [int(n) for n in re.findall(r"Cluster cl_(\d+) holds", user_text(body))]
        return [{"cluster_id": f"cl_{c}" if c % 2 else c, "label": f"Clip group {c}", "keywords": [f"take{c}"]}
                for c in ids]

    openai_server.answer = answer
    write_definition(definitions_dir, clips_definition("clip_groups", ADDRESS, openai_server.base_url))
    write_definition(definitions_dir, clips_definition("wrong_extractor", "mixpeek://audio_extractor@v1/clip_vec",
                                                       openai_server.base_url))

    result = materialize_group(definitions_dir, "clip_groups")
    labels = read_output(storage, "clip_groups", layout.LABELS, result.run_id)
    assert labels.column("label").to_pylist() == [f"Clip group {c}" for c in labels.column("cluster_id").to_pylist()]
    assert result.asset_materializations_for_node("clip_groups__labels")[0].metadata["labeling_source"].value == "llm"
    requests = openai_server.completions()
    assert len(requests) == 1  # three clusters: one request for them all
    parts = user_content(requests[0].body)
    frames = [p for p in parts if p["type"] == "image_url"]
    audio = [p for p in parts if p["type"] == "input_audio"]
    assert len(frames) == 3 * 4 and all(f["image_url"]["url"].startswith("data:image/jpeg;base64,") for f in frames)
    assert len(audio) == 3 and {a["input_audio"]["format"] for a in audio} == {"wav"}
    assert video not in str(parts) and tone not in str(parts)

    failed = materialize_group(definitions_dir, "wrong_extractor", raise_on_error=False)
    assert not failed.success
    message = "\n".join(str(e.event_specific_data.error) for e in failed.all_events if e.is_step_failure)
    assert "names audio_extractor@v1" in message and "clip_extractor@v2" in message
