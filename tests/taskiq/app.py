"""The taskiq app of the tests: its worker runs as ``taskiq worker tests.taskiq.app:broker``.

The broker is taskiq-redis's ListQueueBroker on the machine's Redis, on a queue of the
test module's own (``TQ_QUEUE``); results go to the resultstore URL in ``RS_URL``.
The test process builds the same broker with :func:`make_broker`.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from taskiq import AsyncBroker, Context, TaskiqDepends
from taskiq.depends.progress_tracker import ProgressTracker
from taskiq_redis import ListQueueBroker

from taskiq_resultstore import ResultStoreBackend, push_waits

from ..hostenv import REDIS_URL, store_from_env

WHEN = datetime(2026, 11, 30, 12, 0, 0, 250000, tzinfo=timezone.utc)


class Refused(Exception):
    """An exception class of the app's own (not a builtin): stored by its name."""


def make_broker(queue: str, url: str, options: dict[str, Any]) -> AsyncBroker:
    results = ResultStoreBackend(url, options=options)
    broker = push_waits(ListQueueBroker(REDIS_URL, queue_name=queue).with_result_backend(results))

    @broker.task(task_name="add")
    async def add(x: int, y: int) -> int:
        return x + y

    @broker.task(task_name="when")
    async def when() -> datetime:
        return WHEN

    @broker.task(task_name="fail")
    async def fail(text: str) -> None:
        raise Refused(text, 2)

    @broker.task(task_name="fail_builtin")
    async def fail_builtin(text: str) -> None:
        raise ValueError(text)

    @broker.task(task_name="stepper")
    async def stepper(
        gate: str,
        progress: ProgressTracker[dict[str, int]] = TaskiqDepends(),  # noqa: B008
        context: Context = TaskiqDepends(),  # noqa: B008
    ) -> str:
        # Report progress, then hold until the test opens the gate (a record it stores).
        await progress.set_progress("STEP", {"done": 1, "of": 2})
        async with results.backend.aiter_ready([gate], timeout=60) as opened:
            await anext(opened)
        return f"stepped {context.message.task_id}"

    return broker


if os.environ.get("TQ_QUEUE"):  # imported by the worker command
    broker = make_broker(os.environ["TQ_QUEUE"], *store_from_env())
