"""The check that the asyncio API never blocks the event loop, shared by the plugins' tests."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

import resultstore
from resultstore import SUCCESS, AsyncResult, Backend, GroupResult
from resultstore.testing._suite import await_until

SLOW_CALLBACK = 0.05  # seconds a loop step may take before debug mode reports it


class _SlowSteps(logging.Handler):
    """Collects asyncio's debug-mode "Executing ... took ..." reports."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing "):
            self.reports.append(message)


async def _get_join_and_store(backend: Backend, provider: Backend) -> None:
    asyncio.get_running_loop().slow_callback_duration = SLOW_CALLBACK
    ids = [f"loop-{i}" for i in range(20)]
    group = GroupResult("g", [AsyncResult(t, backend) for t in ids], backend)
    joining = asyncio.ensure_future(group.ajoin(timeout=10))
    waits = [asyncio.ensure_future(AsyncResult(t, backend).aget(timeout=10)) for t in ids]
    await await_until(lambda: set(ids) <= backend.waiting_ids(), 10.0, "all awaits wait")
    for i, task_id in enumerate(ids):
        assert await provider.astore_result(task_id, i, SUCCESS) is True
    assert await asyncio.gather(*waits) == list(range(20))
    assert await joining == list(range(20))
    assert [m.status for m in (await backend.aget_many(ids)).values()] == [SUCCESS] * 20
    for task_id in ids:
        assert await backend.aforget(task_id) is True
    with pytest.raises(resultstore.TimeoutError):
        await AsyncResult("never", backend).aget(timeout=0.05)


def slow_callbacks_during(backend: Backend, provider: Backend) -> list[str]:
    """Get, join and store through the async API in a debug-mode loop; return what
    it reported as slow (a callback over 50 ms: something blocked the loop)."""
    handler = _SlowSteps()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    # A full garbage collection of a big test session's heap can take a loop step
    # past 50 ms by itself: that is not a blocking call, so none runs meanwhile.
    gc.collect()
    gc.disable()
    try:
        asyncio.run(_get_join_and_store(backend, provider), debug=True)
    finally:
        gc.enable()
        logger.removeHandler(handler)
    assert backend.waiting_ids() == frozenset()
    return handler.reports
