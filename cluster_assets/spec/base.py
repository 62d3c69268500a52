"""Shared pieces of the definition models: strict models and safe ids."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MEDIA_INPUT_KEYS = ("image_url", "video_url", "audio_url")
STANDARD_ENRICHMENT_FIELDS = ("cluster_id", "label", "summary", "keywords", "confidence", "cluster_path", "representative")
# Top-level asset key prefixes that are not a definition's: collections/<id> and taxonomies/<name>.
RESERVED_KEY_PREFIXES = ("collections", "taxonomies")


def check_safe_id(value: str, what: str) -> str:
    """Collection ids and cluster names become folder names: no path characters."""
    if not SAFE_ID.match(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} must start with a letter or digit and use only letters, digits, '_', '-', '.' "
            f"(no '/', no '..')"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
