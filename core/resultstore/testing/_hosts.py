"""The conformance tests of what task systems build on: watches, raw groups and counters.

Mixed into :class:`BackendTests`. The counter is proved the way a chord uses it:
many increments at once, from threads and from two processes, each getting a value
of its own, none lost.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from .. import STARTED, SUCCESS, Backend, Capability, GroupMeta, TaskMeta
from ._plumbing import Plumbing, wait_until
from ._processes import race_with_a_child

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
            assert meta is None or meta.task_id == task_id
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
        self.require_shared(backend)

        def count(_stopped: object) -> list[int]:
            return [backend.incr(counter) for _ in range(COUNTS)]

        theirs, mine = race_with_a_child(count, lambda: count(None), self.wait_timeout * 6)
        assert sorted(theirs + mine) == list(range(1, 2 * COUNTS + 1))  # none twice, none lost

    def test_groups_saved_by_another_process_are_read_here(self, backend: Backend) -> None:
        self.require(backend, Capability.GROUPS)
        self.require_shared(backend)
        ours, theirs = [self.new_id() for _ in range(20)], [self.new_id() for _ in range(20)]

        def save(ids: list[str]) -> list[str]:
            for group_id in ids:
                backend.save_group_meta(GroupMeta(group_id, ((group_id, None), [])))
            return ids

        race_with_a_child(lambda _stopped: save(theirs), lambda: save(ours), self.wait_timeout)
        for group_id in ours + theirs:
            meta = backend.get_group_meta(group_id)
            assert meta is not None, f"group {group_id!r} was lost"
            assert _lists(meta.result) == [[group_id, None], []]


def _lists(value: object) -> object:
    """Tuples as lists: serializers such as json keep no tuples."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value
