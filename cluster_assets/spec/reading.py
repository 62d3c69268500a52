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
MAX_DEPTH = 32
TOO_DEEP = f"the document is nested too deeply (at most {MAX_DEPTH} levels)"


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
    """The file's text; refused when it holds more than ``limit`` bytes (read no further than that,
    so a file that grows, or a link to a device, cannot make it read on)."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        size = path.stat().st_size
        raise DefinitionReadError(f"the file is {size:,} bytes; a definition file may be at most {limit:,} bytes"
                                  if size > limit else f"the file is larger than {limit:,} bytes, "
                                  f"the most a definition file may hold")
    return data.decode("utf-8")


def parse_text(text: str, suffix: str) -> Any:
    """JSON for ``.json``, else YAML without aliases; a document the parser cannot hold is refused, not raised."""
    try:
        data = json.loads(text) if suffix == ".json" else yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506
    except RecursionError:
        raise DefinitionReadError(TOO_DEEP) from None
    except (DefinitionReadError, json.JSONDecodeError, yaml.YAMLError):
        raise
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise DefinitionReadError(f"cannot parse {suffix[1:].upper()}: {exc}") from None
    _check_depth(data)
    return data


def _check_depth(data: Any, limit: int = MAX_DEPTH) -> None:
    # pydantic validates a few hundred levels, but cannot serialise them again (the code version)
    level = [data]
    for _ in range(limit):
        level = [v for item in level if isinstance(item, (dict, list))
                 for v in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return
    raise DefinitionReadError(TOO_DEEP)
