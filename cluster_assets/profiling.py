"""Peak resident memory of the process while a block runs, sampled from /proc (Linux)."""

from __future__ import annotations

import resource
import threading
from contextlib import contextmanager
from typing import Iterator


def current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize() / 1e6


@contextmanager
def peak_rss(interval_s: float = 0.05) -> Iterator[dict[str, float]]:
    """Yields a dict filled with ``peak_rss_mb`` (the highest RSS seen during the block) on exit."""
    box: dict[str, float] = {}
    start = current_rss_mb()
    if start is None:  # no /proc: the process-wide high-water mark is the best there is
        yield box
        box["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)
        return
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            value = current_rss_mb()
            if value and value > peak[0]:
                peak[0] = value

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], current_rss_mb() or 0.0)
        box["peak_rss_mb"] = round(peak[0], 1)
