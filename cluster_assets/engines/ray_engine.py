"""The Ray engine: one Ray task per file, on a local Ray started for the run or a cluster already running.

Only the storage root, the definition, the fit id and the partition key travel with a task
(plus the stage's small shared arguments, put in the object store once per stage). The worker
builds its ``Storage`` from the root with its own credentials and loads the fit through
``load_fit``'s per-process cache, so the model crosses the wire once per worker process, not
once per task. At most ``max_in_flight`` tasks are pending at a time (``ray.wait``), so the
driver holds a bounded number of results whatever the number of files. A worker that dies
mid-task is retried by Ray (``max_retries``); an exception raised by the work itself is not
retried: it names the file and fails the stage once the tasks in flight have finished.

``ray`` is imported only here, and only when a deployment asks for Ray.
"""

from __future__ import annotations

import functools
import logging
import socket
from typing import Any
from urllib.parse import urlparse

from cluster_assets.stages.engine import Engine, FileWorkError, file_error

PROBE_TIMEOUT_S = 5.0
DEFAULT_MAX_RETRIES = 3

# The address this process connected to (None: not connected by us).
_connected: str | None = None


class RayUnavailableError(ConnectionError):
    """The Ray cluster cannot be reached, or Ray is not installed; the message names the address."""


def probe(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail within ``timeout`` when a ``host:port`` address refuses connections.

    Ray itself retries a refused address for 30-60 s before giving up, with an error that
    does not say which setting pointed there.
    """
    if address in ("local", "auto"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise RayUnavailableError(f"CLUSTER_ASSETS_RAY_ADDRESS={address!r} is not a Ray address: expected "
                                  f"'local', 'auto', 'ray://host:port' or 'host:port'")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayUnavailableError(f"Ray cluster at {address} (CLUSTER_ASSETS_RAY_ADDRESS) is unreachable: {reason}; "
                                  f"nothing was run") from None


def connect(address: str, num_cpus: int | None = None) -> None:
    """Connect this process to Ray once: ``local`` starts a Ray of its own, anything else joins a cluster.

    A process already connected (a Ray job's driver, a test session) keeps its connection.
    """
    global _connected
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(f"CLUSTER_ASSETS_RAY_ADDRESS={address!r} asks for Ray, which is not installed: "
                                  f"pip install 'cluster_assets[ray]'") from None
    if ray.is_initialized() and _connected in (None, address):
        return
    probe(address)
    if ray.is_initialized():
        raise RayUnavailableError(f"this process is already connected to Ray at {_connected}, not {address}")
    kwargs: dict[str, Any] = {"address": address, "logging_level": logging.WARNING}
    if address == "local":
        # Explicitly local: a bare ray.init() follows RAY_ADDRESS and may join another cluster.
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    try:
        ray.init(**kwargs)
    except Exception as exc:
        raise RayUnavailableError(f"could not connect to Ray at {address} (CLUSTER_ASSETS_RAY_ADDRESS): "
                                  f"{type(exc).__name__}: {exc}") from None
    _connected = address


@functools.lru_cache(maxsize=4)
def _storage(root: str):
    from cluster_assets.storage import Storage

    return Storage(root)


def run_file(shared: tuple, partition: str) -> Any:
    """The body of a task, on a worker: the same per-file function the in-process engine calls."""
    fn, root, spec, fit_id, kwargs = shared
    return fn(_storage(root), spec, fit_id, partition, **kwargs)


@functools.lru_cache(maxsize=4)
def _remote(max_retries: int):
    import ray

    return ray.remote(num_cpus=1, max_retries=max_retries)(run_file)


class RayEngine(Engine):
    """Each file a Ray task, at most ``max_in_flight`` pending (default: twice the cluster's CPUs)."""

    name = "ray"

    def __init__(self, max_in_flight: int | None = None, max_retries: int = DEFAULT_MAX_RETRIES):
        super().__init__()
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries

    def map(self, fn, storage, spec, fit_id, partitions, **kwargs):
        import ray

        if not partitions:
            return []
        task = _remote(self.max_retries)
        shared = ray.put((fn, storage.root, spec, fit_id, kwargs))
        limit = self.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        results: list[Any] = [None] * len(partitions)
        waiting = iter(enumerate(partitions))
        pending: dict[Any, int] = {}
        failure: BaseException | None = None

        def submit() -> None:
            while len(pending) < limit:
                item = next(waiting, None)
                if item is None:
                    return
                pending[task.remote(shared, item[1])] = item[0]
                self.tasks += 1

        submit()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    failure = failure or file_error(partitions[i], exc.cause or exc)
                except ray.exceptions.RayError as exc:  # the worker died more often than max_retries, ...
                    failure = failure or file_error(partitions[i], exc)
            if failure is None:
                submit()
        if failure is not None:
            raise failure
        return results


__all__ = ["FileWorkError", "RayEngine", "RayUnavailableError", "connect", "probe"]
