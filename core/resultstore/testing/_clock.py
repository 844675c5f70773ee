from __future__ import annotations

import threading
import time


class FakeClock:
    """A ``time.time``-like clock that only moves when told to.

    Pass it to a plugin that takes a clock option (``memory://`` does:
    ``Backend("memory://x", options={"clock": clock})``) to test expiry without
    waiting.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got {seconds!r}")
        with self._lock:
            self._now += seconds
