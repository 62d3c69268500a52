"""Run a command in a fresh process and measure its wall time and peak resident memory.

The peak comes from the kernel (``wait4``'s ``ru_maxrss``: the child's high-water
mark, including any processes it waited for), so nothing is sampled or missed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ChildRun:
    wall_s: float
    peak_rss_mb: float
    returncode: int
    timed_out: bool
    log: Path


def run_child(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | Path | None = None,
              timeout_s: float | None = None) -> ChildRun:
    """Run ``cmd`` (stdout and stderr to ``log``); kill its process group after ``timeout_s``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    timed_out = threading.Event()
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout_s, kill) if timeout_s else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer:
                timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(round(wall, 3), round(usage.ru_maxrss / 1024, 1), proc.returncode, timed_out.is_set(), log)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
