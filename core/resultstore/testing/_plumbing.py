"""What every conformance test stands on: the knobs, the backends, fresh ids."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pytest

from .. import AsyncResult, Backend, Capability


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting until {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class Plumbing:
    """The knobs and fixtures of :class:`BackendTests` (documented there)."""

    url: ClassVar[str] = ""
    settings: ClassVar[Mapping[str, Any]] = {}
    short_ttl: ClassVar[float] = 1.0
    wake_bound: ClassVar[float] = 1.0
    wait_timeout: ClassVar[float] = 10.0
    reconnect_bound: ClassVar[float] = 5.0
    expiry_grace: ClassVar[float] = 5.0
    keeps_group_ids: ClassVar[bool] = True

    def make_backend(self, **overrides: Any) -> Backend:
        if not self.url:
            raise NotImplementedError("set 'url' on the test class or override make_backend()")
        return Backend(self.url, **{**self.settings, **overrides})

    def let_time_pass(self, seconds: float) -> None:
        time.sleep(seconds)

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        with self.make_backend() as backend:
            yield backend

    @pytest.fixture
    def other(self) -> Iterator[Backend]:
        """A second Backend on the same URL: the other process's view of the store."""
        with self.make_backend() as backend:
            yield backend

    @pytest.fixture
    def restart_server(self) -> Callable[[], None] | None:
        """Override to return a callable that restarts the engine's server (or cuts every
        connection to it) and returns once the server answers again; ``None``: no such tests."""
        return None

    @pytest.fixture
    def task_id(self) -> str:
        return self.new_id()

    @staticmethod
    def new_id() -> str:
        return f"conformance-{uuid.uuid4().hex}"

    @staticmethod
    def require(backend: Backend, capability: Capability) -> None:
        if capability not in backend.capabilities:
            pytest.skip(f"the plugin does not declare capability {capability.value!r}")

    @staticmethod
    def require_shared(backend: Backend) -> None:
        if backend.process_local:
            pytest.skip("the plugin keeps results inside one process")
        if not hasattr(os, "fork"):
            pytest.skip("the cross-process tests fork, and this platform cannot")

    def wait_until_waiting(self, backend: Backend, task_ids: set[str]) -> None:
        wait_until(
            lambda: task_ids <= backend.waiting_ids(), 5.0, f"a waiter is blocked on {task_ids}"
        )


class BlockedWait:
    """A thread blocked in ``get()``; ``result()`` joins it and returns what it got, and
    ``seen`` lists the states it saw on the way.

    ``timeout=None`` waits without a deadline, so only a wake-up can end it (never
    the read at the deadline); the backend's ``close()`` releases it otherwise.
    """

    def __init__(self, backend: Backend, task_id: str, timeout: float | None) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.returned_at = 0.0
        self.seen: list[str] = []
        self._timeout = timeout
        self._thread = threading.Thread(target=self._wait, args=(backend, task_id), daemon=True)
        self._thread.start()

    def _wait(self, backend: Backend, task_id: str) -> None:
        try:
            self.value = AsyncResult(task_id, backend).get(
                timeout=self._timeout, on_message=lambda meta: self.seen.append(meta.status)
            )
        except BaseException as exc:
            self.error = exc
        finally:
            self.returned_at = time.monotonic()

    def joined(self, within: float) -> bool:
        """Whether the wait returned within ``within`` seconds from now."""
        self._thread.join(within)
        return not self._thread.is_alive()

    def result(self) -> Any:
        """What the wait got (or raise what it raised); it must return within its timeout."""
        bound = (self._timeout or 0.0) + 5
        if not self.joined(bound):
            pytest.fail(f"a wait was still blocked {bound} s later")
        if self.error is not None:
            raise self.error
        return self.value
