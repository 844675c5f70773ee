"""Each event loop's ``redis.asyncio`` client, as the plugin's asyncio twins use it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

# Connections an event loop may use at once: ten thousand concurrent awaits share
# them instead of opening ten thousand (redis_max_connections lowers it).
ASYNC_CONNECTIONS = 50


@dataclass(frozen=True)
class AsyncRedis:
    """One event loop's redis.asyncio client, its store script and its connection slots."""

    client: Any
    store_script: Any
    forget_script: Any  # None: forget is a pipeline of two DELs (no index to keep)
    slots: asyncio.Semaphore
    # Commands whose caller was cancelled run on: kept here until done.
    running: set[asyncio.Future[Any]] = field(default_factory=set)

    def finished(self, task: asyncio.Future[Any]) -> None:
        self.running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a cancelled caller's error is nobody's to raise


async def close_async(redis_: AsyncRedis) -> None:
    await redis_.client.aclose()
    pool = getattr(redis_.client, "connection_pool", None)
    manager = getattr(pool, "sentinel_manager", None)
    if manager is not None:  # as in close(): the sentinels' connections are not the client's
        for sentinel in manager.sentinels:
            await sentinel.aclose()
