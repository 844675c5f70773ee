"""Thread helpers shared by the waiting, leak and fault tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

DEADLINE = 10.0  # how long any step may take before the test fails (never reached when green)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.001)


class Worker(threading.Thread):
    """Runs ``fn`` in a thread, keeping its value or exception and when it started/returned."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.value: Any = None
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.returned_at = 0.0

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            self.value = self.fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.returned_at = time.monotonic()

    @property
    def elapsed(self) -> float:
        """Seconds ``fn`` ran."""
        return self.returned_at - self.started_at

    def finish(self, timeout: float = DEADLINE) -> Any:
        """Join; re-raise what ``fn`` raised, else return its value."""
        self.join(timeout)
        assert not self.is_alive(), "the worker thread did not finish"
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.value
