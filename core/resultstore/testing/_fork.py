"""The conformance test of fork: a prefork worker's child uses a backend its parent opened.

The parent uses the backend first (a store, a wait: its connections and threads
exist), then forks while one of its threads is waiting. The child stores, reads
and waits by push within the usual bounds while the parent goes on working; when
the child has exited, the parent's waiter still gets its result over the parent's
own channel. The core gives the child a fresh plugin, so a plugin passes with no
fork code of its own.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings

import pytest

from .. import Backend
from ._plumbing import BlockedWait, Plumbing

# What the child checks, in order; its exit code is the number of the first that failed.
CHILD_CHECKS = (
    "the child could not store and read back a result",
    "the child's wait was not woken within wake_bound of the child's store",
    "the child could not read a result the parent stored before the fork",
    "the child raised",
)


class ForkTests(Plumbing):
    def test_a_forked_child_uses_the_backend_and_leaves_the_parent_alone(
        self, backend: Backend, other: Backend
    ) -> None:
        if not hasattr(os, "fork"):
            pytest.skip("no os.fork on this platform")
        before, waited = self.new_id(), self.new_id()
        other.mark_as_done(before, "before")
        assert backend.wait_for(before, timeout=self.wait_timeout).result == "before"
        parent_wait = BlockedWait(backend, waited, self.wait_timeout * 2)
        self.wait_until_waiting(backend, {waited})
        with warnings.catch_warnings():  # 3.12+ warns about fork with threads: that is the test
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = len(CHILD_CHECKS)
            try:
                code = self._in_child(backend, before)
            except BaseException:
                traceback.print_exc()  # into the test's captured output
            finally:
                os._exit(code)
        try:
            # The parent goes on working while the child runs (at a pace that leaves an
            # engine with one writer at a time, such as SQLite, to the child too).
            deadline = time.monotonic() + self.wait_timeout * 2
            stored = 0
            while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
                assert time.monotonic() < deadline, "the forked child did not exit"
                task_id = self.new_id()
                backend.mark_as_done(task_id, stored)
                assert backend.get_result(task_id) == stored
                stored += 1
                time.sleep(0.01)
            pid = 0
        finally:
            if pid:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(done[1])
        assert code == 0, CHILD_CHECKS[code - 1] if 0 < code <= len(CHILD_CHECKS) else code
        # The child's exit closed nothing of the parent's: its waiter is still served.
        other.mark_as_done(waited, "after the child")
        assert parent_wait.result() == "after the child"

    def _in_child(self, backend: Backend, before: str) -> int:
        mine, woken = self.new_id(), self.new_id()
        backend.mark_as_done(mine, "child")
        if backend.get_result(mine) != "child":
            return 1
        waiter = BlockedWait(backend, woken, self.wait_timeout)
        deadline = time.monotonic() + 5.0
        while woken not in backend.waiting_ids():
            if time.monotonic() > deadline:
                return 2
            time.sleep(0.001)
        stored = time.monotonic()
        backend.mark_as_done(woken, "woken")
        value = waiter.result()
        if value != "woken" or waiter.returned_at - stored > self.wake_bound:
            print(f"child's wait: {value!r} after {waiter.returned_at - stored:.3f} s", flush=True)
            return 2
        if backend.process_local:
            return 0  # a copy of the parent's store: its old results are not the point
        return 0 if backend.get_result(before) == "before" else 3
