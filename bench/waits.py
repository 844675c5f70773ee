"""Wake-up latency on Redis: a waiter here, a storer in another process, one monotonic clock.

Threads (``wait_latencies``) and coroutines (``await_latencies``) are measured the
same way against the same storer, each next to its raw driver's pub/sub.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio

STORER = """
import json, sys, time
from datetime import datetime, timezone
import redis
from resultstore import Backend
mode, url = sys.argv[1], sys.argv[2]
client = redis.Redis.from_url(url)
backend = Backend(url)
for line in sys.stdin:
    key, task_id = line.split()
    started = time.monotonic()
    if mode == "store":
        backend.mark_as_done(task_id, 1)  # Celery's format: Celery clients wake on it too
    elif mode == "set-publish":
        # What a user of redis-py alone would write for a stored result that wakes its
        # waiter: the same bytes (Celery's meta, as json), kept a day and published.
        value = json.dumps({
            "status": "SUCCESS", "result": 1, "traceback": None, "children": [],
            "date_done": datetime.now(timezone.utc).isoformat(), "task_id": task_id,
        }).encode()
        pipe = client.pipeline(transaction=False)
        pipe.set(key, value, ex=86400)
        pipe.publish(key, value)
        pipe.execute()
    else:
        client.publish(key, b"1")
    print(started, flush=True)
"""

# The raw driver's side of a wake-up: what the storer does, and whether the waiter
# decodes the published meta (``json.loads``) as resultstore's does.
RAW_MODES = {"set-publish": True, "publish": False}


class Storer:
    """The other process: stores a result (``store``), or does redis-py's like of it
    (``set-publish``), or publishes one byte to its key (``publish``)."""

    def __init__(self, url: str, mode: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", STORER, mode, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, key: str, task_id: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(f"{key} {task_id}\n")
        self._process.stdin.flush()

    def started(self) -> float:
        """When the storer began the store it was last asked for (its monotonic clock)."""
        assert self._process.stdout is not None
        return float(self._process.stdout.readline())

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(10)


def new_key() -> tuple[str, str]:
    task_id = uuid.uuid4().hex
    return task_id, f"celery-task-meta-{task_id}"


def wait_latencies(
    url: str, wait: Callable[[str], object] | None, n: int, raw: str = "set-publish"
) -> list[float]:
    """Seconds from the store call to the waiter's return, ``n`` times.

    ``wait(task_id)`` blocks until the result is there (resultstore, Celery);
    ``None`` measures redis-py alone: a pub/sub subscriber that decodes what a
    pipelined SET + PUBLISH sent (``raw="set-publish"``), or the limit of the
    transport, a bare PUBLISH of one byte (``raw="publish"``).
    """
    decode = RAW_MODES[raw]
    storer = Storer(url, raw if wait is None else "store")
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    latencies = []
    for _ in range(n):
        task_id, key = new_key()
        woke: list[float] = []
        if wait is None:
            pubsub.subscribe(key)
            pubsub.get_message(timeout=1)  # the confirmation

            def block() -> None:
                while (message := pubsub.get_message(timeout=10)) is None:
                    pass
                if decode:
                    json.loads(message["data"])
                woke.append(time.monotonic())

        else:

            def block(t: str = task_id, wait: Callable[[str], object] = wait) -> None:
                wait(t)
                woke.append(time.monotonic())

        waiter = threading.Thread(target=block)
        waiter.start()
        # The waiter is subscribed on the server before the store is asked for.
        while client.pubsub_numsub(key)[0][1] < 1:
            time.sleep(0.0005)
        storer.ask(key, task_id)
        started = storer.started()
        waiter.join(10)
        latencies.append(woke[0] - started)
        if wait is None:
            pubsub.unsubscribe(key)
            pubsub.get_message(timeout=1)
        client.delete(key)
    pubsub.close()
    client.close()
    storer.close()
    return latencies


def await_latencies(
    url: str, wait: Callable[[str], Awaitable[object]] | None, n: int
) -> list[float]:
    """:func:`wait_latencies` for coroutines, in one event loop: ``wait(task_id)`` is
    awaited (resultstore's ``aget``); ``None`` measures raw ``redis.asyncio`` pub/sub
    decoding what a pipelined SET + PUBLISH sent."""
    return asyncio.run(_await_latencies(url, wait, n))


async def _await_latencies(
    url: str, wait: Callable[[str], Awaitable[object]] | None, n: int
) -> list[float]:
    storer = Storer(url, "set-publish" if wait is None else "store")
    client = redis.asyncio.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    latencies = []
    for _ in range(n):
        task_id, key = new_key()
        if wait is None:
            await pubsub.subscribe(key)
            await pubsub.get_message(timeout=1)  # the confirmation

            async def block() -> float:
                while (message := await pubsub.get_message(timeout=10)) is None:
                    pass
                json.loads(message["data"])
                return time.monotonic()

        else:

            async def block(
                t: str = task_id, wait: Callable[[str], Awaitable[object]] = wait
            ) -> float:
                await wait(t)
                return time.monotonic()

        waiter = asyncio.ensure_future(block())
        while (await client.pubsub_numsub(key))[0][1] < 1:
            await asyncio.sleep(0.0005)
        storer.ask(key, task_id)
        # Read the storer's answer in a thread: the loop must be free to wake the waiter.
        started = await asyncio.to_thread(storer.started)
        latencies.append(await asyncio.wait_for(waiter, 10) - started)
        if wait is None:
            await pubsub.unsubscribe(key)
            await pubsub.get_message(timeout=1)
        await client.delete(key)
    await pubsub.aclose()
    await client.aclose()
    storer.close()
    return latencies
