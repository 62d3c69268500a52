from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


@dataclass
class StageResult:
    """What a stage did, as plain values: counts, timings, paths, small tables."""

    metadata: dict[str, Any] = field(default_factory=dict)
    row_count: int | None = None
    uri: str | None = None
    # kind hints for the Dagster layer: which metadata entries are paths, JSON, Markdown
    paths: dict[str, str] = field(default_factory=dict)
    markdown: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # per-file stages: each file's own figures (<collection_id>/<file name> -> metadata)
    per_partition: dict[str, dict[str, Any]] = field(default_factory=dict)
    # done by the runner once the stage's checks pass (labels: make the fit current)
    commit: Callable[[], None] | None = None


@contextmanager
def timed(result: StageResult, name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    result.metadata[name] = round(time.perf_counter() - start, 3)
