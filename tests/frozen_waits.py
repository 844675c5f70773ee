"""Waits against a frozen server, shared by the Redis and the database timeout tests.

Each wait runs in a thread of its own (an async one in an event loop of its own) and
is joined with a deadline, so a regression fails, never hangs. A wait must raise
``resultstore.TimeoutError`` within its timeout and the documented grace, with room
for a loaded machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import resultstore
from resultstore import AsyncResult, Backend, ResultSet

from .threads import DEADLINE, Worker

GRACE = 0.25  # resultstore's documented margin of every timeout
ROOM = 0.5  # what a loaded machine may add on top of a wait's timeout and grace
# ... and on top of the bounds of calls: those prove a bound where there was none (the
# driver's 130 s, or no end at all), with room for a machine loaded by more than the tests.
CALL_ROOM = 1.0
BEFORE = 0.5  # the timeout of waits that begin on a frozen server
DURING = 1.0  # the timeout of waits during which it freezes (time to see them subscribed)
BOUND = 0.5  # the socket/read and connect timeouts of the bounded calls


def _join(backend: Backend, ids: list[str]) -> ResultSet:
    return ResultSet([AsyncResult(t, backend) for t in ids])


SYNC_WAITS: dict[str, Callable[[Backend, list[str], float], Any]] = {
    "get": lambda backend, ids, timeout: AsyncResult(ids[0], backend).get(timeout=timeout),
    "join": lambda backend, ids, timeout: _join(backend, ids).join(timeout=timeout),
    "wait_for": lambda backend, ids, timeout: backend.wait_for(ids[0], timeout=timeout),
}
ASYNC_WAITS: dict[str, Callable[[Backend, list[str], float], Awaitable[Any]]] = {
    "aget": lambda backend, ids, timeout: AsyncResult(ids[0], backend).aget(timeout=timeout),
    "ajoin": lambda backend, ids, timeout: _join(backend, ids).ajoin(timeout=timeout),
}
WAITS = [*SYNC_WAITS, *ASYNC_WAITS]


class Waiting(Worker):
    """One wait in a thread of its own (an async one in an event loop of its own, after a
    first read there when ``warm``: it opens the loop's client or engine). ``began`` and
    ``spent`` are the wait's own, not the thread's or the event loop's."""

    def __init__(self, wait: str, backend: Backend, ids: list[str], timeout: float, warm: bool):
        super().__init__(self._main)
        self.args = (backend, ids, timeout)
        self.wait = wait
        self.warm = warm
        self.began = self.spent = 0.0
        self.start()

    def _main(self) -> Any:
        if self.wait in SYNC_WAITS:
            self.began = time.monotonic()
            try:
                return SYNC_WAITS[self.wait](*self.args)
            finally:
                self.spent = time.monotonic() - self.began
        return asyncio.run(self._amain())

    async def _amain(self) -> Any:
        if self.warm:
            await self.args[0].aget_many(self.args[1])
        self.began = time.monotonic()
        try:
            return await ASYNC_WAITS[self.wait](*self.args)
        finally:
            self.spent = time.monotonic() - self.began


def ids_for(wait: str) -> list[str]:
    return ["Task-1", "Task-2"] if "join" in wait else ["Task-1"]


def timeout_message(ids: list[str], timeout: float, state: str) -> str:
    if len(ids) == 1:
        return f"task {ids[0]!r} was not ready within {timeout:g} s (state {state})"
    return f"{len(ids)} tasks were not ready within {timeout:g} s: " + ", ".join(map(repr, ids))


def assert_timed_out(waiter: Waiting, ids: list[str], timeout: float, state: str) -> None:
    with pytest.raises(resultstore.TimeoutError) as raised:
        waiter.finish(DEADLINE)
    assert str(raised.value) == timeout_message(ids, timeout, state)
    assert timeout <= waiter.spent < timeout + GRACE + ROOM, waiter.spent
