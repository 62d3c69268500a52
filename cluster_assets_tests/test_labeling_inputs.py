"""Input mappings, response shapes and answer parsing: the pure functions, no calls."""

from __future__ import annotations

import json
import urllib.request

import pytest

from cluster_assets.labeling.inputs import (
    LabelingConfigError, Part, document_inputs, presign_parts, resolve_blob, resolve_path, s3_presigner,
    sigv4_s3_client,
)
from cluster_assets.labeling.shape import AnswerError, parse_answer, response_schema, wire_schema
from cluster_assets.spec import DefinitionError, InputMapping, parse_definition

DOC = {
    "document_id": "d1",
    "title": "Trail running shoes",
    "metadata": {"description": "Light and grippy", "tags": ["outdoor", "sport"], "price": 120.5},
    "document_blobs": [{"url": "s3://media/a.png"}, {"url": "s3://media/b.png", "alt": "side view"}],
    "source_blobs": [{"url": "https://shop.invalid/p/1", "alt": "page"}, {"url": "https://shop.invalid/p/2"},
                     {"url": "https://shop.invalid/p/3"}],
}


def mapping(input_key="text", source_type="payload", path=None, override=None) -> InputMapping:
    return InputMapping(input_key=input_key, source_type=source_type, path=path, override=override)


def test_dot_paths_index_lists_and_report_missing_steps():
    assert resolve_path(DOC, "metadata.description") == "Light and grippy"
    assert resolve_path(DOC, "metadata.tags.1") == "sport"
    assert resolve_path(DOC, "metadata.tags.-1") == "sport"
    missing = resolve_path(DOC, "metadata.tags.5")
    assert missing is resolve_path(DOC, "metadata.colour") is resolve_path(DOC, "title.0")


def test_blob_paths_look_in_document_blobs_first_then_source_blobs():
    assert resolve_blob(DOC, "0.url") == "s3://media/a.png"
    assert resolve_blob(DOC, "2.url") == "https://shop.invalid/p/3"  # only source_blobs has a third blob
    assert resolve_blob(DOC, "source_blobs.0.url") == "https://shop.invalid/p/1"
    assert resolve_blob(DOC, "document_blobs.1.alt") == "side view"
    assert resolve_blob(DOC, "alt") == "side view"  # a bare field: the first blob that has it
    assert resolve_blob({"document_id": "x"}, "0.url") is resolve_path({}, "a")


def test_text_mappings_are_truncated_one_by_one_and_joined_in_mapping_order():
    mappings = [mapping(path="metadata.description"), mapping(path="title"), mapping(path="metadata.price")]
    inputs = document_inputs(DOC, mappings, max_length=9)
    assert inputs.parts == [Part("text", "Light and\nTrail run\n120.5")]
    assert inputs.missing == set()


def test_missing_values_are_skipped_and_reported_per_mapping():
    mappings = [mapping(path="metadata.colour"), mapping(path="title"),
                mapping(input_key="image_url", source_type="blob", path="7.url"),
                mapping(input_key="image_url", source_type="blob", path="1.url"),
                mapping(source_type="literal", override="Catalogue of a sports shop")]
    inputs = document_inputs(DOC, mappings, max_length=100)
    assert inputs.missing == {0, 2}
    assert inputs.parts == [Part("text", "Trail running shoes\nCatalogue of a sports shop"),
                            Part("image_url", "s3://media/b.png")]


def test_without_mappings_the_whole_payload_goes_as_json_without_the_id():
    inputs = document_inputs(DOC, None, max_length=10_000)
    assert len(inputs.parts) == 1
    sent = json.loads(inputs.parts[0].value)
    assert "document_id" not in sent and sent["title"] == DOC["title"] and sent["metadata"] == DOC["metadata"]
    assert len(document_inputs(DOC, None, max_length=40).parts[0].value) == 40


def test_response_shape_becomes_a_strict_schema_and_answers_are_validated():
    schema = response_schema({"sentiment": "positive | negative | neutral", "tags": ["string"],
                              "score": "number", "details": {"colour": "string", "size": "integer"}})
    props = schema["properties"]
    assert list(props) == ["label", "summary", "keywords", "confidence", "sentiment", "tags", "score", "details"]
    assert props["sentiment"] == {"type": "string", "enum": ["positive", "negative", "neutral"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["details"]["required"] == ["colour", "size"] and props["details"]["additionalProperties"] is False
    assert schema["required"] == list(props) and schema["additionalProperties"] is False
    assert "minimum" not in json.dumps(wire_schema(schema)) and "minimum" in json.dumps(schema)

    good = {"label": "Trail shoes", "summary": "s", "keywords": ["a"], "confidence": 1.7, "sentiment": "positive",
            "tags": ["x"], "score": 2, "details": {"colour": "red", "size": 42}, "unasked": 1}
    parsed = parse_answer("```json\n" + json.dumps(good) + "\n```", schema)
    assert parsed["confidence"] == 1.0 and "unasked" not in parsed
    with pytest.raises(AnswerError, match="sentiment"):
        parse_answer(json.dumps({**good, "sentiment": "angry"}), schema)
    with pytest.raises(AnswerError, match="details"):
        parse_answer(json.dumps({**good, "details": {"colour": "red"}}), schema)
    with pytest.raises(AnswerError, match="not JSON"):
        parse_answer("Sure! The label is Trail shoes.", schema)
    assert list(response_schema(None, include_summary=False, include_keywords=False)["properties"]) == ["label", "confidence"]


def test_definitions_refuse_bad_shapes_and_modalities_naming_file_and_field():
    base = {"cluster_name": "c", "source_collection_ids": ["docs"], "feature_addresses": ["v"]}
    with pytest.raises(DefinitionError) as bad_shape:
        parse_definition({**base, "llm_labeling": {"response_shape": {"tags": ["string", "number"]}}}, "shop.yaml")
    assert str(bad_shape.value).startswith("shop.yaml: llm_labeling.response_shape: tags")
    with pytest.raises(DefinitionError, match="reserved"):
        parse_definition({**base, "llm_labeling": {"response_shape": {"cluster_id": "string"}}}, "shop.yaml")
    audio = {"input_mappings": [{"input_key": "text", "source_type": "payload", "path": "t"},
                                {"input_key": "audio_url", "source_type": "blob", "path": "0.url"}]}
    with pytest.raises(DefinitionError) as bad_modality:  # anthropic takes video (as frames), not audio
        parse_definition({**base, "llm_labeling": {"provider": "anthropic", "labeling_inputs": audio}}, "shop.yaml")
    message = str(bad_modality.value)
    assert message.startswith("shop.yaml: llm_labeling") and "input_mappings.1.input_key" in message
    assert "provider 'anthropic' cannot take audio_url" in message
    with pytest.raises(DefinitionError, match="input_key"):  # an unknown media key is a typo, not text
        parse_definition({**base, "llm_labeling": {"labeling_inputs": {"input_mappings": [
            {"input_key": "pdf_url", "source_type": "payload", "path": "t"}]}}}, "shop.yaml")
    # the reference also names text inputs after their field: those load, as text
    named = parse_definition({**base, "llm_labeling": {"labeling_inputs": {"input_mappings": [
        {"input_key": "title", "source_type": "payload", "path": "title"}]}}}, "shop.yaml")
    assert named.llm_labeling.labeling_inputs.input_mappings[0].input_key == "text"
    spec = parse_definition({**base, "llm_labeling": {"provider": "openai_chat_v1", "model": "gpt-x",
                                                      "presign_expiry_seconds": 60}})
    assert (spec.llm_labeling.provider, spec.llm_labeling.model_name) == ("openai", "gpt-x")


def test_s3_urls_are_presigned_against_moto_and_the_signed_url_serves_the_object(moto_s3):
    client = sigv4_s3_client()
    client.create_bucket(Bucket="media")
    client.put_object(Bucket="media", Key="images/shoe 1.png", Body=b"PNG-BYTES")
    parts = [Part("text", "s3://media/not-a-media-part"), Part("image_url", "s3://media/images/shoe 1.png"),
             Part("image_url", "https://cdn.invalid/x.png")]
    signed = presign_parts(parts, s3_presigner(client, expiry_seconds=120))
    assert signed[0] == parts[0] and signed[2] == parts[2]
    url = signed[1].value
    assert url.startswith(moto_s3 + "/media/images/shoe")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=120" in url and "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"PNG-BYTES"
    with pytest.raises(LabelingConfigError, match="no S3 client"):
        presign_parts(parts, None)
