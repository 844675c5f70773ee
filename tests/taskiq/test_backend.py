"""ResultStoreBackend's settings and edge cases, in process on memory:// (the worker
tests cover the real path)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from taskiq import TaskiqResult

from taskiq_resultstore import ResultIsMissingError, ResultStoreBackend


@pytest.fixture
def url() -> Iterator[str]:
    from resultstore_memory import drop_store

    name = f"taskiq-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    drop_store(name)


def ok(value: Any) -> TaskiqResult[Any]:
    return TaskiqResult(is_err=False, return_value=value, execution_time=0.1)


def test_expiry_settings_are_taskiq_redis_ones(url: str) -> None:
    assert ResultStoreBackend(url).expires is None  # kept, as taskiq's backends keep them
    assert ResultStoreBackend(url, result_ex_time=30).backend.expires == 30
    assert ResultStoreBackend(url, result_px_time=1500).backend.expires == 1.5
    with pytest.raises(ValueError, match=r"^result_ex_time must be more than zero, got 0$"):
        ResultStoreBackend(url, result_ex_time=0)
    with pytest.raises(ValueError, match=r"^choose result_ex_time or result_px_time, not both$"):
        ResultStoreBackend(url, result_ex_time=1, result_px_time=1000)


def test_keep_results_false_deletes_a_result_once_read(url: str) -> None:
    backend = ResultStoreBackend(url, keep_results=False)
    asyncio.run(backend.set_result("t1", ok([1])))
    assert asyncio.run(backend.get_result("t1")).return_value == [1]
    with pytest.raises(ResultIsMissingError, match=r"^task 't1' has no result \(state PENDING\)$"):
        asyncio.run(backend.get_result("t1"))
    asyncio.run(backend.shutdown())


def test_logs_only_when_asked_and_a_later_result_replaces_an_earlier(url: str) -> None:
    backend = ResultStoreBackend(url)
    failed = TaskiqResult(is_err=True, return_value=None, execution_time=0.1, log="line")
    asyncio.run(backend.set_result("t1", failed))
    first = asyncio.run(backend.get_result("t1", with_logs=True))
    assert (first.is_err, first.log, first.error) == (True, "line", None)  # as taskiq had it
    # Celery's readers see a FAILURE with an error all the same.
    error = backend.backend.get_result("t1")
    assert (type(error), str(error)) == (RuntimeError, "task t1 failed without an error")
    assert asyncio.run(backend.get_result("t1")).log is None
    asyncio.run(backend.set_result("t1", ok(2)))  # a retry's success, as taskiq stores it
    assert asyncio.run(backend.get_result("t1")).return_value == 2
    asyncio.run(backend.shutdown())
