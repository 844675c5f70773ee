"""Waiting for results: push on memory://, the core's poller on a plugin without push.

Provider and consumer are separate Backend objects on one URL, as a worker and a
client would be. A waiter is known to be blocked when ``backend.waiting_ids()``
shows its id (polled with a deadline); no test sleeps to let another thread
"get there". Latencies are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import builtins
import gc
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from functools import partial
from typing import Any, ClassVar

import pytest

import resultstore
from resultstore import (
    FAILURE,
    SUCCESS,
    AsyncResult,
    Backend,
    BackendConfig,
    Capability,
    KeyValueStore,
    ResultSet,
    TaskMeta,
)
from resultstore import _wait as wait_module
from resultstore._polling import POLL_INTERVAL
from resultstore._waiting import Waiter
from resultstore_memory import MemoryBackend

from ..doubles import hint
from ..threads import DEADLINE, Worker, wait_until

WAKE_BOUND = 0.05  # generous bound on a wake-up


def store_when_waiting(
    consumer: Backend, provider: Backend, waited: set[str], task_id: str
) -> None:
    """Once ``waited`` are all subscribed, store ``task_id`` (a failure if it is "b")."""
    wait_until(lambda: consumer.waiting_ids() == waited, f"a waiter is blocked on {waited}")
    if task_id == "b":
        provider.mark_as_failure(task_id, KeyError("k"))
    else:
        provider.mark_as_done(task_id, 1)


def live_waiters() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is Waiter)


def report(what: str, latencies: list[float]) -> None:
    ms = sorted(x * 1000 for x in latencies)
    print(
        f"\n{what}: n={len(ms)} min={ms[0]:.3f} ms median={statistics.median(ms):.3f} ms "
        f"max={ms[-1]:.3f} ms"
    )


@pytest.fixture
def provider(store_url: str) -> Iterator[Backend]:
    """The worker's Backend: a separate object on the consumer's URL."""
    with Backend(store_url) as b:
        yield b


class WaiterLog:
    """Weak references to every Waiter the backend creates."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[Waiter]] = []

    def live(self) -> int:
        gc.collect()
        return sum(1 for ref in self.refs if ref() is not None)


@pytest.fixture
def waiter_log(monkeypatch: pytest.MonkeyPatch) -> WaiterLog:
    log = WaiterLog()

    class TrackedWaiter(Waiter):
        __slots__ = ("__weakref__",)

        def __init__(self) -> None:
            super().__init__()
            log.refs.append(weakref.ref(self))

    monkeypatch.setattr(wait_module, "Waiter", TrackedWaiter)
    return log


def assert_nothing_left(backend: Backend) -> None:
    assert backend.waiting_ids() == frozenset()
    assert backend.plugin.subscribed_ids() == frozenset()  # type: ignore[attr-defined]


# --- one waiter ------------------------------------------------------------------------


class TestPushWake:
    def test_waiter_wakes_when_another_backend_stores(
        self, backend: Backend, provider: Backend
    ) -> None:
        assert Capability.PUSH in backend.capabilities
        latencies = []
        for i in range(20):
            task_id = f"t{i}"
            worker = Worker(partial(AsyncResult(task_id, backend).get, timeout=DEADLINE))
            worker.start()
            wait_until(
                lambda t=task_id: backend.waiting_ids() == {t}, f"a waiter is blocked on {task_id}"
            )
            assert backend.plugin.subscribed_ids() == {task_id}  # type: ignore[attr-defined]
            stored_at = time.monotonic()
            assert provider.mark_as_done(task_id, {"n": i}) is True
            assert worker.finish() == {"n": i}
            latencies.append(worker.returned_at - stored_at)
            assert_nothing_left(backend)
        report("push wake latency (store -> get() returns)", latencies)
        assert max(latencies) < WAKE_BOUND

    def test_failure_wakes_and_raises(self, backend: Backend, provider: Backend) -> None:
        worker = Worker(partial(AsyncResult("t", backend).get, timeout=DEADLINE))
        worker.start()
        wait_until(lambda: backend.waiting_ids() == {"t"}, "a waiter is blocked on t")
        provider.mark_as_failure("t", KeyError("k"))
        with pytest.raises(KeyError) as raised:
            worker.finish()
        assert raised.value.args == ("k",)
        assert_nothing_left(backend)

    def test_unready_states_do_not_end_the_wait(self, backend: Backend, provider: Backend) -> None:
        worker = Worker(partial(AsyncResult("t", backend).get, timeout=DEADLINE))
        worker.start()
        wait_until(lambda: backend.waiting_ids() == {"t"}, "a waiter is blocked on t")
        provider.mark_as_started("t")
        provider.store_result("t", {"current": 1}, "PROGRESS")
        provider.mark_as_retry("t", KeyError("again"))
        assert worker.is_alive() is True
        assert backend.waiting_ids() == {"t"}
        provider.mark_as_done("t", "finally")
        assert worker.finish() == "finally"

    def test_result_stored_before_the_wait_returns_at_once(
        self, backend: Backend, provider: Backend
    ) -> None:
        provider.mark_as_done("t", 42)
        started = time.monotonic()
        assert AsyncResult("t", backend).get() == 42
        assert AsyncResult("t", backend).get(timeout=0) == 42
        assert backend.wait_for("t", timeout=0) == provider.get_task_meta("t")
        assert time.monotonic() - started < WAKE_BOUND
        assert_nothing_left(backend)

    def test_no_lost_wake_up_when_store_races_the_subscription(
        self, backend: Backend, provider: Backend
    ) -> None:
        rounds = 200
        barrier = threading.Barrier(2, timeout=DEADLINE)

        def consume() -> list[Any]:
            values = []
            for i in range(rounds):
                barrier.wait()
                values.append(AsyncResult(f"r{i}", backend).get(timeout=DEADLINE))
            return values

        def produce() -> None:
            for i in range(rounds):
                barrier.wait()
                provider.mark_as_done(f"r{i}", i)

        consumer, producer = Worker(consume), Worker(produce)
        consumer.start()
        producer.start()
        producer.finish()
        assert consumer.finish() == list(range(rounds))
        assert_nothing_left(backend)


class TestTimeouts:
    def test_timeout_is_exact(self, backend: Backend) -> None:
        started = time.monotonic()
        with pytest.raises(resultstore.TimeoutError) as raised:
            AsyncResult("x", backend).get(timeout=0.2)
        elapsed = time.monotonic() - started
        print(f"\npush get(timeout=0.2) raised after {elapsed * 1000:.2f} ms")
        assert isinstance(raised.value, builtins.TimeoutError)
        assert isinstance(raised.value, resultstore.ResultStoreError)
        assert str(raised.value) == "task 'x' was not ready within 0.2 s (state PENDING)" + hint(
            backend
        )
        assert 0.2 <= elapsed < 0.25
        assert_nothing_left(backend)

    @pytest.mark.parametrize(
        ("store", "state"),
        [
            (lambda b: b.mark_as_started("x"), "STARTED"),
            (lambda b: b.store_result("x", {"current": 1}, "PROGRESS"), "PROGRESS"),
        ],
        ids=["started", "progress"],
    )
    def test_timeout_names_the_last_state_seen(
        self, backend: Backend, provider: Backend, store: Any, state: str
    ) -> None:
        store(provider)
        with pytest.raises(resultstore.TimeoutError) as raised:
            AsyncResult("x", backend).get(timeout=0.01)
        assert str(raised.value) == f"task 'x' was not ready within 0.01 s (state {state})"

    def test_timeout_zero(self, backend: Backend, provider: Backend) -> None:
        started = time.monotonic()
        with pytest.raises(resultstore.TimeoutError) as raised:
            AsyncResult("x", backend).get(timeout=0)
        assert time.monotonic() - started < WAKE_BOUND
        assert str(raised.value) == "task 'x' was not ready within 0 s (state PENDING)" + hint(
            backend
        )
        provider.mark_as_done("x", 1)
        assert AsyncResult("x", backend).get(timeout=0) == 1
        assert_nothing_left(backend)

    @pytest.mark.parametrize(
        ("kwargs", "exc_type", "message"),
        [
            ({"timeout": -1}, ValueError, "timeout must be a number of seconds >= 0, got -1"),
            (
                {"timeout": float("nan")},
                ValueError,
                "timeout must be a number of seconds >= 0, got nan",
            ),
            ({"timeout": "1"}, TypeError, "timeout must be a number of seconds or None, got '1'"),
            ({"timeout": True}, TypeError, "timeout must be a number of seconds or None, got True"),
            ({"interval": 0}, ValueError, "interval must be a positive number of seconds, got 0"),
            (
                {"interval": -0.5},
                ValueError,
                "interval must be a positive number of seconds, got -0.5",
            ),
        ],
        ids=["negative", "nan", "str", "bool", "zero-interval", "negative-interval"],
    )
    def test_bad_wait_arguments(
        self, backend: Backend, kwargs: dict[str, Any], exc_type: type[Exception], message: str
    ) -> None:
        with pytest.raises(exc_type) as raised:
            AsyncResult("x", backend).get(**kwargs)
        assert type(raised.value) is exc_type
        assert str(raised.value) == message
        assert_nothing_left(backend)

    def test_an_infinite_timeout_waits_without_a_deadline(
        self, backend: Backend, provider: Backend
    ) -> None:
        waiter = Worker(lambda: AsyncResult("x", backend).get(timeout=float("inf")))
        waiter.start()
        wait_until(lambda: backend.waiting_ids() == {"x"}, "the waiter waits")
        provider.mark_as_done("x", "late")
        assert waiter.finish() == "late"
        assert_nothing_left(backend)


class TestOnMessage:
    def test_progress_then_success_in_order(self, backend: Backend, provider: Backend) -> None:
        seen: list[tuple[str, Any]] = []
        saw = {1: threading.Event(), 2: threading.Event()}

        def on_message(meta: TaskMeta) -> None:
            seen.append((meta.status, meta.result))
            if meta.status == "PROGRESS":
                saw[meta.result["current"]].set()

        def produce() -> None:
            wait_until(lambda: backend.waiting_ids() == {"t"}, "the consumer waits on t")
            provider.store_result("t", {"current": 1, "total": 2}, "PROGRESS")
            assert saw[1].wait(DEADLINE)
            provider.store_result("t", {"current": 2, "total": 2}, "PROGRESS")
            assert saw[2].wait(DEADLINE)
            provider.mark_as_done("t", "done")

        producer = Worker(produce)
        producer.start()
        value = AsyncResult("t", backend).get(timeout=DEADLINE, on_message=on_message)
        producer.finish()
        assert value == "done"
        assert seen == [
            ("PROGRESS", {"current": 1, "total": 2}),
            ("PROGRESS", {"current": 2, "total": 2}),
            (SUCCESS, "done"),
        ]

    def test_a_newer_state_read_after_subscribing_does_not_reorder_progress(self) -> None:
        """The read that follows the subscription can see step 3 while the channel
        still carries steps 2 and 3 to the waiter (stored after the subscription,
        delivered later): ``on_message`` must see 1, 2, 3, never 3 then 2."""
        seen: list[Any] = []
        progress = wait_module.Progress(["t"], None, lambda m: seen.append(m.result))
        plan = wait_module.push_plan(progress, None, "test")

        def answer(value: int | str | None) -> Any:
            """Send one reply (the state ``value`` of "t"); what the plan asks next."""
            meta = TaskMeta("t", SUCCESS, value) if value == "done" else None
            if isinstance(value, int):
                meta = TaskMeta("t", "PROGRESS", {"step": value})
            step = plan.send(None if meta is None else {"t": meta})
            while step == wait_module.ReadStep([]):  # nothing to reread after a wake-up
                step = plan.send({})
            return step

        assert next(plan) == wait_module.ReadStep(["t"])
        assert answer(1) == wait_module.Subscribe(["t"])
        assert answer(None) == wait_module.ReadStep(["t"])
        for woken in (3, 2, 3):  # the read after subscribing, then the channel's two
            assert answer(woken) == wait_module.WakeUp(None)
        assert answer("done") == wait_module.Ready(TaskMeta("t", SUCCESS, "done"))
        assert seen == [{"step": 1}, {"step": 2}, {"step": 3}, "done"]

    def test_already_ready_result_is_reported_once(
        self, backend: Backend, provider: Backend
    ) -> None:
        provider.mark_as_done("t", 1)
        seen: list[str] = []
        AsyncResult("t", backend).get(on_message=lambda m: seen.append(m.status))
        assert seen == [SUCCESS]


# --- groups ------------------------------------------------------------------------------


def members(backend: Backend, *ids: str) -> list[AsyncResult]:
    return [AsyncResult(i, backend) for i in ids]


class TestJoinWhileCompleting:
    def test_group_completing_while_joining(self, backend: Backend, provider: Backend) -> None:
        def produce() -> None:
            for task_id, rest in (("b", {"a", "c"}), ("c", {"a"}), ("a", set())):
                wait_until(
                    lambda r=rest, t=task_id: backend.waiting_ids() == r | {t},
                    f"the join waits on {sorted(rest | {task_id})}",
                )
                provider.mark_as_done(task_id, task_id.upper())

        calls: list[tuple[str, Any]] = []
        producer = Worker(produce)
        producer.start()
        values = ResultSet(members(backend, "a", "b", "c")).join(
            timeout=DEADLINE, callback=lambda i, v: calls.append((i, v))
        )
        producer.finish()
        assert values == ["A", "B", "C"]
        assert calls == [("b", "B"), ("c", "C"), ("a", "A")]
        assert_nothing_left(backend)

    def test_failure_arriving_during_join_raises_and_unsubscribes(
        self, backend: Backend, provider: Backend
    ) -> None:
        def produce() -> None:
            wait_until(lambda: backend.waiting_ids() == {"a", "b", "c"}, "the join waits")
            provider.mark_as_failure("b", KeyError("k"))

        producer = Worker(produce)
        producer.start()
        with pytest.raises(KeyError) as raised:
            ResultSet(members(backend, "a", "b", "c")).join(timeout=DEADLINE)
        producer.finish()
        assert raised.value.args == ("k",)
        assert_nothing_left(backend)

    def test_join_raising_on_first_failure_unsubscribes_the_rest_at_once(
        self, backend: Backend, provider: Backend, waiter_log: WaiterLog
    ) -> None:
        storer = Worker(partial(store_when_waiting, backend, provider, {"a", "b", "c"}, "b"))
        storer.start()
        with pytest.raises(KeyError) as raised:
            ResultSet(members(backend, "a", "b", "c")).join(timeout=DEADLINE)
        storer.finish()
        # Still holding the exception (and so its traceback and frames):
        assert raised.value.args == ("k",)
        assert_nothing_left(backend)
        del raised
        assert len(waiter_log.refs) == 1
        assert waiter_log.live() == 0

    def test_a_failure_found_by_the_first_read_subscribes_nothing(
        self, backend: Backend, provider: Backend, waiter_log: WaiterLog
    ) -> None:
        provider.mark_as_failure("a", KeyError("k"))
        with pytest.raises(KeyError):
            ResultSet(members(backend, "a", "b")).join(timeout=DEADLINE)
        assert_nothing_left(backend)
        assert len(waiter_log.refs) == 0

    def test_abandoned_as_completed_unsubscribes(
        self, backend: Backend, provider: Backend, waiter_log: WaiterLog
    ) -> None:
        storer = Worker(partial(store_when_waiting, backend, provider, {"a", "b", "c"}, "a"))
        storer.start()
        rs = ResultSet(members(backend, "a", "b", "c"))
        completed = rs.as_completed(timeout=DEADLINE)
        assert next(completed) == "a"
        storer.finish()
        assert backend.waiting_ids() == {"b", "c"}
        assert backend.plugin.subscribed_ids() == {"b", "c"}  # type: ignore[attr-defined]
        completed.close()
        assert_nothing_left(backend)
        del completed
        assert waiter_log.live() == 0

    def test_breaking_out_of_as_completed_unsubscribes(
        self, backend: Backend, provider: Backend, waiter_log: WaiterLog
    ) -> None:
        storer = Worker(partial(store_when_waiting, backend, provider, {"a", "b", "c"}, "b"))
        storer.start()
        rs = ResultSet(members(backend, "a", "b", "c"))
        for member in rs.as_completed(timeout=DEADLINE):
            storer.finish()
            assert member == "b"
            assert backend.waiting_ids() == {"a", "c"}
            break
        assert_nothing_left(backend)
        assert len(waiter_log.refs) == 1
        assert waiter_log.live() == 0

    def test_iter_ready_context_manager_unsubscribes(self, backend: Backend) -> None:
        with backend.iter_ready(["a", "b"], timeout=DEADLINE):
            pass  # never iterated: nothing subscribed yet
        assert_nothing_left(backend)
        with (
            backend.iter_ready(["a", "b"], timeout=0) as ready,
            pytest.raises(resultstore.TimeoutError) as raised,
        ):
            next(ready)
        assert str(raised.value) == "2 tasks were not ready within 0 s: 'a', 'b'" + hint(backend)
        assert_nothing_left(backend)


class TestClose:
    def test_close_releases_a_blocked_waiter(self, store_url: str) -> None:
        consumer = Backend(store_url)
        worker = Worker(partial(AsyncResult("t", consumer).get, timeout=1.5))
        worker.start()
        wait_until(lambda: consumer.waiting_ids() == {"t"}, "a waiter is blocked on t")
        closed_at = time.monotonic()
        consumer.close()
        worker.join(DEADLINE)
        assert not worker.is_alive()
        assert consumer.waiting_ids() == frozenset()
        assert worker.returned_at - closed_at < WAKE_BOUND
        assert isinstance(worker.error, resultstore.ResultStoreError)
        assert not isinstance(worker.error, resultstore.TimeoutError)
        assert "closed" in str(worker.error)


# --- leaks ------------------------------------------------------------------------------------


class TestNothingLeftBehind:
    def test_a_thousand_timed_out_waits(self, backend: Backend) -> None:
        threads_before = threading.active_count()
        for i in range(1000):
            with pytest.raises(resultstore.TimeoutError) as raised:
                AsyncResult(f"t{i}", backend).get(timeout=0.001)
            assert str(raised.value) == (
                f"task 't{i}' was not ready within 0.001 s (state PENDING)" + hint(backend)
            )
        del raised
        assert_nothing_left(backend)
        assert threading.active_count() == threads_before
        assert live_waiters() == 0
        assert len(backend.plugin._channels) == 1  # type: ignore[attr-defined]

    def test_fifty_threads_times_twenty_timed_out_waits(self, backend: Backend) -> None:
        threads_before = threading.active_count()
        barrier = threading.Barrier(50, timeout=DEADLINE)

        def wait_twenty(n: int) -> int:
            barrier.wait()
            timeouts = 0
            for i in range(20):
                task_id = "shared" if i % 2 else f"own-{n}-{i}"
                try:
                    AsyncResult(task_id, backend).get(timeout=0.001)
                except resultstore.TimeoutError:
                    timeouts += 1
            return timeouts

        workers = [Worker(partial(wait_twenty, n)) for n in range(50)]
        for worker in workers:
            worker.start()
        assert [worker.finish() for worker in workers] == [20] * 50
        del workers
        assert_nothing_left(backend)
        assert threading.active_count() == threads_before
        assert live_waiters() == 0
        assert len(backend.plugin._channels) == 1  # type: ignore[attr-defined]

    def test_finished_waits_leave_nothing(self, backend: Backend, provider: Backend) -> None:
        for i in range(100):
            provider.mark_as_done(f"t{i}", i)
        assert ResultSet(members(backend, *(f"t{i}" for i in range(100)))).join() == list(
            range(100)
        )
        assert AsyncResult("t0", backend).get() == 0
        assert_nothing_left(backend)
        assert live_waiters() == 0


class TestManyWaiters:
    def test_four_hundred_threads_one_channel(
        self, backend: Backend, provider: Backend, waiter_log: WaiterLog
    ) -> None:
        threads_before = threading.active_count()
        ids = [f"d{i}" for i in range(200)]
        workers = [Worker(partial(AsyncResult(i, backend).get, timeout=DEADLINE)) for i in ids]
        workers += [
            Worker(partial(AsyncResult("shared", backend).get, timeout=DEADLINE))
            for _ in range(200)
        ]
        for worker in workers:
            worker.start()
        wait_until(
            lambda: len(waiter_log.refs) == 400 and backend.waiting_ids() == {*ids, "shared"},
            "400 waiters are blocked",
        )
        assert backend.plugin.subscribed_ids() == {*ids, "shared"}  # type: ignore[attr-defined]
        assert len(backend.plugin._channels) == 1  # type: ignore[attr-defined]
        assert provider.plugin._channels == []  # type: ignore[attr-defined]
        stored_at = time.monotonic()
        provider.mark_as_done("shared", "S")
        for i, task_id in enumerate(ids):
            provider.mark_as_done(task_id, i)
        values = [worker.finish() for worker in workers]
        all_woken = max(worker.returned_at for worker in workers) - stored_at
        print(
            f"\n400 waiters (201 ids): all returned {all_woken * 1000:.2f} ms after the first store"
        )
        assert values == [*range(200), *["S"] * 200]
        del workers
        assert_nothing_left(backend)
        assert threading.active_count() == threads_before
        assert waiter_log.live() == 0


# --- polling: a plugin without push ----------------------------------------------------------


class PollingStore(KeyValueStore):
    """A key-value plugin without push (and so polled by the core), kept in a dict.

    It declares ``ttl`` only to satisfy the expiry check; these tests never let
    results expire.
    """

    capabilities = frozenset({"ttl", "get_many"})
    stores: ClassVar[dict[str, dict[str, bytes]]] = {}

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.data = self.stores.setdefault(config.url.host or "", {})
        self.reads = 0
        self.polled = threading.Event()

    def kv_get(self, key: str) -> bytes | None:
        self.reads += 1
        self.polled.set()
        return self.data.get(key)

    def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.data[key] = value

    def kv_delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None


@pytest.fixture
def poll_url(store_url: str) -> Iterator[str]:
    resultstore.register_backend("polltest", PollingStore)
    try:
        yield store_url.replace("memory://", "polltest://")
    finally:
        resultstore.unregister_backend("polltest")
        PollingStore.stores.clear()


@pytest.fixture
def poll_pair(poll_url: str) -> Iterator[tuple[Backend, Backend]]:
    with Backend(poll_url) as consumer, Backend(poll_url) as producer:
        yield consumer, producer


def polling_plugin(backend: Backend) -> PollingStore:
    plugin = backend.plugin
    assert isinstance(plugin, PollingStore)
    return plugin


class TestPolling:
    def test_plugin_has_no_push(self, poll_pair: tuple[Backend, Backend]) -> None:
        consumer, _ = poll_pair
        assert consumer.capabilities == frozenset({Capability.TTL, Capability.GET_MANY})

    def test_poll_wakes_soon_after_a_store(self, poll_pair: tuple[Backend, Backend]) -> None:
        consumer, producer = poll_pair
        plugin = polling_plugin(consumer)
        latencies = []
        for i in range(10):
            task_id = f"t{i}"
            plugin.polled.clear()
            worker = Worker(partial(AsyncResult(task_id, consumer).get, timeout=DEADLINE))
            worker.start()
            assert plugin.polled.wait(DEADLINE)
            stored_at = time.monotonic()
            producer.mark_as_done(task_id, i)
            assert worker.finish() == i
            latencies.append(worker.returned_at - stored_at)
        report("poll wake latency, store right after the first poll", latencies)
        assert max(latencies) < WAKE_BOUND
        assert consumer.waiting_ids() == frozenset()

    def test_poll_backs_off_only_to_the_poll_interval(
        self, poll_pair: tuple[Backend, Backend]
    ) -> None:
        consumer, producer = poll_pair
        plugin = polling_plugin(consumer)
        # interval= is accepted (Celery's signature) but the backend's poller sets the pace.
        worker = Worker(partial(AsyncResult("t", consumer).get, timeout=DEADLINE, interval=5))
        worker.start()
        wait_until(lambda: plugin.reads >= 12, "the poller has backed off to its interval")
        stored_at = time.monotonic()
        producer.mark_as_done("t", 1)
        assert worker.finish() == 1
        latency = worker.returned_at - stored_at
        print(f"\npoll wake latency, backed off: {latency * 1000:.3f} ms")
        assert latency < POLL_INTERVAL + WAKE_BOUND

    def test_poll_timeout_is_exact_and_backoff_starts_in_milliseconds(
        self, poll_pair: tuple[Backend, Backend]
    ) -> None:
        consumer, _ = poll_pair
        plugin = polling_plugin(consumer)
        started = time.monotonic()
        with pytest.raises(resultstore.TimeoutError) as raised:
            AsyncResult("x", consumer).get(timeout=0.2)
        elapsed = time.monotonic() - started
        print(f"\npoll get(timeout=0.2) raised after {elapsed * 1000:.2f} ms, {plugin.reads} reads")
        assert isinstance(raised.value, builtins.TimeoutError)
        assert str(raised.value) == "task 'x' was not ready within 0.2 s (state PENDING)"
        assert 0.2 <= elapsed < 0.25
        # The wait reads first, after subscribing and at the deadline; the poller 1 ms
        # after the subscribe, then 2, 4, ... 64 ms apart: 10 reads in 0.2 s. A backoff
        # that started at the interval would read 5 times.
        assert plugin.reads >= 8

    def test_poll_timeout_zero(self, poll_pair: tuple[Backend, Backend]) -> None:
        consumer, producer = poll_pair
        producer.mark_as_started("x")
        started = time.monotonic()
        with pytest.raises(resultstore.TimeoutError) as raised:
            AsyncResult("x", consumer).get(timeout=0)
        assert time.monotonic() - started < WAKE_BOUND
        assert str(raised.value) == "task 'x' was not ready within 0 s (state STARTED)"
        producer.mark_as_done("x", 2)
        assert AsyncResult("x", consumer).get(timeout=0) == 2

    def test_poll_join_in_completion_order(self, poll_pair: tuple[Backend, Backend]) -> None:
        consumer, producer = poll_pair
        plugin = polling_plugin(consumer)
        calls: list[str] = []
        progressed = threading.Event()

        def produce() -> None:
            for task_id in ("c", "a", "b"):
                reads = plugin.reads
                wait_until(lambda r=reads: plugin.reads > r, "the join has polled again")
                if task_id == "b":
                    producer.mark_as_failure("b", KeyError("k"))
                else:
                    producer.mark_as_done(task_id, task_id.upper())
                wait_until(lambda t=task_id: t in calls, f"the join has seen {task_id}")
            progressed.set()

        producer_thread = Worker(produce)
        producer_thread.start()
        values = ResultSet(members(consumer, "a", "b", "c")).join(
            timeout=DEADLINE, propagate=False, callback=lambda i, v: calls.append(i)
        )
        producer_thread.finish()
        assert progressed.is_set()
        assert calls == ["c", "a", "b"]
        assert values[0] == "A"
        assert type(values[1]) is KeyError
        assert values[2] == "C"
        assert consumer.get_state("b") == FAILURE


# --- garbage collection at the worst moment -----------------------------------------------

# Run in a child process: if the hub lock is not reentrant, the waiting thread deadlocks for good.
GC_REENTRY_SCENARIO = '''
import gc, os, threading, uuid
import resultstore
from resultstore import AsyncResult, Backend, ResultSet

class CollectingChannel:
    """Collects garbage inside subscribe(), as any allocation there may trigger."""
    def __init__(self, inner):
        self.inner = inner
    def subscribe(self, ids):
        gc.collect()
        self.inner.subscribe(ids)
    def unsubscribe(self, ids):
        self.inner.unsubscribe(ids)
    def close(self):
        self.inner.close()

class GcInSubscribe:
    @resultstore.hookimpl(wrapper=True)
    def notify(self, on_change):
        return CollectingChannel((yield))

def scenario():
    backend = Backend(f"memory://gc-{uuid.uuid4().hex}", plugins=[GcInSubscribe()])
    backend.mark_as_done("a", 1)
    members = [AsyncResult("a", backend), AsyncResult("b", backend)]
    completed = ResultSet(members).as_completed(timeout=5)
    assert next(completed) == "a"
    cycle = [completed]
    cycle.append(cycle)
    del completed, cycle  # the suspended wait on "b" is now cyclic garbage
    try:
        AsyncResult("c", backend).get(timeout=0)
    except resultstore.TimeoutError:
        pass
    assert backend.waiting_ids() == frozenset(), backend.waiting_ids()
    assert backend.plugin.subscribed_ids() == frozenset(), backend.plugin.subscribed_ids()
    print("ok", flush=True)

gc.disable()
thread = threading.Thread(target=scenario, daemon=True)
thread.start()
thread.join(2.0)
if thread.is_alive():
    print("deadlock", flush=True)
    os._exit(1)
'''


def test_abandoned_wait_collected_while_the_hub_lock_is_held() -> None:
    child = subprocess.run(
        [sys.executable, "-c", GC_REENTRY_SCENARIO],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (child.returncode, child.stdout, child.stderr) == (0, "ok\n", "")


class _DeafChannel:
    def subscribe(self, task_ids: object) -> None:
        pass

    def unsubscribe(self, task_ids: object) -> None:
        pass

    def close(self) -> None:
        pass


class _DeafMemory(MemoryBackend):
    """memory:// whose push channel drops every notification (a lost reconnect window)."""

    @resultstore.hookimpl
    def notify(self, on_change: object) -> _DeafChannel:
        return _DeafChannel()


def test_a_lost_notification_is_rescued_by_the_read_at_the_deadline() -> None:
    resultstore.register_backend("deafmemory", _DeafMemory)
    try:
        with Backend("deafmemory://rescue") as backend:
            worker = Worker(partial(AsyncResult("t", backend).get, timeout=0.3))
            worker.start()
            wait_until(lambda: backend.waiting_ids() == {"t"}, "a waiter is blocked on t")
            backend.mark_as_done("t", "late but stored")
            assert worker.finish() == "late but stored"
    finally:
        resultstore.unregister_backend("deafmemory")


@pytest.mark.parametrize("url_fixture", ["store_url", "poll_url"])
def test_a_forked_child_gets_its_own_channel_and_no_parent_waiters(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    # poll_url: the channel is the core's poller, whose thread the child does not have.
    with Backend(request.getfixturevalue(url_fixture)) as backend:
        parent_wait = Worker(partial(AsyncResult("parent", backend).get, timeout=DEADLINE))
        parent_wait.start()
        wait_until(lambda: backend.waiting_ids() == {"parent"}, "the parent's waiter is blocked")
        with warnings.catch_warnings():  # 3.12+ warns about fork with threads: that is the test
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: exit code 0 only if every check holds
            ok = backend.waiting_ids() == frozenset()
            child_wait = Worker(partial(AsyncResult("child", backend).get, timeout=5))
            child_wait.start()
            deadline = time.monotonic() + 5
            while backend.waiting_ids() != {"child"} and time.monotonic() < deadline:
                time.sleep(0.001)
            stored_at = time.monotonic()
            backend.mark_as_done("child", 7)
            ok = ok and child_wait.finish() == 7 and backend.waiting_ids() == frozenset()
            ok = ok and child_wait.returned_at - stored_at < 1.0  # woken, not read at 5 s
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        backend.mark_as_done("parent", 1)
        assert parent_wait.finish() == 1


def test_a_closed_backend_does_not_open_a_new_channel(store_url: str) -> None:
    backend = Backend(store_url)
    backend.close()
    with pytest.raises(resultstore.ResultStoreError) as raised:
        AsyncResult("t", backend).get(timeout=1)
    assert str(raised.value) == "the backend is closed: open a new Backend to wait"
    assert backend.plugin._channels == []  # type: ignore[attr-defined]
