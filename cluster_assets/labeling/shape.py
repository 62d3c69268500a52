"""The answer a model must give: ``response_shape`` -> JSON schema, parsing, validation, Arrow types.

A response shape is the reference API's small notation for the fields to return::

    {"sentiment": "positive | negative | neutral", "keywords": ["string"], "score": "number"}

Type names (``string``, ``number``, ``integer``, ``boolean``) give that type;
``a | b | c`` gives a string enum; a one-element list gives an array of its
element; a nested object gives an object. Any other string is read as the
description of a string field ("a short title"). The standard fields (``label``,
``summary``, ``keywords``, ``confidence``) are always asked for unless the
definition turns summary or keywords off; a shape may retype them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

STANDARD_FIELDS = ("label", "summary", "keywords", "confidence")
TYPE_NAMES = {
    "string": {"type": "string"}, "str": {"type": "string"}, "text": {"type": "string"},
    "number": {"type": "number"}, "float": {"type": "number"},
    "integer": {"type": "integer"}, "int": {"type": "integer"},
    "boolean": {"type": "boolean"}, "bool": {"type": "boolean"},
}


class ShapeError(ValueError):
    """A response_shape entry that cannot be turned into a schema; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class AnswerError(ValueError):
    """A model answer that is not JSON or does not match the schema (retried, then the cluster falls back)."""


def field_schema(value: Any, where: str = "response_shape") -> dict:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in TYPE_NAMES:
            return dict(TYPE_NAMES[text.lower()])
        if "|" in text:
            options = [o.strip() for o in text.split("|") if o.strip()]
            if len(options) < 2:
                raise ShapeError(where, f"an enum needs at least two options separated by '|', got {value!r}")
            return {"type": "string", "enum": options}
        if not text:
            raise ShapeError(where, "empty type; use 'string', 'number', 'integer', 'boolean', 'a | b', [..] or {..}")
        return {"type": "string", "description": text}
    if isinstance(value, list):
        if len(value) != 1:
            raise ShapeError(where, f"a list type holds exactly one element type, e.g. ['string']; got {len(value)}")
        return {"type": "array", "items": field_schema(value[0], f"{where}.0")}
    if isinstance(value, dict):
        if not value:
            raise ShapeError(where, "an object type needs at least one field")
        return object_schema({k: field_schema(v, f"{where}.{k}") for k, v in value.items()})
    raise ShapeError(where, f"unsupported type {type(value).__name__}")


def object_schema(properties: dict[str, dict]) -> dict:
    # Every field required and nothing else allowed: what OpenAI's strict structured outputs demand.
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def response_schema(response_shape: dict | None, include_summary: bool = True, include_keywords: bool = True) -> dict:
    """The JSON schema of one cluster's answer: the standard fields, then the shape's own fields in order."""
    properties: dict[str, dict] = {"label": {"type": "string", "description": "a short name for the cluster (2-6 words)"}}
    if include_summary:
        properties["summary"] = {"type": "string", "description": "one or two sentences on what the documents share"}
    if include_keywords:
        properties["keywords"] = {"type": "array", "items": {"type": "string"}, "description": "3 to 8 keywords"}
    properties["confidence"] = {"type": "number", "minimum": 0, "maximum": 1,
                                "description": "how well the label fits all documents shown, from 0 to 1"}
    for name, value in (response_shape or {}).items():
        properties[name] = field_schema(value, f"response_shape.{name}")
    return object_schema(properties)


def extra_fields(response_shape: dict | None) -> list[str]:
    """The shape's fields that are not standard label fields: they become their own columns."""
    return [name for name in (response_shape or {}) if name not in STANDARD_FIELDS]


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_answer(text: str | None, schema: dict, cluster_id: int | None = None) -> dict:
    """The model's text -> a dict that matches ``schema``; ``AnswerError`` says what is wrong.

    A list-shaped answer (what a custom prompt asking for a JSON array gets) is taken when it holds one
    object, or an object whose ``cluster_id`` names ``cluster_id`` ("cl_0" and 0 both name cluster 0)."""
    data = _json_of(text)
    if isinstance(data, list):
        data = _entry_for(data, cluster_id)
    return check_answer(data, schema)


def cluster_number(value: Any) -> int | None:
    """ "cl_7", "7", 7 -> 7; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(?:cl_?)?(\d+)\s*", value, flags=re.IGNORECASE)
        return int(match.group(1)) if match else None
    return None


def _entry_for(items: list, cluster_id: int | None) -> Any:
    objects = [i for i in items if isinstance(i, dict)]
    if cluster_id is not None:
        named = [i for i in objects if cluster_number(i.get("cluster_id")) == cluster_id]
        if named:
            return named[0]
    if len(items) == 1:
        return items[0]
    raise AnswerError(f"answer is a JSON list of {len(items)} entries, none for cluster {cluster_id}")


def parse_cluster_list(text: str | None, item_schema: dict) -> dict[int, dict]:
    """An answer about several clusters (a JSON array, or an object holding one) -> cluster id -> answer.
    Entries without a recognisable ``cluster_id`` or that do not match ``item_schema`` are left out."""
    data = _json_of(text)
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    if not isinstance(data, list):
        raise AnswerError(f"answer is a JSON {type(data).__name__}, not a list of clusters")
    out: dict[int, dict] = {}
    for item in data:
        if not isinstance(item, dict):
            continue
        number = cluster_number(item.get("cluster_id"))
        if number is None or number in out:
            continue
        try:
            out[number] = check_answer(item, item_schema)
        except AnswerError:
            continue
    if not out:
        raise AnswerError("answer names no cluster by a valid cluster_id (\"cl_0\" or 0) with valid fields")
    return out


def _json_of(text: str | None) -> Any:
    if not text or not text.strip():
        raise AnswerError("empty answer")
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        data = None
        # prose around the JSON: the outermost array or object, whichever opens first
        for opening, closing in sorted((("[", "]"), ("{", "}")), key=lambda p: (body.find(p[0]) < 0, body.find(p[0]))):
            start, end = body.find(opening), body.rfind(closing)
            try:
                data = json.loads(body[start:end + 1]) if 0 <= start < end else None
            except json.JSONDecodeError:
                data = None
            if data is not None:
                break
        if data is None:
            raise AnswerError(f"answer is not JSON: {text[:80]!r}") from None
    return data


def check_answer(data: Any, schema: dict) -> dict:
    import jsonschema

    if not isinstance(data, dict):
        raise AnswerError(f"answer is a JSON {type(data).__name__}, not an object")
    if isinstance(data.get("confidence"), (int, float)) and not isinstance(data.get("confidence"), bool):
        data["confidence"] = min(1.0, max(0.0, float(data["confidence"])))
    # Fields the schema does not ask for are dropped rather than refused: models add them freely.
    allowed = schema.get("properties", {})
    data = {k: v for k, v in data.items() if k in allowed}
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.path) or "answer"
        raise AnswerError(f"{where}: {first.message[:160]}")
    if not str(data["label"]).strip():
        raise AnswerError("label: empty")
    return data


def arrow_type(schema: dict) -> pa.DataType:
    """The Parquet column type of one schema field, so a column keeps its type when every value is null."""
    kind = schema.get("type")
    if kind == "string":
        return pa.string()
    if kind == "number":
        return pa.float64()
    if kind == "integer":
        return pa.int64()
    if kind == "boolean":
        return pa.bool_()
    if kind == "array":
        return pa.list_(arrow_type(schema["items"]))
    if kind == "object":
        return pa.struct([(name, arrow_type(sub)) for name, sub in schema["properties"].items()])
    return pa.string()


def extra_types(response_shape: dict | None) -> dict[str, pa.DataType]:
    return {name: arrow_type(field_schema(response_shape[name], name)) for name in extra_fields(response_shape)}


def wire_schema(schema: dict) -> dict:
    """The schema as sent to providers: numeric bounds dropped (some structured-output modes refuse them;
    the bounds are still enforced when the answer is parsed)."""
    out: dict = {}
    for key, value in schema.items():
        if key in ("minimum", "maximum"):
            continue
        if key == "properties":
            out[key] = {name: wire_schema(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = wire_schema(value)
        else:
            out[key] = value
    return out


# Columns the labels table already has: a response_shape field may not take these names.
RESERVED_FIELDS = ("cluster_id", "document_id", "representative_ids", "labeling_source", "centroid", "count",
                   "cluster_path", "representative")
