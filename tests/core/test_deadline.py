"""Deadlines and retries: a wait ends on time even when the engine stops answering mid-read,
and a retry policy is a budget of attempts and of time, reported as it really went.

The "frozen engine" here is a plugin whose reads block as a socket read would, for as long
as ``time_left()`` allows (its own bound being 30 s), then fail as a timed-out read does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import resultstore
from resultstore import (
    AsyncResult,
    Backend,
    BackendUnavailable,
    RetryPolicy,
    TaskMeta,
    _deadline,
    hookimpl,
    time_left,
)

from ..doubles import DictPlugin
from ..threads import Worker

SCHEME = "frozentest"
OWN_BOUND = 30.0  # the frozen plugin's own socket timeout: never reached when green
MARGIN = _deadline.GRACE + 0.5  # the documented grace, and room for a loaded machine


class FrozenReads(DictPlugin):
    """Stores work; reads block like a read from a server that stopped answering."""

    frozen = threading.Event()
    thawed = threading.Event()  # set at the end of a test: blocked reads return then
    bounds: list[float | None] = []  # noqa: RUF012 - shared with the test on purpose

    @hookimpl
    def get(self, task_id: str) -> TaskMeta | None:
        if self.frozen.is_set():
            bound = time_left(OWN_BOUND)
            type(self).bounds.append(bound)
            self.thawed.wait(bound)
            raise BackendUnavailable(f"GET {task_id} timed out after {bound:.2f} s")
        return super().get(task_id)


@pytest.fixture
def frozen() -> Iterator[Backend]:
    resultstore.register_backend(SCHEME, FrozenReads)
    FrozenReads.frozen.clear()
    FrozenReads.thawed.clear()
    FrozenReads.bounds = []
    try:
        with Backend(f"{SCHEME}://") as backend:
            yield backend
            FrozenReads.thawed.set()  # the poller's own read (no deadline) ends too
    finally:
        FrozenReads.frozen.clear()
        resultstore.unregister_backend(SCHEME)


# --- time_left ---------------------------------------------------------------------------


def test_time_left_without_a_deadline_is_the_plugins_own_bound() -> None:
    assert time_left() is None
    assert time_left(5.0) == 5.0


def test_time_left_inside_a_deadline_is_the_smaller_and_never_below_the_grace() -> None:
    with _deadline.scope(time.monotonic() + 2.0):
        left = time_left(5.0)
        assert left is not None
        assert 1.5 < left <= 2.0
        assert time_left(0.1) == 0.1
    with _deadline.scope(time.monotonic() - 1.0):  # already past
        assert time_left() == _deadline.GRACE
    assert time_left() is None  # nothing leaks out of the scope


def test_an_inner_deadline_never_extends_the_outer_one() -> None:
    with _deadline.scope(time.monotonic() + 1.0):
        with _deadline.scope(time.monotonic() + 100.0):
            left = time_left()
            assert left is not None
            assert left <= 1.0
        with _deadline.scope(time.monotonic() + 0.5):
            left = time_left()
            assert left is not None
            assert left <= 0.5


def test_the_deadline_follows_a_call_into_a_worker_thread_of_asyncio() -> None:
    async def main() -> float | None:
        with _deadline.scope(time.monotonic() + 3.0):
            return await asyncio.to_thread(time_left)

    left = asyncio.run(main())
    assert left is not None
    assert 2.0 < left <= 3.0


# --- waits against a frozen engine -----------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.5, 1.0])
def test_a_wait_ends_on_time_when_the_engine_freezes_before_the_first_read(
    frozen: Backend, timeout: float
) -> None:
    FrozenReads.frozen.set()
    began = time.monotonic()
    with pytest.raises(resultstore.TimeoutError) as caught:
        AsyncResult("t", frozen).get(timeout=timeout)
    elapsed = time.monotonic() - began
    assert timeout <= elapsed < timeout + MARGIN
    assert str(caught.value) == f"task 't' was not ready within {timeout:g} s (state PENDING)"
    assert isinstance(caught.value.__cause__, BackendUnavailable)
    assert all(b is not None and b <= timeout + 0.01 for b in FrozenReads.bounds)
    assert frozen.waiting_ids() == frozenset()


def test_a_wait_ends_on_time_when_the_engine_freezes_while_it_waits(frozen: Backend) -> None:
    frozen.mark_as_started("t")
    waiter = Worker(lambda: AsyncResult("t", frozen).get(timeout=1.0))
    waiter.start()
    # The poller reads the id after the wait subscribed: freeze once it is waited on.
    deadline = time.monotonic() + 10
    while frozen.waiting_ids() != {"t"}:
        assert time.monotonic() < deadline, "the wait never subscribed"
        time.sleep(0.001)
    FrozenReads.frozen.set()
    with pytest.raises(resultstore.TimeoutError, match=r"\(state STARTED\)$"):
        waiter.finish()
    assert 1.0 <= waiter.elapsed < 1.0 + MARGIN


def test_an_await_ends_on_time_when_the_engine_freezes(frozen: Backend) -> None:
    FrozenReads.frozen.set()

    async def main() -> float:
        began = time.monotonic()
        with pytest.raises(resultstore.TimeoutError, match=r"within 0.5 s \(state PENDING\)$"):
            await AsyncResult("t", frozen).aget(timeout=0.5)
        return time.monotonic() - began

    assert 0.5 <= asyncio.run(main()) < 0.5 + MARGIN


class FrozenSubscribe(DictPlugin):
    """A push plugin whose subscribe blocks like a command to a server that stopped answering."""

    capabilities = frozenset({"ttl", "push"})
    thawed = threading.Event()
    bounds: list[float | None] = []  # noqa: RUF012 - shared with the test on purpose

    @hookimpl
    def notify(self, on_change: Any) -> Any:
        plugin = type(self)

        class Channel:
            def subscribe(self, task_ids: Any) -> None:
                bound = time_left(OWN_BOUND)
                plugin.bounds.append(bound)
                plugin.thawed.wait(bound)
                raise BackendUnavailable(f"SUBSCRIBE timed out after {bound:.2f} s")

            def unsubscribe(self, task_ids: Any) -> None:
                pass

            def close(self) -> None:
                pass

        return Channel()


def test_an_awaits_subscribe_runs_under_its_deadline_in_the_hubs_worker_thread() -> None:
    # Coroutines subscribe through one worker thread, which does not inherit their
    # context: without the deadline handed over, a frozen server would hold that
    # thread (and every later await's subscribe) for the plugin's own 30 s.
    resultstore.register_backend("frozensub", FrozenSubscribe)
    FrozenSubscribe.thawed.clear()
    FrozenSubscribe.bounds = []

    async def main(backend: Backend) -> float:
        began = time.monotonic()
        with pytest.raises(resultstore.TimeoutError, match=r"within 0.5 s \(state PENDING\)$"):
            await AsyncResult("t", backend).aget(timeout=0.5)
        return time.monotonic() - began

    try:
        with Backend("frozensub://") as backend:
            assert 0.5 <= asyncio.run(main(backend)) < 0.5 + MARGIN
            FrozenSubscribe.thawed.set()
    finally:
        resultstore.unregister_backend("frozensub")
    assert len(FrozenSubscribe.bounds) == 1
    (bound,) = FrozenSubscribe.bounds
    assert bound is not None
    assert bound <= 0.5


def test_a_failing_read_before_the_deadline_is_the_engines_error(frozen: Backend) -> None:
    class Down(DictPlugin):
        @hookimpl
        def get(self, task_id: str) -> TaskMeta | None:
            raise BackendUnavailable("the engine is down")

    resultstore.register_backend("downtest", Down)
    try:
        with (
            Backend("downtest://", expires=None) as backend,
            pytest.raises(BackendUnavailable, match=r"^the engine is down$"),
        ):
            AsyncResult("t", backend).get(timeout=30)
    finally:
        resultstore.unregister_backend("downtest")


def test_no_deadline_leaks_into_the_callers_code_between_results(frozen: Backend) -> None:
    frozen.mark_as_done("a", 1)
    frozen.mark_as_done("b", 2)
    seen = []
    with frozen.iter_ready(["a", "b"], timeout=5) as ready:
        for meta in ready:
            seen.append((meta.task_id, time_left()))
    assert sorted(seen) == [("a", None), ("b", None)]


# --- the retry policy ---------------------------------------------------------------------------


class Flaky:
    """Fails with ``error`` the first ``failures`` times; records ``time_left()`` per attempt."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("connection reset by peer")
        self.bounds: list[float | None] = []

    def __call__(self) -> str:
        self.bounds.append(time_left())
        if len(self.bounds) <= self.failures:
            raise self.error
        return "ok"

    async def acall(self) -> str:
        return self()


def transient(exc: Exception) -> bool:
    return isinstance(exc, ConnectionError)


FAST = RetryPolicy(max_retries=3, interval_start=0.01, interval_max=0.02)


def run(policy: RetryPolicy, fn: Any) -> Any:
    return policy.run(fn, transient=transient, what="GET k", where="redis://h:6379/0")


def test_transient_errors_are_retried_within_the_count() -> None:
    flaky = Flaky(3)
    assert run(FAST, flaky) == "ok"
    assert len(flaky.bounds) == 4


def test_giving_up_says_how_many_attempts_in_how_long_and_why() -> None:
    flaky = Flaky(10)
    with pytest.raises(BackendUnavailable) as caught:
        run(FAST, flaky)
    message = str(caught.value)
    assert message.startswith("GET k failed on redis://h:6379/0 after 4 attempts in ")
    assert message.endswith(
        " s, no retries left (max_retries=3): ConnectionError: connection reset by peer"
    )
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert len(flaky.bounds) == 4


def test_no_retries_means_one_attempt() -> None:
    with pytest.raises(BackendUnavailable, match=r" after 1 attempt in [\d.]+ s, no retries left"):
        run(RetryPolicy(max_retries=0), Flaky(1))


def test_the_time_cap_ends_retries_before_the_count_does() -> None:
    policy = RetryPolicy(max_retries=100, interval_start=0.05, interval_max=0.05, timeout=0.3)
    flaky = Flaky(1000)
    began = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"out of time \(retry_policy timeout=0.3 s\)"):
        run(policy, flaky)
    assert time.monotonic() - began < 0.3 + MARGIN
    assert 2 <= len(flaky.bounds) < 100


def test_retries_run_under_the_policys_time_cap_the_first_attempt_does_not() -> None:
    flaky = Flaky(2)
    run(RetryPolicy(interval_start=0.01, timeout=5.0), flaky)
    first, *retries = flaky.bounds
    assert first is None
    assert all(b is not None and b <= 5.0 for b in retries)


def test_retries_stop_at_the_callers_deadline() -> None:
    policy = RetryPolicy(max_retries=10, interval_start=0.2, interval_max=0.2)
    with (
        _deadline.scope(time.monotonic() + 0.3),
        pytest.raises(BackendUnavailable, match="the caller's deadline came"),
    ):
        run(policy, Flaky(100))


def test_other_errors_are_not_retried() -> None:
    flaky = Flaky(5, ValueError("bad key"))
    with pytest.raises(ValueError, match=r"^bad key$"):
        run(FAST, flaky)
    assert len(flaky.bounds) == 1


def test_arun_retries_without_blocking_the_loop() -> None:
    flaky = Flaky(2)

    async def main() -> str:
        return await FAST.arun(flaky.acall, transient=transient, what="GET k", where="w")

    assert asyncio.run(main()) == "ok"
    assert len(flaky.bounds) == 3


def test_delays_double_or_grow_by_celerys_step() -> None:
    assert list(RetryPolicy(max_retries=5, interval_start=0.1, interval_max=0.5).delays()) == [
        0.1,
        0.2,
        0.4,
        0.5,
        0.5,
    ]
    linear = RetryPolicy(max_retries=4, interval_start=0.2, interval_step=0.3, interval_max=0.9)
    assert [round(d, 6) for d in linear.delays()] == [0.2, 0.5, 0.8, 0.9]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("3", "retry_policy must be a dict with keys among"),
        ({"max_retry": 3}, "retry_policy must be a dict with keys among"),
        ({"max_retries": -1}, "retry_policy max_retries must be an int >= 0, got -1"),
        ({"max_retries": True}, "retry_policy max_retries must be an int >= 0, got True"),
        ({"timeout": "1"}, "retry_policy timeout must be a number of seconds >= 0, got '1'"),
        (
            {"interval_start": 2, "interval_max": 1},
            "retry_policy needs interval_start <= interval_max, got 2 and 1",
        ),
    ],
)
def test_bad_policies_are_refused_by_name(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        RetryPolicy.from_option(raw)


def test_a_policy_from_celerys_keys() -> None:
    policy = RetryPolicy.from_option(
        {"max_retries": 5, "interval_start": 0, "interval_step": 0.2, "interval_max": 1}
    )
    assert policy == RetryPolicy(5, 0, 0.2, 1, 10.0)
    assert RetryPolicy.from_option(None) == RetryPolicy()
