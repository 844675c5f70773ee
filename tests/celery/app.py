"""The Celery app of tests/celery: the worker subprocess and the test process build the same.

The worker imports this module (``celery -A tests.celery.app``) and reads its broker,
backend and queue from the environment; the tests call :func:`make_app` themselves.
Tasks that must wait for the test block on a Redis list (BLPOP with a deadline): the
test releases them by pushing to it, and learns that they started the same way.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery, Task, group

BLOCK_TIMEOUT = 30  # a task never waits for the test longer than this


class CustomError(Exception):
    """Rebuilt as itself by the client: its module is imported there too."""


def make_app(broker: str, backend: str, queue: str) -> Celery:
    app = Celery("rs_tests", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        result_extended=True,
        task_track_started=True,
        # The fallback for plugins without the counter capability (Celery's chord_unlock)
        # polls the header at this interval; Celery's default of 1 s would dominate.
        result_chord_retry_interval=0.1,
        broker_connection_retry_on_startup=True,
    )
    # redis-py's default socket timeout (5 s) would cut a BLPOP that waits longer.
    signals = redis.Redis.from_url(broker, socket_timeout=BLOCK_TIMEOUT + 5)

    @app.task(name="t.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.tsum", shared=False)
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="t.fail", shared=False)
    def fail(message: str, *args: Any) -> None:
        raise ValueError(message)

    @app.task(name="t.fail_custom", shared=False)
    def fail_custom(message: str) -> None:
        raise CustomError(message)

    @app.task(name="t.block", shared=False)
    def block(key: str) -> str:
        """Say it started, then wait until the test pushes to ``key``."""
        signals.rpush(f"{key}:started", 1)
        if signals.blpop([key], timeout=BLOCK_TIMEOUT) is None:
            raise TimeoutError(f"nobody released {key}")
        return key

    @app.task(name="t.progress", shared=False, bind=True)
    def progress(self: Task, key: str) -> str:
        self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
        if signals.blpop([key], timeout=BLOCK_TIMEOUT) is None:
            raise TimeoutError(f"nobody released {key}")
        return "done"

    @app.task(name="t.collect", shared=False)
    def collect(values: list[Any]) -> list[Any]:
        """A chord callback that returns what it was given, in its order."""
        return values

    @app.task(name="t.push", shared=False)
    def push(key: str, value: int) -> int:
        """Push ``value`` to ``key`` (for the test waiting on it), then return it."""
        signals.rpush(key, value)
        return value

    @app.task(name="t.extend_chord", shared=False, bind=True)
    def extend_chord(self: Task, nums: list[int], val: int) -> int:
        """Celery's integration task add_to_all_to_chord: adds a part per number."""
        for num in nums:
            self.add_to_chord(add.s(num, val))
        return 0

    @app.task(name="t.extend_chord_by_chord", shared=False, bind=True)
    def extend_chord_by_chord(self: Task, nums: list[int], val: int) -> int:
        """Celery's add_chord_to_chord: adds one part, a chord of its own."""
        self.add_to_chord(group(add.s(num, val) for num in nums) | tsum.s())
        return 0

    @app.task(name="t.count_call", shared=False)
    def count_call(values: list[int], counts: str, tag: str) -> int:
        """A chord callback that counts its runs per chord in a Redis hash."""
        signals.hincrby(counts, tag, 1)
        return sum(values)

    return app


if "RS_CELERY_BROKER" in os.environ:  # the worker subprocess
    app = make_app(
        os.environ["RS_CELERY_BROKER"],
        os.environ["RS_CELERY_BACKEND"],
        os.environ["RS_CELERY_QUEUE"],
    )
