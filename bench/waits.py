"""Wake-up latency on Redis: a waiter here, a storer in another process, one monotonic clock."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

import redis

STORER = """
import sys, time
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
    else:
        client.publish(key, b"1")
    print(started, flush=True)
"""


def wait_latencies(url: str, wait: Callable[[str], object] | None, n: int) -> list[float]:
    """Seconds from the store call to the waiter's return, ``n`` times.

    ``wait(task_id)`` blocks until the result is there (resultstore, Celery);
    ``None`` measures the limit: a raw pub/sub subscriber and a bare PUBLISH.
    """
    mode = "publish" if wait is None else "store"
    storer = subprocess.Popen(
        [sys.executable, "-c", STORER, mode, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert storer.stdin is not None
    assert storer.stdout is not None
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    latencies = []
    for _ in range(n):
        task_id = uuid.uuid4().hex
        key = f"celery-task-meta-{task_id}"
        woke: list[float] = []
        if wait is None:
            pubsub.subscribe(key)
            pubsub.get_message(timeout=1)  # the confirmation

            def block() -> None:
                while pubsub.get_message(timeout=10) is None:
                    pass
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
        storer.stdin.write(f"{key} {task_id}\n")
        storer.stdin.flush()
        started = float(storer.stdout.readline())
        waiter.join(10)
        latencies.append(woke[0] - started)
        if wait is None:
            pubsub.unsubscribe(key)
            pubsub.get_message(timeout=1)
        client.delete(key)
    pubsub.close()
    client.close()
    storer.stdin.close()
    storer.wait(10)
    return latencies
