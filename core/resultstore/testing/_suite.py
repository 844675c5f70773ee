"""The conformance suite: what every storage plugin must do, checked against a real backend."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone
from importlib.metadata import entry_points
from typing import Any

import pytest

from .. import (
    FAILURE,
    PENDING,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
    AsyncResult,
    Backend,
    Capability,
    DecodeError,
    EncodeError,
    GroupResult,
    RemoteError,
    RemoteTraceback,
    ResultSet,
    TaskInfo,
    TaskRevokedError,
    TimeoutError,
    hookimpl,
    resolve,
)
from .._registry import GROUP
from ._fork import ForkTests
from ._hosts import HostTests
from ._listing import ListingTests
from ._plumbing import wait_until
from ._processes import race_with_a_child
from ._restart import RestartTests

# Ids one process finishes while another keeps writing a late STARTED to them.
RACED_IDS = 300


class ConformanceError(Exception):
    """An exception class the backend under test has never been allowed to rebuild."""


async def await_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """:func:`wait_until` for coroutines: checks between turns of the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting until {what}")
        await asyncio.sleep(0.001)


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a test's coroutine in a fresh event loop (no pytest-asyncio needed)."""
    return asyncio.run(coro)


class SyncHookCalls:
    """A wrapper that counts the storage hooks' blocking calls (async twins must not make any)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _count(self, name: str) -> Generator[None, Any, Any]:
        self.calls.append(name)
        return (yield)

    @hookimpl(wrapper=True)
    def store_result(self) -> Generator[None, Any, Any]:
        return (yield from self._count("store_result"))

    @hookimpl(wrapper=True)
    def get(self) -> Generator[None, Any, Any]:
        return (yield from self._count("get"))

    @hookimpl(wrapper=True)
    def get_many(self) -> Generator[None, Any, Any]:
        return (yield from self._count("get_many"))

    @hookimpl(wrapper=True)
    def forget(self) -> Generator[None, Any, Any]:
        return (yield from self._count("forget"))


def _fail_with(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as raised:
        return raised


class BackendTests(HostTests, ListingTests, ForkTests, RestartTests):
    """Subclass as ``TestX(BackendTests)`` and set ``url`` (or override ``make_backend``).

    Knobs for engines that need them:

    - ``settings``: keyword arguments for every ``Backend`` the suite makes.
    - ``short_ttl``: the shortest expiry the engine honours (whole-second
      engines need 1.0 or more).
    - ``let_time_pass(seconds)``: real time by default; override it to move a
      fake clock (see ``FakeClock``) where the plugin takes one.
    - ``wake_bound``: how long a wake-up may take, generously (without push,
      a store is seen by the core's poller within its 0.1 s interval and a read).
    - ``wait_timeout``: the deadline of waits that are expected to succeed.
    - ``expiry_grace``: how long after its TTL a record may still be readable.
    - ``listing_results`` and ``seed_results``: how many results the listing test
      pages through while stores go on (10,000), and how they are stored (a bulk
      load where one store per result would take minutes).
    - ``keeps_group_ids``: False where the storage format has no place for a
      task's group_id and parent_id (Celery's SQL tables have none).
    - ``restart_server``: a fixture to override (none by default) returning a
      callable that restarts the server, or cuts every connection to it, and
      returns once the server answers again. With it, the suite proves that push
      survives: waits begun before the cut get results stored after it.
    - ``reconnect_bound``: how long after the server is back such a store may
      take to wake its wait (5 s: reconnect attempts with a backoff of at most
      1 s, a connect, a resubscribe and the re-check of every waited id).
    """

    # --- states round trip ----------------------------------------------------------

    def test_success_round_trip(self, backend: Backend, other: Backend, task_id: str) -> None:
        value = {"n": 1, "text": "é", "items": [1, 2.5, None, True]}
        assert backend.mark_as_done(task_id, value) is True
        meta = other.get_task_meta(task_id)
        assert (meta.status, meta.result, meta.traceback) == (SUCCESS, value, None)
        assert meta.date_done is not None
        assert meta.date_done.tzinfo is not None
        assert meta.date_done.utcoffset() == timezone.utc.utcoffset(None)
        assert AsyncResult(task_id, other).get(timeout=5) == value

    def test_failure_round_trip(self, backend: Backend, other: Backend, task_id: str) -> None:
        assert backend.mark_as_failure(task_id, _fail_with(ValueError("bad", 3))) is True
        result = AsyncResult(task_id, other)
        assert result.state == FAILURE
        assert isinstance(result.result, ValueError)
        assert result.result.args == ("bad", 3)
        assert result.traceback is not None
        assert result.traceback.rstrip().endswith("ValueError: ('bad', 3)")
        with pytest.raises(ValueError, match=r"^\('bad', 3\)$") as raised:
            result.get(timeout=5)
        assert isinstance(raised.value.__cause__, RemoteTraceback)
        assert raised.value.__cause__.traceback == result.traceback

    def test_unknown_exception_class_is_not_rebuilt(self, backend: Backend, task_id: str) -> None:
        backend.mark_as_failure(task_id, ConformanceError("no"))
        error = backend.get_result(task_id)
        assert isinstance(error, RemoteError)
        assert (error.exc_type, error.exc_module, error.args) == (
            "ConformanceError",
            __name__,
            ("no",),
        )
        with self.make_backend(exception_allow=[ConformanceError]) as allowing:
            rebuilt = allowing.get_result(task_id)
        assert type(rebuilt) is ConformanceError
        assert rebuilt.args == ("no",)

    def test_retry_state(self, backend: Backend, task_id: str) -> None:
        backend.mark_as_retry(task_id, _fail_with(KeyError("again")))
        meta = backend.get_task_meta(task_id)
        assert (meta.status, meta.date_done) == (RETRY, None)
        error = backend.get_result(task_id)
        assert isinstance(error, KeyError)
        assert error.args == ("again",)

    def test_custom_state_with_progress(
        self, backend: Backend, other: Backend, task_id: str
    ) -> None:
        assert backend.store_result(task_id, {"current": 3, "total": 10}, "PROGRESS") is True
        result = AsyncResult(task_id, other)
        assert (result.state, result.info, result.ready()) == (
            "PROGRESS",
            {"current": 3, "total": 10},
            False,
        )

    def test_revoked_state(self, backend: Backend, task_id: str) -> None:
        backend.mark_as_revoked(task_id, "no longer needed")
        result = AsyncResult(task_id, backend)
        assert result.state == REVOKED
        with pytest.raises(TaskRevokedError, match=r"^no longer needed$"):
            result.get(timeout=5)

    def test_extended_fields(self, task_id: str) -> None:
        info = TaskInfo(
            name="tasks.add", args=[1, 2], kwargs={"z": 3}, worker="w1", retries=2, queue="q1"
        )
        with self.make_backend(extended=True) as backend:
            backend.mark_as_done(task_id, 3, request=info)
            meta = backend.get_task_meta(task_id)
        got = (meta.name, meta.args, meta.kwargs, meta.worker, meta.retries, meta.queue)
        assert got == ("tasks.add", [1, 2], {"z": 3}, "w1", 2, "q1")

    def test_extra_fields_round_trip(self, backend: Backend, other: Backend, task_id: str) -> None:
        # A host's own fields (taskiq's labels and timings): every later state keeps only its own.
        extra = {"host": "taskiq", "labels": {"a": [1, "b"]}, "execution_time": 0.25}
        assert backend.store_result(task_id, {"i": 1}, "PROGRESS", extra={"host": "p"}) is True
        assert other.get_task_meta(task_id).extra == {"host": "p"}
        assert backend.store_result(task_id, 7, SUCCESS, extra=extra) is True
        assert (other.get_task_meta(task_id).extra, other.get_result(task_id)) == (extra, 7)
        assert other.get_many([task_id])[task_id].extra == extra
        assert backend.store_result(task_id, 8, SUCCESS, overwrite=True) is True
        assert other.get_task_meta(task_id).extra is None

    def test_group_and_parent_ids(self, backend: Backend, task_id: str) -> None:
        if not self.keeps_group_ids:
            pytest.skip("the engine's schema has no group_id/parent_id (Celery's SQL tables)")
        backend.mark_as_done(task_id, 1, request=TaskInfo(group_id="g-1", parent_id="p-1"))
        meta = backend.get_task_meta(task_id)
        assert (meta.group_id, meta.parent_id) == ("g-1", "p-1")

    # --- every read answers for the id it was asked for ---------------------------------

    def test_every_read_names_the_task_it_was_asked_for(
        self, backend: Backend, other: Backend
    ) -> None:
        done, started, missing = self.new_id(), self.new_id(), self.new_id()
        backend.mark_as_done(done, "done")
        backend.mark_as_started(started)
        assert other.get_task_meta(done).task_id == done
        assert other.get_task_meta(started).task_id == started
        many = other.get_many([done, started, missing])
        assert {t: (m.task_id, m.status) for t, m in many.items()} == {
            done: (done, SUCCESS),
            started: (started, STARTED),
            missing: (missing, PENDING),
        }
        assert other.wait_for(done, timeout=self.wait_timeout).task_id == done

        async def main() -> None:
            assert (await other.aget_task_meta(done)).task_id == done
            found = await other.aget_many([done, started])
            assert {t: m.task_id for t, m in found.items()} == {done: done, started: started}

        run_async(main())

    def test_get_many_returns_every_stored_id(self, backend: Backend, other: Backend) -> None:
        ids = [self.new_id() for _ in range(50)]
        for n, task_id in enumerate(ids):
            backend.mark_as_done(task_id, n)
        found = other.get_many([*ids, self.new_id()])
        assert [(found[t].status, found[t].result) for t in ids] == [
            (SUCCESS, n) for n in range(len(ids))
        ]

    # --- unknown, pending, forgotten -------------------------------------------------

    def test_unknown_pending_forgotten(self, backend: Backend, task_id: str) -> None:
        assert (backend.exists(task_id), backend.get_state(task_id)) == (False, PENDING)
        backend.mark_as_started(task_id, {"pid": 1})
        assert (backend.exists(task_id), backend.get_state(task_id)) == (True, STARTED)
        assert backend.get_result(task_id) == {"pid": 1}
        assert backend.forget(task_id) is True
        assert (backend.exists(task_id), backend.get_state(task_id)) == (False, PENDING)
        assert backend.forget(task_id) is False

    # --- a ready state is never replaced -----------------------------------------------

    def test_ready_state_is_kept(self, backend: Backend, task_id: str) -> None:
        backend.mark_as_done(task_id, "first")
        assert backend.mark_as_started(task_id) is False
        assert backend.store_result(task_id, {"p": 1}, "PROGRESS") is False
        assert backend.mark_as_retry(task_id, KeyError("x")) is False
        assert backend.mark_as_failure(task_id, KeyError("x")) is False
        meta = backend.get_task_meta(task_id)
        assert (meta.status, meta.result) == (SUCCESS, "first")
        assert backend.store_result(task_id, "second", SUCCESS, overwrite=True) is True
        assert backend.get_result(task_id) == "second"

    def test_ready_state_is_kept_under_races(self, backend: Backend, other: Backend) -> None:
        ids = [self.new_id() for _ in range(60)]

        def late_worker(task_id: str) -> None:
            for _ in range(3):
                other.mark_as_started(task_id)

        with ThreadPoolExecutor(max_workers=6) as pool:
            for task_id in ids:
                pool.submit(late_worker, task_id)
                pool.submit(backend.mark_as_done, task_id, task_id)
        metas = backend.get_many(ids)
        assert {t: (m.status, m.result) for t, m in metas.items()} == {t: (SUCCESS, t) for t in ids}

    def test_ready_state_is_kept_when_another_process_races(self, backend: Backend) -> None:
        # A lock inside one process passes the thread race above and loses results here:
        # the check and the write must be one atomic step in the engine.
        self.require_shared(backend)
        ids = [self.new_id() for _ in range(RACED_IDS)]

        def late_worker(stopped: Callable[[], bool]) -> None:
            # Keeps writing STARTED to the id the finisher is about to finish, until its
            # SUCCESS is kept: each finishing store lands amid late writes of its id.
            for task_id in ids:
                while not stopped() and backend.mark_as_started(task_id):
                    pass

        def finisher() -> None:
            # Each id is finished once the child writes it, so that every finishing store
            # lands amid its late writes however the scheduler spreads the two processes
            # (a child slow to start once let this process finish all alone). Within one
            # budget: a child stuck on an id whose SUCCESS it overwrote never comes.
            budget_end = time.monotonic() + self.wait_timeout
            for task_id in ids:
                while time.monotonic() < budget_end and backend.get_state(task_id) != STARTED:
                    pass
                backend.mark_as_done(task_id, task_id)

        race_with_a_child(late_worker, finisher, self.wait_timeout * 6)
        metas = backend.get_many(ids)
        lost = [t for t, m in metas.items() if (m.status, m.result) != (SUCCESS, t)]
        assert lost == [], f"{len(lost)} of {len(ids)} results lost to a late STARTED"

    # --- serialization ---------------------------------------------------------------

    def test_unserializable_value_stores_nothing(self, backend: Backend, task_id: str) -> None:
        backend.mark_as_started(task_id)
        with pytest.raises(EncodeError, match=f"result of task '{task_id}' cannot be serialized"):
            backend.mark_as_done(task_id, object())
        assert backend.get_state(task_id) == STARTED

    def test_pickle_is_refused_unless_accepted(self, backend: Backend, task_id: str) -> None:
        with self.make_backend(serializer="pickle", accept_content=["pickle"]) as pickling:
            pickling.mark_as_done(task_id, {"a": 1})
            assert pickling.get_result(task_id) == {"a": 1}
        with pytest.raises(DecodeError, match="refused"):
            backend.get_task_meta(task_id)

    # --- expiry ---------------------------------------------------------------------------

    def test_ttl_expiry(self, backend: Backend, task_id: str) -> None:
        self.require(backend, Capability.TTL)
        keep = self.new_id()
        backend.mark_as_done(task_id, 1, expires=self.short_ttl)
        backend.mark_as_done(keep, 2, expires=None)
        assert backend.exists(task_id)
        self.let_time_pass(self.short_ttl)
        wait_until(lambda: not backend.exists(task_id), self.expiry_grace, f"{task_id} expired")
        assert backend.get_result(keep) == 2

    def test_cleanup(self, backend: Backend, task_id: str) -> None:
        self.require(backend, Capability.CLEANUP)
        # result_expires, not a per-call TTL: engines without TTLs (SQL) expire by date_done.
        with self.make_backend(expires=self.short_ttl) as backend:
            backend.mark_as_done(task_id, 1)
            self.let_time_pass(self.short_ttl * 1.5)
            keep = self.new_id()
            backend.mark_as_done(keep, 2)
            assert backend.cleanup() >= 1
            assert backend.exists(task_id) is False
            assert backend.get_result(keep) == 2

    # --- waiting ---------------------------------------------------------------------------

    def test_exact_timeout(self, backend: Backend, task_id: str) -> None:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=rf"^task '{task_id}' was not ready within 0.3 s"):
            AsyncResult(task_id, backend).get(timeout=0.3)
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 0.3 + 0.25

    def test_wait_returns_result_stored_before(
        self, backend: Backend, other: Backend, task_id: str
    ) -> None:
        other.mark_as_done(task_id, "early")
        assert AsyncResult(task_id, backend).get(timeout=self.wake_bound) == "early"

    def test_a_store_wakes_a_blocked_waiter(
        self, backend: Backend, other: Backend, task_id: str
    ) -> None:
        got: list[object] = []

        def wait() -> None:
            try:
                got.append(AsyncResult(task_id, backend).get(timeout=self.wait_timeout))
            except Exception as exc:
                got.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        self.wait_until_waiting(backend, {task_id})
        stored = time.monotonic()
        other.mark_as_done(task_id, "stored")
        waiter.join(self.wait_timeout + 1)
        assert got == ["stored"]
        assert time.monotonic() - stored < self.wake_bound
        assert backend.waiting_ids() == frozenset()

    def test_no_wakeup_is_lost(self, backend: Backend, other: Backend) -> None:
        ids = [self.new_id() for _ in range(50)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            waits = [pool.submit(AsyncResult(t, backend).get, self.wait_timeout) for t in ids]
            for t in ids:
                other.mark_as_done(t, t)
            stored = time.monotonic()
            assert [w.result() for w in waits] == ids
        # Within the bound: a wait rescued by its last read at the deadline was not woken.
        assert time.monotonic() - stored < self.wake_bound
        assert backend.waiting_ids() == frozenset()

    def test_timed_out_waits_leave_nothing_behind(self, backend: Backend) -> None:
        for _ in range(100):
            with pytest.raises(TimeoutError):
                AsyncResult(self.new_id(), backend).get(timeout=0.001)
        assert backend.waiting_ids() == frozenset()

    # --- asyncio ---------------------------------------------------------------------------
    # Every plugin serves the asyncio API (without capability ``async`` its sync
    # hooks run in a worker thread); with it, the twins must do the work.

    def test_async_round_trip(self, backend: Backend, other: Backend, task_id: str) -> None:
        async def main() -> None:
            result = AsyncResult(task_id, other)
            assert (await result.astate(), await result.aready()) == (PENDING, False)
            assert await backend.astore_result(task_id, {"n": 1}, STARTED) is True
            assert (await other.aget_task_meta(task_id)).status == STARTED
            assert await backend.astore_result(task_id, {"n": 2}, SUCCESS) is True
            assert await backend.astore_result(task_id, {"n": 3}, STARTED) is False
            assert await result == {"n": 2}
            assert (await result.astate(), await result.aready()) == (SUCCESS, True)
            unknown = self.new_id()
            metas = await other.aget_many([task_id, unknown])
            assert {t: m.status for t, m in metas.items()} == {task_id: SUCCESS, unknown: PENDING}
            assert (await other.aforget(task_id), await other.aforget(task_id)) == (True, False)
            assert (await other.aget_task_meta(task_id)).status == PENDING

        run_async(main())

    def test_async_failure_and_revocation(self, backend: Backend, task_id: str) -> None:
        revoked = self.new_id()
        backend.mark_as_failure(task_id, _fail_with(ValueError("bad", 3)))
        backend.mark_as_revoked(revoked, "no longer needed")

        async def main() -> None:
            result = AsyncResult(task_id, backend)
            with pytest.raises(ValueError, match=r"^\('bad', 3\)$") as raised:
                await result.aget(timeout=self.wait_timeout)
            assert isinstance(raised.value.__cause__, RemoteTraceback)
            kept = await result.aget(timeout=self.wait_timeout, propagate=False)
            assert (type(kept), kept.args) == (ValueError, ("bad", 3))
            with pytest.raises(TaskRevokedError, match=r"^no longer needed$"):
                await AsyncResult(revoked, backend)
            unraised = await AsyncResult(revoked, backend).aget(propagate=False)
            assert (type(unraised), unraised.args) == (TaskRevokedError, ("no longer needed",))

        run_async(main())

    def test_async_exact_timeout(self, backend: Backend, task_id: str) -> None:
        async def main() -> float:
            started = time.monotonic()
            with pytest.raises(
                TimeoutError, match=rf"^task '{task_id}' was not ready within 0.3 s"
            ):
                await AsyncResult(task_id, backend).aget(timeout=0.3)
            return time.monotonic() - started

        elapsed = run_async(main())
        assert 0.3 <= elapsed < 0.3 + 0.25
        assert backend.waiting_ids() == frozenset()

    def test_async_join_in_member_order(self, backend: Backend, other: Backend) -> None:
        ids = [self.new_id() for _ in range(3)]
        arrived: list[tuple[str, Any]] = []

        async def main() -> None:
            group = ResultSet([AsyncResult(t, other) for t in ids])
            joining = asyncio.ensure_future(
                group.ajoin(timeout=self.wait_timeout, callback=lambda t, v: arrived.append((t, v)))
            )
            for i in reversed(range(3)):
                await backend.astore_result(ids[i], i, SUCCESS)
            assert await joining == [0, 1, 2]
            assert sorted(arrived) == sorted(zip(ids, range(3), strict=True))

        run_async(main())
        assert other.waiting_ids() == frozenset()

    def test_async_join_raises_the_first_failure(self, backend: Backend, other: Backend) -> None:
        ids = [self.new_id() for _ in range(3)]
        backend.mark_as_done(ids[0], 0)
        backend.mark_as_failure(ids[1], _fail_with(KeyError("k")))

        async def main() -> None:
            group = ResultSet([AsyncResult(t, other) for t in ids])
            with pytest.raises(KeyError) as raised:
                await group.ajoin(timeout=self.wait_timeout)
            assert raised.value.args == ("k",)

        run_async(main())
        assert other.waiting_ids() == frozenset()

    def test_async_for_yields_in_completion_order(self, backend: Backend, other: Backend) -> None:
        ids = [self.new_id() for _ in range(3)]
        order = [2, 0, 1]

        async def main() -> list[str]:
            seen: list[str] = []
            await backend.astore_result(ids[order[0]], "first", SUCCESS)
            group = ResultSet([AsyncResult(t, other) for t in ids])
            async for member in group.aas_completed(timeout=self.wait_timeout):
                seen.append(member.id)
                if len(seen) < len(order):  # the next one only once this one arrived
                    await backend.astore_result(ids[order[len(seen)]], len(seen), SUCCESS)
            return seen

        assert run_async(main()) == [ids[i] for i in order]

    def test_async_store_wakes_an_await(
        self, backend: Backend, other: Backend, task_id: str
    ) -> None:
        async def main() -> float:
            waiting = asyncio.ensure_future(AsyncResult(task_id, backend).aget(self.wait_timeout))
            await await_until(lambda: task_id in backend.waiting_ids(), 5.0, "the await waits")
            stored = time.monotonic()
            await other.astore_result(task_id, "stored", SUCCESS)
            assert await waiting == "stored"
            return time.monotonic() - stored

        assert run_async(main()) < self.wake_bound
        assert backend.waiting_ids() == frozenset()

    def test_async_cancelled_and_timed_out_awaits_leave_nothing(self, backend: Backend) -> None:
        ids = [self.new_id() for _ in range(50)]

        async def main() -> None:
            tasks = [asyncio.ensure_future(AsyncResult(t, backend).aget()) for t in ids]
            await await_until(lambda: backend.waiting_ids() == set(ids), 5.0, "all 50 awaits wait")
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            assert {type(o) for o in outcomes} == {asyncio.CancelledError}
            assert backend.waiting_ids() == frozenset()
            for task_id in ids[:10]:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(AsyncResult(task_id, backend).aget(), 0.01)
            assert backend.waiting_ids() == frozenset()

        run_async(main())

    def test_async_twins_do_the_work(self, backend: Backend, other: Backend) -> None:
        self.require(backend, Capability.ASYNC)
        calls = SyncHookCalls()
        backend.add_plugin(calls)
        ids = [self.new_id() for _ in range(2)]

        async def main() -> None:
            await backend.astore_result(ids[0], 1, SUCCESS)
            assert (await backend.aget_task_meta(ids[0])).result == 1
            assert [m.status for m in (await backend.aget_many(ids)).values()] == [SUCCESS, PENDING]
            waiting = asyncio.ensure_future(AsyncResult(ids[1], backend).aget(self.wait_timeout))
            await asyncio.sleep(0)
            await other.astore_result(ids[1], 2, SUCCESS)
            assert await waiting == 2
            assert await backend.aforget(ids[0]) is True

        run_async(main())
        assert calls.calls == []

    # --- many ids, groups, revocation ---------------------------------------------------------

    def test_get_many_and_join(self, backend: Backend, other: Backend) -> None:
        self.require(backend, Capability.GET_MANY)
        ids = [self.new_id() for _ in range(100)]
        for i, t in enumerate(ids[:50]):
            backend.mark_as_done(t, i)
        metas = other.get_many(ids)
        assert list(metas) == ids
        assert [m.result for m in metas.values()][:50] == list(range(50))
        assert {m.status for m in list(metas.values())[50:]} == {PENDING}
        for i, t in enumerate(ids[50:], start=50):
            backend.mark_as_done(t, i)
        group = GroupResult(self.new_id(), [AsyncResult(t, other) for t in ids], other)
        assert group.join(timeout=self.wait_timeout) == list(range(100))

    def test_groups(self, backend: Backend, other: Backend) -> None:
        self.require(backend, Capability.GROUPS)
        members = [AsyncResult(self.new_id(), backend) for _ in range(3)]
        group = GroupResult(self.new_id(), members, backend).save()
        restored = GroupResult.restore(group.id, other)
        assert restored == group
        assert restored is not None
        assert [r.id for r in restored] == [r.id for r in members]
        assert group.delete() is True
        assert GroupResult.restore(group.id, other) is None
        assert group.delete() is False

    def test_revoke(self, backend: Backend, other: Backend, task_id: str) -> None:
        self.require(backend, Capability.REVOKE)
        assert backend.revoke(task_id, "stop") is True
        assert other.is_revoked(task_id) is True
        assert other.get_state(task_id) == REVOKED
        finished = self.new_id()
        backend.mark_as_done(finished, "kept")
        assert backend.revoke(finished) is False
        assert (other.is_revoked(finished), other.get_result(finished)) == (True, "kept")
        assert other.is_revoked(self.new_id()) is False

    # --- threads ------------------------------------------------------------------------------

    def test_concurrent_writers_and_readers(self, backend: Backend, other: Backend) -> None:
        ids = [self.new_id() for _ in range(200)]
        seen_bad: list[str] = []

        def write(chunk: list[str]) -> None:
            for t in chunk:
                backend.mark_as_started(t)
                backend.mark_as_done(t, t.upper())

        def read(chunk: list[str]) -> None:
            for t in chunk:
                state = other.get_state(t)
                if state not in (PENDING, STARTED, SUCCESS):
                    seen_bad.append(state)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for i in range(4):
                pool.submit(write, ids[i::4])
                pool.submit(read, ids[i::4])
        assert seen_bad == []
        assert {t: other.get_result(t) for t in ids} == {t: t.upper() for t in ids}

    # --- identity --------------------------------------------------------------------------

    def test_repr_masks_password(self, backend: Backend) -> None:
        assert backend.url.masked in repr(backend)
        if backend.url.password:
            assert backend.url.password not in repr(backend)
            assert backend.url.password not in str(backend.url)

    def test_scheme_is_published_as_entry_point(self, backend: Backend) -> None:
        resolved = resolve(backend.url)
        (published,) = entry_points(group=GROUP, name=resolved.scheme)
        assert published.dist is not None
        assert resolved.source == f"{published.dist.name} {published.dist.version}"
