"""Where the per-file work runs: the engine the per-file stages take their loop from.

A per-file function has the signature ``fn(storage, spec, fit_id, partition, **kwargs)`` and
reads its file straight from storage, so it is the unit of work any engine can run. In-process,
``map`` is a plain loop; the Ray engine (``cluster_assets.engines.ray_engine``) runs one Ray task
per file with the same function on the workers. Either way the results come back in the order
of ``partitions``, and a file that fails is named by its collection and file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.storage import Storage

PerFile = Callable[..., Any]


class FileWorkError(RuntimeError):
    """One file's work failed; the message names the collection and the file."""


def file_error(partition: str, exc: BaseException) -> BaseException:
    """``exc`` if it already names the file, else a ``FileWorkError`` that does."""
    collection_id, file_name = layout.split_partition(partition)
    message = str(exc)
    if file_name in message and collection_id in message:
        return exc
    return FileWorkError(f"collection {collection_id!r}, file {file_name}: {type(exc).__name__}: {message}")


class Engine:
    """Runs a per-file function over files; counts what it dispatched (``describe`` for the metadata)."""

    name = "in_process"

    def __init__(self) -> None:
        self.tasks = 0  # tasks sent to another process (0 in-process)

    def map(self, fn: PerFile, storage: Storage, spec: ClusterDefinition, fit_id: str, partitions: list[str],
            **kwargs: Any) -> list[Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "ray_tasks": self.tasks}


class InProcessEngine(Engine):
    """The default: every file in this process, one after the other."""

    def map(self, fn, storage, spec, fit_id, partitions, **kwargs):
        results = []
        for partition in partitions:
            try:
                results.append(fn(storage, spec, fit_id, partition, **kwargs))
            except Exception as exc:
                error = file_error(partition, exc)
                if error is exc:
                    raise
                raise error from exc
        return results
