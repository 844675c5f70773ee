"""Task functions for the process pool: module-level, so workers import them by name."""

from __future__ import annotations

import os
import time

import resultstore


def add(a: int, b: int = 0) -> int:
    return a + b


def divide(a: int, b: int) -> float:
    return a / b


def pid() -> int:
    return os.getpid()


def progress(steps: int) -> int:
    run = resultstore.current_run()
    assert run is not None
    for step in range(1, steps + 1):
        run.update_state("PROGRESS", {"step": step})
    return steps


def until_revoked(timeout: float) -> str:
    """Loop between steps of work until a client revokes the task."""
    run = resultstore.current_run()
    assert run is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.raise_if_revoked()
        time.sleep(0.005)
    return "never revoked"


def kill_self(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(10)  # SIGTERM raises SystemExit here; SIGKILL never returns
