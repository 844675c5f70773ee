"""The core's shared poller: every wait on a plugin without push, through one thread.

The plugin is a sync-only dict without push; a wrapper plugin records every read
the backend makes, with the thread that made it, so the tests can tell the
poller's rounds from the waits' own reads. Nothing sleeps to let another thread
"get there": waits are known to be blocked from ``waiting_ids()``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import pickle
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import pytest

import resultstore
from resultstore import (
    STARTED,
    SUCCESS,
    AsyncResult,
    Backend,
    BackendUnavailable,
    Capability,
    TaskMeta,
)
from resultstore._polling import POLL_INTERVAL

from ..doubles import BytesPlugin, DictPlugin, bytes_plugin
from ..threads import DEADLINE, Worker, wait_until

SCHEME = "dictmany"


class DictManyPlugin(DictPlugin):
    """DictPlugin with a many-id read, and still no push."""

    capabilities = frozenset({"ttl", "get_many"})

    @resultstore.hookimpl
    def get_many(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        return {t: self.data[t] for t in task_ids if t in self.data}


class Reads:
    """A wrapper recording each read as (thread name, ids); get_many can be made to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.failing = False
        self.read = threading.Event()  # set at every read

    def by(self, thread_name: str) -> list[tuple[str, ...]]:
        return [ids for name, ids in list(self.calls) if name == thread_name]

    def _record(self, ids: tuple[str, ...]) -> None:
        self.calls.append((threading.current_thread().name, ids))
        self.read.set()

    @resultstore.hookimpl(wrapper=True)
    def get(self, task_id: str) -> Any:
        self._record((task_id,))
        return self._unless_failing((yield))

    @resultstore.hookimpl(wrapper=True)
    def get_many(self, task_ids: Sequence[str]) -> Any:
        self._record(tuple(task_ids))
        return self._unless_failing((yield))

    def _unless_failing(self, found: Any) -> Any:
        if self.failing:
            raise BackendUnavailable("the store is down")
        return found


@pytest.fixture
def reads() -> Reads:
    return Reads()


@pytest.fixture
def backend(reads: Reads) -> Iterator[Backend]:
    resultstore.register_backend(SCHEME, DictManyPlugin)
    try:
        with Backend(f"{SCHEME}://{uuid.uuid4().hex}", plugins=[reads]) as b:
            yield b
    finally:
        resultstore.unregister_backend(SCHEME)


def poller_name(backend: Backend) -> str:
    return f"resultstore-poll {backend.url.masked}"


def pollers(backend: Backend) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == poller_name(backend)]


def test_two_hundred_threads_share_one_poller(backend: Backend, reads: Reads) -> None:
    assert Capability.PUSH not in backend.capabilities
    ids = [f"t{i}" for i in range(200)]
    workers = [Worker(partial(AsyncResult(t, backend).get, timeout=DEADLINE)) for t in ids]
    for worker in workers:
        worker.start()
    wait_until(lambda: backend.waiting_ids() == set(ids), "200 waits are blocked")
    assert len(pollers(backend)) == 1
    name = poller_name(backend)
    wait_until(  # in any order: the poller keeps the waited ids in a set
        lambda: any(set(read) == set(ids) for read in reads.by(name)),
        "a round reads all 200 ids in one call",
    )
    for i, task_id in enumerate(ids):
        backend.mark_as_done(task_id, i)
    assert [worker.finish() for worker in workers] == list(range(200))
    # One reader: each wait reads its id twice (before and after it subscribes), then
    # only the poller reads, each waited id at most once per round (one get_many, or a
    # get for the last one left). How many rounds ran is the scheduler's business: on a
    # loaded machine the stores take longer and the poller reads more often meanwhile.
    rounds = reads.by(name)
    print(f"\n200 waits, 200 stores: {len(rounds)} poller reads")
    assert all(len(set(r)) == len(r) and set(r) <= set(ids) for r in rounds)
    others = [read for thread, read in reads.calls if thread != name]
    assert sorted(others) == sorted([(t,) for t in ids] * 2)
    assert backend.waiting_ids() == frozenset()
    assert len(pollers(backend)) == 1
    # Nothing waited on: the poller sleeps without reading. One round begun as the
    # last wait ended may still read; after that, several intervals without a read.
    wait_until(lambda: reads_stopped(reads), "the poller stops reading")


def reads_stopped(reads: Reads) -> bool:
    reads.read.clear()
    return not reads.read.wait(3 * POLL_INTERVAL)


def test_progress_reaches_on_message_in_order(backend: Backend) -> None:
    seen: list[tuple[str, Any]] = []
    worker = Worker(
        partial(
            AsyncResult("t", backend).get,
            timeout=DEADLINE,
            on_message=lambda meta: seen.append((meta.status, meta.result)),
        )
    )
    worker.start()
    wait_until(lambda: backend.waiting_ids() == {"t"}, "the wait is blocked")
    states = [(STARTED, {}), *(("PROGRESS", {"step": step}) for step in range(3))]
    for n, (state, result) in enumerate(states, 1):
        backend.store_result("t", result, state)
        wait_until(lambda n=n: len(seen) == n, f"{state} {result} is seen")
    backend.mark_as_done("t", "done")
    assert worker.finish() == "done"
    assert seen == [*states, (SUCCESS, "done")]


def test_a_read_error_in_the_poller_is_logged_and_the_wait_outlives_it(
    backend: Backend, reads: Reads, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resultstore")
    name = poller_name(backend)
    worker = Worker(partial(AsyncResult("t", backend).get, timeout=DEADLINE))
    worker.start()
    # The wait's own two reads (before and after subscribing) are done: from here
    # on only the poller reads, until the deadline.
    wait_until(
        lambda: [ids for thread, ids in reads.calls if thread != name] == [("t",), ("t",)],
        "the wait is blocked",
    )
    reads.failing = True
    backend.store_result("t", 1, STARTED)  # stored, but no read can see it
    failed = len(reads.by(name))
    wait_until(lambda: len(reads.by(name)) > failed + 1, "two more poller reads failed")
    assert worker.is_alive()
    backend.mark_as_done("t", "after the outage")
    reads.failing = False
    assert worker.finish() == "after the outage"
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.WARNING, f"polling for {name} failed; retrying"),
        (logging.WARNING, f"polling for {name} works again"),
    ]
    assert caplog.records[0].exc_info is not None
    assert caplog.records[0].exc_info[0] is BackendUnavailable


def test_close_releases_a_polled_wait(backend: Backend) -> None:
    worker = Worker(partial(AsyncResult("t", backend).get, timeout=DEADLINE))
    worker.start()
    wait_until(lambda: backend.waiting_ids() == {"t"}, "the wait is blocked")
    backend.close()
    with pytest.raises(resultstore.ResultStoreError) as raised:
        worker.finish()
    assert str(raised.value) == f"{backend!r} was closed while waiting for ['t']"
    assert pollers(backend) == []


def test_an_await_wakes_through_the_same_poller(backend: Backend, reads: Reads) -> None:
    name = poller_name(backend)

    async def main() -> Any:
        thread_wait = Worker(partial(AsyncResult("a", backend).get, timeout=DEADLINE))
        thread_wait.start()
        waiting = asyncio.ensure_future(AsyncResult("b", backend).aget(timeout=DEADLINE))
        while backend.waiting_ids() != {"a", "b"}:  # bounded: see wait_for below
            await asyncio.sleep(0.001)
        assert len(pollers(backend)) == 1
        while ("a", "b") not in reads.by(name) and ("b", "a") not in reads.by(name):
            await asyncio.sleep(0.001)
        backend.mark_as_done("b", "awaited")
        backend.mark_as_done("a", "threaded")
        return await waiting, thread_wait.finish()

    assert asyncio.run(asyncio.wait_for(main(), DEADLINE)) == ("awaited", "threaded")
    # Woken by the poller: the await itself read "b" only before and after subscribing.
    assert sum(1 for thread, ids in reads.calls if thread != name and ids == ("b",)) == 2
    assert backend.waiting_ids() == frozenset()


def test_a_backend_dropped_without_close_is_collected_and_its_poller_ends() -> None:
    resultstore.register_backend(SCHEME, DictManyPlugin)
    try:
        backend = Backend(f"{SCHEME}://{uuid.uuid4().hex}")
        with (
            backend.iter_ready(["never"], timeout=0.01) as ready,
            pytest.raises(resultstore.TimeoutError),
        ):
            next(ready)
        name = poller_name(backend)
        assert len(pollers(backend)) == 1
        collected = weakref.ref(backend)
        del backend, ready
        gc.collect()
        assert collected() is None, gc.get_referrers(collected())
        wait_until(lambda: name not in {t.name for t in threading.enumerate()}, "the poller ends")
    finally:
        resultstore.unregister_backend(SCHEME)


def test_new_waits_do_not_make_old_ones_poll_fast(backend: Backend, reads: Reads) -> None:
    """Waits keep arriving: each new id is read soon, the ones waiting longer than
    POLL_INTERVAL still only once per interval (before, every subscribe reset them)."""
    name = poller_name(backend)
    old = Worker(partial(AsyncResult("old", backend).get, timeout=DEADLINE))
    old.start()
    wait_until(lambda: backend.waiting_ids() == {"old"}, "the old wait is blocked")
    stop = threading.Event()

    def arrive() -> None:  # a new wait every 5 ms: the pacing is the point of the test
        n = 0
        while not stop.wait(0.005):
            n += 1
            Worker(partial(AsyncResult(f"new-{n}", backend).get, timeout=0.5)).start()

    # Time passing is the condition here: the old wait must be older than an interval.
    threading.Event().wait(1.5 * POLL_INTERVAL)
    before = reads_of(reads, name, "old")
    arrivals = threading.Thread(target=arrive)
    arrivals.start()
    window = 5 * POLL_INTERVAL
    stop.wait(window)
    stop.set()
    arrivals.join()
    old_reads = reads_of(reads, name, "old") - before
    assert old_reads <= window / POLL_INTERVAL + 2, old_reads
    backend.mark_as_done("old", "done")
    assert old.finish() == "done"


def reads_of(reads: Reads, thread_name: str, task_id: str) -> int:
    return sum(task_id in ids for ids in reads.by(thread_name))


# --- one record nobody can decode ----------------------------------------------------------


@pytest.fixture
def bytes_backend() -> Iterator[Backend]:
    with bytes_plugin() as b:
        yield b


PICKLED = pickle.dumps({"status": "SUCCESS", "result": 1})


@pytest.mark.parametrize("deadline", [DEADLINE, None], ids=["with-timeout", "without"])
def test_one_undecodable_record_fails_its_own_wait_and_no_other(
    bytes_backend: Backend, deadline: float | None
) -> None:
    bytes_backend.mark_as_started("bad")
    good = Worker(partial(AsyncResult("good", bytes_backend).get, timeout=deadline))
    bad = Worker(partial(AsyncResult("bad", bytes_backend).get, timeout=deadline))
    good.start()
    bad.start()
    wait_until(lambda: bytes_backend.waiting_ids() == {"good", "bad"}, "both waits are blocked")
    # Pickle where only json is accepted: every read of "bad" fails to decode.
    BytesPlugin.data["celery-task-meta-bad"] = PICKLED
    with pytest.raises(resultstore.DecodeError, match="pickle data and 'pickle' is not in"):
        bad.finish()
    assert bad.elapsed < DEADLINE / 2
    bytes_backend.mark_as_done("good", "fine")
    assert good.finish() == "fine"
    assert good.returned_at - bad.returned_at < DEADLINE / 2
    assert bytes_backend.waiting_ids() == frozenset()
