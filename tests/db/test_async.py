"""asyncio on PostgreSQL: the async engine's calls never block the loop, and its engines
are closed with their loops."""

from __future__ import annotations

import asyncio
import gc

from resultstore import SUCCESS, AsyncResult, Backend, Capability

from ..asyncio_checks import slow_callbacks_during


def test_get_join_and_store_never_block_the_loop(postgres_url: str) -> None:
    with Backend(postgres_url) as backend, Backend(postgres_url) as provider:
        assert Capability.ASYNC in backend.capabilities
        assert slow_callbacks_during(backend, provider) == []


def test_sqlite_has_no_twin_and_still_serves_coroutines(sqlite_url: str) -> None:
    async def main(backend: Backend) -> object:
        await backend.astore_result("t", 1, SUCCESS)
        return (await backend.aget_task_meta("t")).result

    with Backend(sqlite_url) as backend:
        assert Capability.ASYNC not in backend.capabilities
        assert asyncio.run(main(backend)) == 1


def test_each_loop_gets_its_engine_and_the_loop_closes_it(postgres_url: str) -> None:
    async def main(backend: Backend) -> int:
        await backend.astore_result("t", 2, SUCCESS)
        return len(backend.plugin._async._by_loop)  # type: ignore[attr-defined]

    with Backend(postgres_url) as backend:
        assert asyncio.run(main(backend)) == 1
        assert asyncio.run(main(backend)) == 1  # a new loop, a new engine
        assert backend.plugin._async._by_loop == {}  # type: ignore[attr-defined]


def test_awaits_cancelled_mid_query_leave_no_connection_behind(postgres_url: str) -> None:
    # Cancelled mid-query, SQLAlchemy's async pool could not check the connection back
    # in: it dropped it and warned from the garbage collector (3 of 300 here before the
    # fix; an error under pytest's filterwarnings). Timeouts from 0 to 6 ms land before,
    # during and after the reads of a done and of a pending id.
    async def main(backend: Backend) -> int:
        await backend.astore_result("t", 3, SUCCESS)
        cut = 0
        for attempt in range(300):
            task_id = "t" if attempt % 2 else f"pending-{attempt}"
            try:
                await asyncio.wait_for(AsyncResult(task_id, backend).aget(), attempt % 7 / 1000)
            except asyncio.TimeoutError:
                cut += 1
        engines = await backend.plugin._async.get()  # type: ignore[attr-defined]
        for engine in (engines.engine, engines.autocommit):
            assert engine.sync_engine.pool.checkedout() == 0
        return cut

    with Backend(postgres_url) as backend:
        cut = asyncio.run(main(backend))
        gc.collect()  # a dropped connection warns here
    assert cut >= 150  # every pending id at least
