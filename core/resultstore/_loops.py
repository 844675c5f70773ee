"""One asyncio client per event loop, for plugins' async twins."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Entry(Generic[T]):
    """One loop's resource: ready once opened; its keeper closes it."""

    def __init__(self, ready: asyncio.Future[T]) -> None:
        self.ready = ready
        self.opening: asyncio.Task[None] | None = None
        self.keeper: AsyncGenerator[None, None] | None = None


class PerLoop(Generic[T]):
    """A resource per running event loop, closed when that loop shuts down or on ``close()``.

    asyncio clients (redis-py's, SQLAlchemy's async engine) belong to the loop
    they were created in. ``await per_loop.get()`` returns the running loop's,
    opening it with ``open()`` on first use. ``close(resource)`` is awaited on
    that loop when the loop shuts down its async generators (``asyncio.run``
    does, before it closes the loop), or when :meth:`close` is called.
    """

    def __init__(self, open: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._open = open
        self._close = close
        self._lock = threading.Lock()
        self._by_loop: dict[asyncio.AbstractEventLoop, _Entry[T]] = {}

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.get(loop)
            if entry is None:
                # Opened in a task of its own: a caller cancelled meanwhile must not
                # leave a half-opened resource that nobody closes.
                entry = self._by_loop[loop] = _Entry(loop.create_future())
                entry.opening = loop.create_task(self._start(loop, entry))
        return await asyncio.shield(entry.ready)

    async def _start(self, loop: asyncio.AbstractEventLoop, entry: _Entry[T]) -> None:
        try:
            # Off the loop: building a client can import and set up a driver (tens of ms).
            resource = await asyncio.to_thread(self._open)
        except BaseException as exc:
            with self._lock:
                self._by_loop.pop(loop, None)
            entry.ready.set_exception(exc)
            return
        entry.keeper = self._keep(loop, resource)
        # Started, the generator is known to the loop, which closes it at shutdown.
        await entry.keeper.__anext__()
        entry.ready.set_result(resource)

    async def _keep(
        self, loop: asyncio.AbstractEventLoop, resource: T
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                self._by_loop.pop(loop, None)
            await self._close(resource)

    def close(self) -> None:
        """Close every loop's resource on its loop: at once where that loop is idle,
        scheduled where it runs. A loop closed without shutting down its async
        generators took its resource's sockets with it; nothing is left to do there."""
        with self._lock:
            entries, self._by_loop = self._by_loop, {}
        for loop, entry in entries.items():
            keeper = entry.keeper
            if keeper is None or loop.is_closed():
                continue
            if not loop.is_running():
                loop.run_until_complete(keeper.aclose())
            else:
                asyncio.run_coroutine_threadsafe(keeper.aclose(), loop)
