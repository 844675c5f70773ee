"""The conformance tests of what task systems build on: watches, raw groups and counters.

Mixed into :class:`BackendTests`. The counter is proved the way a chord uses it:
many increments at once, from threads and from two processes, each getting a value
of its own, none lost.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .. import STARTED, SUCCESS, Backend, Capability, GroupMeta, TaskMeta
from ._plumbing import Plumbing, wait_until

# Increments each of two processes makes at once (and each of several threads).
COUNTS = 200
# Spare counters the expiry test may delete while it looks (one per look, and a look
# every 50 ms at most, within its expiry grace).
EXPIRY_PROBES = 150


class HostTests(Plumbing):
    """Watches, raw groups and counters."""

    # --- watches -----------------------------------------------------------------------

    def test_a_watch_hears_every_store_of_its_ids(self, backend: Backend, other: Backend) -> None:
        heard: queue.Queue[tuple[str, TaskMeta | None]] = queue.Queue()
        task_id, later = self.new_id(), self.new_id()
        with backend.watch(lambda t, meta: heard.put((t, meta))) as watch:
            watch.add([task_id])
            assert backend.waiting_ids() >= {task_id}
            other.mark_as_started(task_id)
            self._hears(backend, heard, task_id, STARTED)
            other.mark_as_done(task_id, 1)
            self._hears(backend, heard, task_id, SUCCESS)
            # Discarded: its stores are no longer heard, those of a newer id are.
            watch.discard([task_id])
            watch.add([later])
            other.store_result(task_id, 2, SUCCESS, overwrite=True)
            other.mark_as_done(later, 3)
            self._hears(backend, heard, later, SUCCESS)
            assert watch.watched == {later}
        assert backend.waiting_ids() == frozenset()

    def _hears(
        self,
        backend: Backend,
        heard: queue.Queue[tuple[str, TaskMeta | None]],
        task_id: str,
        state: str,
    ) -> None:
        """Take news until one shows ``task_id`` in ``state`` (read when it came without a
        meta: a channel may also send such a re-check of its own); news of another id fails."""
        deadline = time.monotonic() + self.wake_bound
        while (left := deadline - time.monotonic()) > 0:
            try:
                got, meta = heard.get(timeout=left)
            except queue.Empty:
                break
            assert got == task_id, f"news of {got!r}, which is not watched"
            if (meta or backend.get_task_meta(task_id)).status == state:
                return
        pytest.fail(f"no news of {task_id!r} in {state} within {self.wake_bound} s of its store")

    def test_a_failing_watch_callback_harms_no_other_wait(
        self, backend: Backend, other: Backend
    ) -> None:
        def explode(task_id: str, meta: TaskMeta | None) -> None:
            raise RuntimeError("the host's bug")

        watched, waited = self.new_id(), self.new_id()
        with backend.watch(explode) as watch:
            watch.add([watched])
            other.mark_as_done(watched, 1)
            result = threading.Thread(target=other.mark_as_done, args=(waited, 2))
            result.start()
            assert backend.wait_for(waited, timeout=self.wake_bound * 10).result == 2
            result.join()

    def test_closing_the_backend_ends_its_watches(self) -> None:
        backend = self.make_backend()
        watch = backend.watch(lambda t, m: None)
        watch.add([self.new_id()])
        backend.close()
        assert watch.watched == frozenset()
        with pytest.raises(ValueError, match=r"is closed$"):
            watch.add([self.new_id()])

    # --- raw groups ---------------------------------------------------------------------

    def test_a_groups_raw_meta_round_trips(self, backend: Backend, other: Backend) -> None:
        self.require(backend, Capability.GROUPS)
        group_id, a, b = self.new_id(), self.new_id(), self.new_id()
        # Celery's GroupResult.as_tuple(): ((id, parent), [((id, parent), None), ...]).
        as_tuple = ((group_id, None), [((a, None), None), ((b, None), None)])
        backend.save_group_meta(GroupMeta(group_id, as_tuple))
        stored = other.get_group_meta(group_id)
        assert stored is not None
        assert stored.group_id == group_id
        assert _lists(stored.result) == _lists(as_tuple)
        assert [r.id for r in other.restore_group(group_id) or ()] == [a, b]
        assert other.delete_group(group_id) is True
        assert backend.get_group_meta(group_id) is None

    # --- counters -------------------------------------------------------------------------

    @pytest.fixture
    def counter(self, backend: Backend) -> Iterator[str]:
        self.require(backend, Capability.COUNTER)
        name = self.new_id()
        yield name
        backend.forget_counter(name)

    def test_a_counter_counts(self, backend: Backend, other: Backend, counter: str) -> None:
        assert [backend.incr(counter) for _ in range(3)] == [1, 2, 3]
        assert other.incr(counter, 5) == 8
        assert backend.incr(counter, -2) == 6
        assert other.incr(counter, 0) == 6
        assert backend.forget_counter(counter) is True
        assert backend.forget_counter(counter) is False
        assert other.incr(counter) == 1

    def test_a_counter_expires(self, backend: Backend, counter: str) -> None:
        # No read leaves a counter's expiry alone (an increment restarts it), so the test
        # looks at spare counters set alongside: each look deletes one that is still
        # there, until one is found gone.
        spares = [self.new_id() for _ in range(EXPIRY_PROBES)]
        for name in [counter, *spares]:
            assert backend.incr(name, expires=self.short_ttl) == 1
        keep = self.new_id()
        assert backend.incr(keep, expires=None) == 1
        self.let_time_pass(self.short_ttl)
        looks = iter(spares)
        wait_until(
            lambda: backend.forget_counter(next(looks)) is False,
            self.expiry_grace,
            "a counter expired",
        )
        assert backend.incr(counter, expires=self.short_ttl) == 1  # gone, so counted anew
        assert backend.incr(keep, expires=None) == 2
        for name in [keep, *looks]:
            backend.forget_counter(name)

    def test_a_counter_gives_each_thread_its_own_value(
        self, backend: Backend, other: Backend, counter: str
    ) -> None:
        def count(side: Backend) -> list[int]:
            return [side.incr(counter) for _ in range(COUNTS // 4)]

        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(count, [backend, other, backend, other]))
        values = sorted(v for run in runs for v in run)
        assert values == list(range(1, COUNTS + 1))  # none twice, none lost

    def test_a_counter_gives_each_process_its_own_value(
        self, backend: Backend, counter: str
    ) -> None:
        if backend.process_local:
            pytest.skip("the plugin keeps results inside one process")
        context = multiprocessing.get_context("spawn")
        start = context.Event()
        results: Any = context.Queue()
        processes = [
            context.Process(
                target=_count_in_process, args=(backend.arguments, counter, start, results)
            )
            for _ in range(2)
        ]
        for process in processes:
            process.start()
        try:
            start.set()  # both increment at once (each opened its backend first)
            runs = [results.get(timeout=120) for _ in processes]
        finally:
            for process in processes:
                process.join(30)
                if process.is_alive():
                    process.kill()
        errors = [run for run in runs if isinstance(run, str)]
        assert errors == []
        values = sorted(v for run in runs for v in run)
        assert values == list(range(1, 2 * COUNTS + 1))  # none twice, none lost


def _count_in_process(arguments: Mapping[str, Any], name: str, start: Any, results: Any) -> None:
    """In a spawned process: open the same backend, then increment as soon as told."""
    try:
        with Backend(**arguments) as backend:
            backend.incr(name, 0)  # connected before the start, so both race for real
            start.wait(60)
            results.put([backend.incr(name) for _ in range(COUNTS)])
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def _lists(value: object) -> object:
    """Tuples as lists: serializers such as json keep no tuples."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value
