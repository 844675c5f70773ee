"""asyncio on PostgreSQL: the async engine's calls never block the loop, and its engines
are closed with their loops."""

from __future__ import annotations

import asyncio

from resultstore import SUCCESS, Backend, Capability

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
