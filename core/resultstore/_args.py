"""Arguments the public API shares: ids, expiry times, and the "not given" marker."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Final

from ._polling import POLL_INTERVAL

DEFAULT_URL = "memory://"
DEFAULT_EXPIRES = 86400.0  # Celery's result_expires: one day
MAX_TASK_ID_LENGTH = 155  # Celery's task_id column, so ids stay portable across engines
# Celery's ``interval=`` of the waits, accepted and checked: waits sleep until woken,
# and a plugin without push is polled by the backend's one poller at its own pace.
DEFAULT_INTERVAL = POLL_INTERVAL


class _Default:
    def __repr__(self) -> str:
        return "<default>"


DEFAULT: Final = _Default()
Expires = float | int | timedelta | None


def seconds(value: Expires, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be seconds, a timedelta or None, got {value!r}")
    if not value > 0:
        raise ValueError(f"{what} must be positive (or None for no expiry), got {value!r}")
    return float(value)


def validate_task_id(task_id: object, what: str = "task id") -> str:
    if not isinstance(task_id, str):
        raise TypeError(f"{what} must be a str, got {type(task_id).__name__}: {task_id!r:.80}")
    if not task_id:
        raise ValueError(f"{what} must not be empty")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise ValueError(
            f"{what} is {len(task_id)} characters long; the limit is {MAX_TASK_ID_LENGTH}"
        )
    if not task_id.isprintable() or task_id != task_id.strip():
        raise ValueError(
            f"{what} {task_id!r} contains whitespace at its ends or control characters"
        )
    return task_id


def unique_ids(task_ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(validate_task_id(t) for t in task_ids))
