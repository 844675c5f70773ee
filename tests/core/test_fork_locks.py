"""Locks another thread holds when the process forks are free in the child.

A task system forks its workers from a process whose threads (listeners, pollers,
the application's own) may be inside resultstore at that moment. A lock they held
would never be released in the child: every module-level lock is made anew there.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

import resultstore
from resultstore import _kv, _registry
from resultstore_memory import MemoryBackend

from ..threads import DEADLINE


@contextmanager
def held_by_another_thread(*locks: object) -> Iterator[None]:
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)  # type: ignore[arg-type]
            entered.set()
            release.wait(DEADLINE * 2)

    thread = threading.Thread(target=hold)
    thread.start()
    assert entered.wait(DEADLINE)
    try:
        yield
    finally:
        release.set()
        thread.join(DEADLINE)


def in_child(work: object) -> int:
    """Fork; run ``work()`` in the child; its exit code (1 if it raised)."""
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads: that is the test
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + DEADLINE
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child hung on a lock held at fork time")
        time.sleep(0.005)
    return os.waitstatus_to_exitcode(done[1])


def test_core_and_memory_locks_held_at_fork_are_free_in_the_child(store_url: str) -> None:
    with resultstore.Backend(store_url) as backend:
        backend.mark_as_done("before", 1)
        plugin = backend.plugin
        assert isinstance(plugin, MemoryBackend)
        store = plugin._store

        def child() -> None:
            with resultstore.Backend(store_url) as mine:
                assert mine.get_result("before") == 1  # the child's copy of the store
                assert mine.mark_as_done("after", 2) is True
                assert mine.incr("n") == 1
                assert resultstore.AsyncResult("after", mine).get(timeout=5) == 2
            resultstore.resolve("redis://localhost")

        with held_by_another_thread(_registry._lock, *_kv._PROCESS_LOCKS, store.lock):
            assert in_child(child) == 0
