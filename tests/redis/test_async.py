"""asyncio on the machine's Redis: no call blocks the loop, and ten thousand awaits in one
loop share one subscriber connection and leave nothing behind when they are cancelled."""

from __future__ import annotations

import asyncio
import statistics
import time

import redis

from resultstore import AsyncResult, Backend
from resultstore.testing._suite import await_until

from ..asyncio_checks import slow_callbacks_during
from .test_leaks import (
    assert_no_subscriptions_left,
    assert_nothing_left_in,
    numsub,
    own_subscriber_clients,
)

AWAITS = 10_000


def test_get_join_and_store_never_block_the_loop(backend: Backend, provider: Backend) -> None:
    assert slow_callbacks_during(backend, provider) == []


def test_ten_thousand_awaits_share_one_subscriber_and_all_wake(
    backend: Backend, provider: Backend, server: redis.Redis, keyprefix: str
) -> None:
    ids = [f"many-{i}" for i in range(AWAITS)]
    assert own_subscriber_clients(server) == []

    async def main() -> list[int]:
        started = time.monotonic()
        waits = [asyncio.ensure_future(AsyncResult(t, backend).aget(timeout=60)) for t in ids]
        await await_until(lambda: len(backend.waiting_ids()) == AWAITS, 60.0, "all awaits wait")
        subscribed = time.monotonic()
        assert sum(numsub(server, keyprefix, ids)) == AWAITS
        subscribers = own_subscriber_clients(server)
        assert len(subscribers) == 1, subscribers
        assert int(subscribers[0]["sub"]) == AWAITS
        stored_at = {}
        for i, task_id in enumerate(ids):
            await provider.astore_result(task_id, i, "SUCCESS")
            stored_at[task_id] = time.monotonic()
        values = await asyncio.gather(*waits)
        woke = time.monotonic()
        print(
            f"\n{AWAITS} awaits: all subscribed in {subscribed - started:.2f} s; stores took "
            f"{stored_at[ids[-1]] - subscribed:.2f} s; all awake "
            f"{(woke - stored_at[ids[-1]]) * 1000:.1f} ms after the last store"
        )
        return values

    assert asyncio.run(main()) == list(range(AWAITS))
    assert_no_subscriptions_left(server, keyprefix, ids)
    assert_nothing_left_in(backend)


def test_ten_thousand_cancelled_awaits_leave_nothing(
    backend: Backend, server: redis.Redis, keyprefix: str
) -> None:
    ids = [f"cancelled-{i}" for i in range(AWAITS)]

    async def main() -> float:
        waits = [asyncio.ensure_future(AsyncResult(t, backend).aget()) for t in ids]
        # Half are cancelled while they wait, half on their way to waiting.
        await await_until(
            lambda: len(backend.waiting_ids()) >= AWAITS // 2, 60.0, "half the awaits wait"
        )
        started = time.monotonic()
        for task in waits:
            task.cancel()
        outcomes = await asyncio.gather(*waits, return_exceptions=True)
        assert {type(o) for o in outcomes} == {asyncio.CancelledError}
        assert backend.waiting_ids() == frozenset()
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    print(f"\n{AWAITS} awaits cancelled and cleaned up in {elapsed:.2f} s")
    assert_no_subscriptions_left(server, keyprefix, ids)
    assert_nothing_left_in(backend)
    assert own_subscriber_clients(server) == []


def test_an_await_wakes_within_milliseconds(backend: Backend, provider: Backend) -> None:
    async def main() -> list[float]:
        latencies = []
        for i in range(50):
            task_id = f"latency-{i}"
            waiting = asyncio.ensure_future(AsyncResult(task_id, backend).aget(timeout=10))
            await await_until(lambda t=task_id: t in backend.waiting_ids(), 10.0, "it waits")
            stored = time.monotonic()
            await provider.astore_result(task_id, i, "SUCCESS")
            assert await waiting == i
            latencies.append(time.monotonic() - stored)
        return latencies

    latencies = asyncio.run(main())
    print(f"\nawait wake-up: median {statistics.median(latencies) * 1000:.2f} ms")
    assert statistics.median(latencies) < 0.05
