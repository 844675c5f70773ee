"""Which task is running here, so that ``get()`` inside a task can refuse to block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current_task: ContextVar[str | None] = ContextVar("resultstore_current_task", default=None)
_join_allowed: ContextVar[bool] = ContextVar("resultstore_join_allowed", default=False)


def current_task_id() -> str | None:
    """The id of the task running in this thread or asyncio task, if any."""
    return _current_task.get()


@contextmanager
def running_task(task_id: str) -> Iterator[None]:
    """Mark the code inside as running task ``task_id`` (the provider API uses this)."""
    token = _current_task.set(task_id)
    allowed = _join_allowed.set(False)
    try:
        yield
    finally:
        _join_allowed.reset(allowed)
        _current_task.reset(token)


@contextmanager
def allow_join_result() -> Iterator[None]:
    """Allow waiting on other results inside a task (you accept the deadlock risk)."""
    token = _join_allowed.set(True)
    try:
        yield
    finally:
        _join_allowed.reset(token)


def assert_will_not_block() -> None:
    """Raise ``RuntimeError`` when called inside a running task, unless joins are allowed."""
    task_id = _current_task.get()
    if task_id is not None and not _join_allowed.get():
        raise RuntimeError(
            f"never wait for a result inside a task (task {task_id!r} is running here): "
            "it can deadlock the worker pool. Chain the tasks instead, or wrap the wait "
            "in resultstore.allow_join_result() if you accept the risk"
        )
