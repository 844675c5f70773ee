"""The asyncio API in the core: the async hook contract, the thread fallback, waits that
never block the event loop, and the hub's batching of coroutine waiters on memory://."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, ClassVar

import pytest

import resultstore
from resultstore import (
    PENDING,
    SUCCESS,
    AsyncResult,
    Backend,
    Capability,
    EagerResult,
    GroupResult,
    PluginValidationError,
    TaskMeta,
    hookimpl,
)
from resultstore.testing._suite import await_until

from ..asyncio_checks import slow_callbacks_during
from ..doubles import DictPlugin

SCHEME = "asynctest"


@pytest.fixture
def use() -> Iterator[Callable[[type], str]]:
    """``use(PluginClass)`` serves ``asynctest://`` with it for one test."""

    def _use(cls: type) -> str:
        resultstore.register_backend(SCHEME, cls)
        return f"{SCHEME}://"

    yield _use
    resultstore.unregister_backend(SCHEME)


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --- the async hook contract ------------------------------------------------------------


class AsyncTwin(DictPlugin):
    """DictPlugin with the async twins; it records which thread ran each call."""

    capabilities = frozenset({"ttl", "async"})
    threads: ClassVar[list[str]] = []

    @hookimpl
    async def async_store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        self.threads.append(threading.current_thread().name)
        return self.store_result(meta, ttl, overwrite)

    @hookimpl
    async def async_get(self, task_id: str) -> TaskMeta | None:
        self.threads.append(threading.current_thread().name)
        return self.get(task_id)

    @hookimpl
    async def async_forget(self, task_id: str) -> bool:
        return self.forget(task_id)


class SyncTwin(DictPlugin):
    capabilities = frozenset({"ttl", "async"})

    @hookimpl
    def async_get(self, task_id: str) -> TaskMeta | None:
        return None


class AsyncSyncHook(DictPlugin):
    @hookimpl
    async def forget(self, task_id: str) -> bool:  # type: ignore[override]
        return False


class TwinsMissing(DictPlugin):
    capabilities = frozenset({"ttl", "async"})

    @hookimpl
    async def async_get(self, task_id: str) -> TaskMeta | None:
        return None


class GetManyTwinMissing(AsyncTwin):
    capabilities = frozenset({"ttl", "async", "get_many"})

    @hookimpl
    def get_many(self, task_ids: Sequence[str]) -> dict[str, TaskMeta]:
        return {}


class AsyncWrapper(DictPlugin):
    @hookimpl(wrapper=True)
    async def async_get(self, task_id: str) -> Any:
        return None


class Timing:
    """A wrapper around an async twin: it wraps the coroutine it is handed."""

    def __init__(self) -> None:
        self.awaited: list[str] = []

    @hookimpl(wrapper=True)
    def async_get(self, task_id: str) -> Generator[None, Any, Any]:
        pending = yield

        async def timed() -> Any:
            self.awaited.append(task_id)
            return await pending

        return timed()


def _rejected(use: Callable[[type], str], cls: type) -> str:
    with pytest.raises(PluginValidationError) as info:
        Backend(use(cls))
    return str(info.value)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (
            SyncTwin,
            f"plugin {qualname(SyncTwin)}: hook 'async_get' must be 'async def' "
            "(the asyncio twin of 'get')",
        ),
        (
            AsyncSyncHook,
            f"plugin {qualname(AsyncSyncHook)}: hook 'forget' must be a plain function, "
            "not 'async def'",
        ),
        (
            TwinsMissing,
            f"plugin {qualname(TwinsMissing)} declares capability 'async' but does not "
            "implement 'async_store_result', 'async_forget'",
        ),
        (
            GetManyTwinMissing,
            f"plugin {qualname(GetManyTwinMissing)} declares capabilities 'get_many' and "
            "'async' but does not implement 'async_get_many'",
        ),
        (
            AsyncWrapper,
            f"plugin {qualname(AsyncWrapper)}: hook 'async_get' must be a plain function, "
            "not 'async def'",
        ),
    ],
    ids=["sync-twin", "async-sync-hook", "twins-missing", "get-many-twin", "async-wrapper"],
)
def test_bad_async_hooks_are_rejected(use: Callable[[type], str], cls: type, message: str) -> None:
    assert _rejected(use, cls) == message


def test_twins_run_on_the_loop_and_wrappers_see_the_coroutine(
    use: Callable[[type], str],
) -> None:
    AsyncTwin.threads.clear()
    timing = Timing()

    async def main() -> None:
        with Backend(use(AsyncTwin), plugins=[timing]) as backend:
            assert Capability.ASYNC in backend.capabilities
            assert await backend.astore_result("t", 1, SUCCESS) is True
            assert await AsyncResult("t", backend) == 1
            assert await backend.aforget("t") is True

    asyncio.run(main())
    assert AsyncTwin.threads == ["MainThread", "MainThread"]
    assert timing.awaited == ["t"]


def test_a_plugin_without_twins_runs_in_worker_threads(use: Callable[[type], str]) -> None:
    threads: list[str] = []

    class Recording(DictPlugin):
        @hookimpl
        def get(self, task_id: str) -> TaskMeta | None:
            threads.append(threading.current_thread().name)
            return super().get(task_id)

    async def main() -> None:
        with Backend(use(Recording), expires=None) as backend:
            assert Capability.ASYNC not in backend.capabilities
            assert await backend.astore_result("t", {"v": 1}, SUCCESS) is True
            assert (await backend.aget_task_meta("t")).result == {"v": 1}
            assert (await backend.aget_task_meta("u")).status == PENDING
            assert await AsyncResult("t", backend).aget(timeout=1) == {"v": 1}
            assert await backend.aforget("t") is True
            with pytest.raises(resultstore.TimeoutError) as raised:
                await AsyncResult("u", backend).aget(timeout=0.05)
            assert str(raised.value) == "task 'u' was not ready within 0.05 s (state PENDING)"

    asyncio.run(main())
    assert threads
    assert "MainThread" not in threads


def test_eager_results_answer_at_once() -> None:
    async def main() -> None:
        ok = EagerResult("e1", 5)
        assert (await ok, await ok.astate(), await ok.aready()) == (5, SUCCESS, True)
        failed = EagerResult("e2", KeyError("k"), "FAILURE")
        with pytest.raises(KeyError):
            await failed.aget(timeout=0)

    asyncio.run(main())


def test_await_inside_a_task_is_refused(backend: Backend) -> None:
    async def main() -> None:
        with resultstore.running_task("outer"):
            with pytest.raises(RuntimeError, match="never wait for a result inside a task"):
                await AsyncResult("t", backend).aget(timeout=0)
            with pytest.raises(RuntimeError, match="never wait for a result inside a task"):
                await GroupResult("g", [AsyncResult("t", backend)], backend).ajoin(timeout=0)

    asyncio.run(main())


def test_nested_groups_join_and_complete(backend: Backend) -> None:
    inner = GroupResult("inner", [AsyncResult("a", backend), AsyncResult("b", backend)], backend)
    outer = GroupResult("outer", [AsyncResult("c", backend), inner], backend)

    async def main() -> tuple[list[str], list[Any]]:
        order = []
        for task_id, value in (("a", 1), ("c", 3), ("b", 2)):
            await backend.astore_result(task_id, value, SUCCESS)
        async for member in outer:
            order.append(member.id)
        return order, await outer.ajoin(timeout=1)

    assert asyncio.run(main()) == (["c", "inner"], [3, [1, 2]])


# --- the event loop never blocks ------------------------------------------------------


def test_memory_never_blocks_the_loop(backend: Backend, store_url: str) -> None:
    with Backend(store_url) as provider:
        assert slow_callbacks_during(backend, provider) == []


# --- the hub and coroutine waiters --------------------------------------------------------


def test_a_thousand_awaits_share_the_hub_and_all_wake(backend: Backend, store_url: str) -> None:
    ids = [f"many-{i}" for i in range(1000)]

    async def main() -> list[Any]:
        waits = [asyncio.ensure_future(AsyncResult(t, backend).aget(timeout=10)) for t in ids]
        await await_until(lambda: backend.waiting_ids() == set(ids), 10.0, "all awaits wait")
        assert backend.plugin.subscribed_ids() == set(ids)  # type: ignore[attr-defined]
        with Backend(store_url) as provider:
            for i, task_id in enumerate(ids):
                provider.mark_as_done(task_id, i)
        return await asyncio.gather(*waits)

    assert asyncio.run(main()) == list(range(1000))
    assert backend.waiting_ids() == frozenset()
    assert backend.plugin.subscribed_ids() == frozenset()  # type: ignore[attr-defined]


def test_threads_and_coroutines_wait_on_one_id(backend: Backend, store_url: str) -> None:
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(AsyncResult("x", backend).get(10)))
    thread.start()

    async def main() -> Any:
        waiting = asyncio.ensure_future(AsyncResult("x", backend).aget(timeout=10))
        await await_until(lambda: backend.waiting_ids() == {"x"}, 10.0, "both wait")
        await asyncio.sleep(0)
        with Backend(store_url) as provider:
            provider.mark_as_done("x", "both")
        return await waiting

    assert asyncio.run(main()) == "both"
    thread.join(10)
    assert got == ["both"]
    assert backend.waiting_ids() == frozenset()


def test_closing_the_backend_ends_an_await(store_url: str) -> None:
    backend = Backend(store_url)

    async def main() -> None:
        waiting = asyncio.ensure_future(AsyncResult("c", backend).aget(timeout=10))
        await await_until(lambda: backend.waiting_ids() == {"c"}, 10.0, "the await waits")
        backend.close()
        with pytest.raises(resultstore.ResultStoreError, match=r"was closed while waiting for"):
            await waiting

    asyncio.run(main())
