"""Reading a definition file without letting it exhaust the code location: a size bound, no YAML aliases.

A definition is a small hand-written document. A file of nested YAML aliases (a
"billion laughs") is a few hundred bytes on disk and billions of nodes once
expanded, and every definition is expanded in the one process that loads all
of them, so aliases are refused outright rather than counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

MAX_DEFINITION_BYTES = 1_000_000


class DefinitionReadError(ValueError):
    """The file cannot be read as a definition; the message names why (without the file, added by the caller)."""


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            mark = event.start_mark
            raise DefinitionReadError(
                f"line {mark.line + 1}, column {mark.column + 1}: YAML aliases (*{event.anchor}) are not allowed "
                f"in a definition file; write the value out"
            )
        return super().compose_node(parent, index)


def read_bounded_text(path: Path, limit: int = MAX_DEFINITION_BYTES) -> str:
    """The file's text, refused before reading when it is larger than ``limit`` bytes."""
    size = path.stat().st_size
    if size > limit:
        raise DefinitionReadError(f"the file is {size:,} bytes; a definition file may be at most {limit:,} bytes")
    return path.read_text(encoding="utf-8")


def parse_text(text: str, suffix: str) -> Any:
    """JSON for ``.json``, else YAML without aliases; nesting too deep for the parser is refused, not raised."""
    try:
        if suffix == ".json":
            return json.loads(text)
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise DefinitionReadError("the document is nested too deeply") from None
