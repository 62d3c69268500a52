"""What a model is shown of each document: the definition's input mappings applied to a payload.

A mapping takes one value from a document (``payload``: a dot path into the
payload; ``blob``: a dot path into ``document_blobs`` / ``source_blobs``) or a
fixed ``literal``. Numeric path segments index lists (``document_blobs.0.url``).
Text values are truncated one by one to ``sample_text_max_length`` and joined in
mapping order; media values (``image_url``, ``video_url``, ``audio_url``) travel
as their own parts, ``s3://`` URLs presigned so the provider can fetch them.
Without mappings the whole payload is sent as JSON (the reference's default).
A value missing from a document is skipped for that document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from cluster_assets.secrets import Scrubber, protect_logs

TEXT = "text"
MEDIA_KEYS = ("image_url", "video_url", "audio_url")
BLOB_COLUMNS = ("document_blobs", "source_blobs")
ID = "document_id"
_MISSING = object()


class LabelingConfigError(ValueError):
    """A labeling configuration that can never work (e.g. a modality the provider cannot take); raised before any call."""


@dataclass(frozen=True)
class Part:
    """One piece of a prompt: ``kind`` is ``text`` or a media input key, ``value`` the text or the URL."""

    kind: str
    value: str


@dataclass
class DocumentInputs:
    parts: list[Part]
    missing: set[int] = field(default_factory=set)  # indices of the mappings this document lacks


def resolve_path(data: Any, path: str) -> Any:
    """``a.b.0.c`` into nested dicts and lists; ``_MISSING`` when any step is absent or null."""
    current = data
    for segment in path.split("."):
        if isinstance(current, dict):
            if segment not in current:
                return _MISSING
            current = current[segment]
        elif isinstance(current, (list, tuple)) and _is_index(segment):
            index = int(segment)
            if not -len(current) <= index < len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
        if current is None:
            return _MISSING
    return current


def _is_index(segment: str) -> bool:
    return segment.lstrip("-").isdigit()


def resolve_blob(document: dict, path: str) -> Any:
    """A blob path: ``document_blobs.0.url`` / ``source_blobs.1.url`` explicitly; ``0.url`` looks in
    ``document_blobs`` first, then ``source_blobs``; a bare field (``url``) takes the first blob that has it."""
    head = path.split(".", 1)[0]
    if head in BLOB_COLUMNS:
        return resolve_path(document, path)
    for column in BLOB_COLUMNS:
        blobs = document.get(column)
        if not isinstance(blobs, (list, tuple)):
            continue
        if _is_index(head):
            value = resolve_path(blobs, path)
            if value is not _MISSING:
                return value
        else:
            for blob in blobs:
                value = resolve_path(blob, path)
                if value is not _MISSING:
                    return value
    return _MISSING


def truncate(text: str, max_length: int) -> str:
    return text if len(text) <= max_length else text[:max_length]


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def payload_json(document: dict) -> str:
    """The reference's default input: every payload field as JSON (the id is not content)."""
    return json.dumps({k: v for k, v in document.items() if k != ID}, ensure_ascii=False, default=str)


def document_inputs(document: dict, mappings: Sequence | None, max_length: int) -> DocumentInputs:
    """One document -> the parts the model sees (before presigning), and which mappings it lacked."""
    if not mappings:
        return DocumentInputs([Part(TEXT, truncate(payload_json(document), max_length))])
    texts: list[str] = []
    media: list[Part] = []
    missing: set[int] = set()
    for i, mapping in enumerate(mappings):
        if mapping.source_type == "literal":
            value: Any = mapping.override
        elif mapping.source_type == "blob":
            value = resolve_blob(document, mapping.path)
        else:
            value = resolve_path(document, mapping.path)
        if value is _MISSING:
            missing.add(i)
            continue
        if mapping.input_key == TEXT:
            text = truncate(_as_text(value), max_length)
            if text.strip():
                texts.append(text)
            else:
                missing.add(i)
        elif isinstance(value, str) and value.strip():
            media.append(Part(mapping.input_key, value.strip()))
        else:
            missing.add(i)  # a media mapping must give one URL string
    parts = [Part(TEXT, "\n".join(texts))] if texts else []
    return DocumentInputs(parts + media, missing)


def describe_mapping(mapping, index: int) -> str:
    where = f"llm_labeling.labeling_inputs.input_mappings.{index}"
    return f"{where} ({mapping.input_key} from {mapping.source_type} path {mapping.path!r})"


def used_modalities(mappings: Sequence | None) -> list[tuple[int, str]]:
    return [(i, m.input_key) for i, m in enumerate(mappings or []) if m.input_key != TEXT]


def check_modalities(mappings: Sequence | None, provider: str, model: str, supported: frozenset[str]) -> None:
    """Refuse, before any call, a mapping whose modality the provider cannot take."""
    for i, key in used_modalities(mappings):
        if key not in supported:
            raise LabelingConfigError(
                f"llm_labeling.labeling_inputs.input_mappings.{i}.input_key: provider {provider!r} "
                f"(model {model!r}) cannot take {key} inputs; it takes: {', '.join(sorted(supported))}"
            )


# --- presigning ----------------------------------------------------------------------------------

Presigner = Callable[[str], str]


def s3_presigner(client, expiry_seconds: int) -> Presigner:
    """``s3://bucket/key`` -> an HTTPS URL a provider can GET for ``expiry_seconds``, signed by ``client`` (boto3)."""

    protect_logs(Scrubber(), ("botocore.auth",))  # its debug log holds each URL's signature and credentials

    def presign(url: str) -> str:
        parsed = urlparse(url)
        key = parsed.path.lstrip("/")
        if not parsed.netloc or not key:
            raise ValueError(f"not an s3://bucket/key URL: {url!r}")
        return client.generate_presigned_url(
            "get_object", Params={"Bucket": parsed.netloc, "Key": key}, ExpiresIn=int(expiry_seconds))

    return presign


def sigv4_s3_client():
    """boto3's S3 client with Signature Version 4: buckets created since 2020 refuse SigV2 presigned URLs,
    and boto3 may otherwise sign with SigV2 (custom endpoints, us-east-1)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(signature_version="s3v4"))


def presign_parts(parts: Sequence[Part], presign: Presigner | None) -> list[Part]:
    """Media parts with ``s3://`` URLs replaced by presigned ones; other parts as they are."""
    out = []
    for part in parts:
        if part.kind != TEXT and part.value.startswith("s3://"):
            if presign is None:
                raise LabelingConfigError(f"cannot presign {part.value!r}: no S3 client configured")
            part = Part(part.kind, presign(part.value))
        out.append(part)
    return out
