"""Definition files -> validated definitions, and one error per problem: ``<file>: <field>: <message>``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cluster_assets.spec.base import DEFINITION_SUFFIXES
from cluster_assets.spec.definition import ClusterDefinition
from cluster_assets.spec.reading import DefinitionReadError, parse_text, read_bounded_text


class DefinitionError(ValueError):
    """One problem in one definition file: ``<file>: <field>: <message>``."""

    def __init__(self, path: str | Path, field: str | None, message: str):
        self.path = str(path)
        self.field = field
        self.message = message
        super().__init__(f"{self.path}: {field}: {message}" if field else f"{self.path}: {message}")


@dataclass(frozen=True)
class LoadedDefinition:
    path: Path
    spec: ClusterDefinition


def _field_of(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc", ()) if not str(p).startswith(("function-", "tagged-union"))]
    # Drop the discriminated-union tag pydantic inserts ("triggers.0.cron.cron" -> "triggers.0.cron").
    cleaned: list[str] = []
    for i, part in enumerate(loc):
        if i > 1 and part in ("cron", "interval", "event") and loc[i - 1].isdigit() and loc[0] == "triggers":
            continue
        cleaned.append(part)
    return ".".join(cleaned)


def _message_of(error: dict[str, Any]) -> str:
    message = error.get("msg", "invalid")
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if error.get("type") == "extra_forbidden":
        message = "unknown field"
    return message


def parse_definition(data: Any, path: str | Path = "<definition>") -> ClusterDefinition:
    """Validate one definition body; raise ``DefinitionError`` naming the file and the first bad field."""
    errors = definition_problems(data, path)
    if errors:
        raise errors[0]
    return ClusterDefinition.model_validate(data)


def definition_problems(data: Any, path: str | Path) -> list[DefinitionError]:
    if not isinstance(data, dict):
        return [DefinitionError(path, None, f"a definition is a mapping of fields, got {type(data).__name__}")]
    try:
        ClusterDefinition.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = _field_of(error)
            message = _message_of(error)
            if not field and re.match(r"^[a-z_][\w.]*: ", message):
                # model-level checks name their field as "<field>: <message>"
                field, message = message.split(": ", 1)
            problems.append(DefinitionError(path, field or None, message))
        return problems
    return []


def read_definition_file(path: Path) -> Any:
    try:
        return parse_text(read_bounded_text(path), path.suffix)
    except DefinitionReadError as exc:
        raise DefinitionError(path, None, str(exc)) from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DefinitionError(path, None, f"cannot parse {path.suffix[1:].upper()}: {exc}") from None


def load_definition_file(path: Path) -> ClusterDefinition:
    return parse_definition(read_definition_file(path), path)


def definition_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.suffix in DEFINITION_SUFFIXES and not p.name.startswith("."))


def load_definitions(folder: Path, storage: Any = None) -> tuple[list[LoadedDefinition], list[DefinitionError]]:
    """Every valid definition in ``folder`` and one error per problem in the others.

    One broken file never stops the others from loading; a second file with the
    same ``cluster_name`` is refused, naming both files. Definitions whose enrichment
    targets clash are refused too (``enrichment_target_problems``; ``storage``, a
    ``cluster_assets.storage.Storage``, tells a chain from an overwrite).
    """
    loaded: list[LoadedDefinition] = []
    problems: list[DefinitionError] = []
    if not folder.exists():
        return loaded, [DefinitionError(folder, None, "definitions folder does not exist")]
    seen: dict[str, Path] = {}
    for path in definition_files(folder):
        try:
            data = read_definition_file(path)
        except (DefinitionError, OSError, UnicodeDecodeError) as exc:
            problems.append(exc if isinstance(exc, DefinitionError) else DefinitionError(path, None, str(exc)))
            continue
        errors = definition_problems(data, path)
        if errors:
            problems.extend(errors)
            continue
        spec = ClusterDefinition.model_validate(data)
        if spec.cluster_name in seen or spec.group_name in {s.group_name for s in (d.spec for d in loaded)}:
            other = seen.get(spec.cluster_name) or next(d.path for d in loaded if d.spec.group_name == spec.group_name)
            problems.append(DefinitionError(path, "cluster_name", f"{spec.cluster_name!r} is already defined in {other}"))
            continue
        seen[spec.cluster_name] = path
        loaded.append(LoadedDefinition(path, spec))
    loaded, clashes = enrichment_target_problems(loaded, storage)
    return loaded, problems + clashes


def enrichment_target_problems(loaded: list[LoadedDefinition], storage: Any = None
                               ) -> tuple[list[LoadedDefinition], list[DefinitionError]]:
    """The definitions kept, and one error per definition whose enrichment target another one relies on.

    - One target named by several definitions: all of them are refused (a collection has one writer).
    - A target that is another definition's source: the writer is refused when ``storage`` shows the
      collection exists and is not the writer's own output. A collection the writer owns, or one not
      written yet, is a chain (another definition reading its enriched output): allowed. Without
      ``storage`` this is left to the run, which refuses a target it does not own.
    """
    writers: dict[str, list[LoadedDefinition]] = {}
    readers: dict[str, list[LoadedDefinition]] = {}
    for item in loaded:
        for target in dict.fromkeys(item.spec.target_collection_ids().values()):
            writers.setdefault(target, []).append(item)
        for source in item.spec.source_collection_ids:
            readers.setdefault(source, []).append(item)
    field = "enrichment.target_collection_id"
    problems: list[DefinitionError] = []
    refused: set[str] = set()
    for target, items in writers.items():
        if len(items) < 2:
            continue
        for item in items:
            others = ", ".join(f"{o.spec.cluster_name!r} ({o.path})" for o in items if o is not item)
            problems.append(DefinitionError(item.path, field, (
                f"definition {item.spec.cluster_name!r} writes enrichment target collection {target!r}, "
                f"as does definition {others}: a collection has one writer, so every definition naming it is refused; "
                "give each definition its own target_collection_id")))
            refused.add(item.spec.cluster_name)
    for target, items in writers.items():
        for item in items:
            others = [r for r in readers.get(target, []) if r is not item]
            if item.spec.cluster_name in refused or not others or storage is None:
                continue
            from cluster_assets import ownership

            try:
                state = ownership.target_state(storage, target)
            except ownership.OwnershipError:
                state = ""
            except OSError:
                continue
            if state is None or state == item.spec.cluster_name:
                continue
            whose = f"the output of definition {state!r}" if state else "a collection it did not write"
            problems.append(DefinitionError(item.path, field, (
                f"definition {item.spec.cluster_name!r} would overwrite collection {target!r}: it is a source of "
                f"definition {others[0].spec.cluster_name!r} ({others[0].path}) and {whose}; "
                "choose another target_collection_id")))
            refused.add(item.spec.cluster_name)
    return [item for item in loaded if item.spec.cluster_name not in refused], problems
