"""Celery's ``mark_as_*`` shorthands of :meth:`Backend.store_result`, one per state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._args import DEFAULT, Expires, _Default
from ._errors import TaskRevokedError
from ._meta import TaskInfo
from ._states import FAILURE, RETRY, REVOKED, STARTED, SUCCESS


class Marks:
    """Mixed into :class:`Backend`."""

    store_result: Callable[..., bool]

    def mark_as_started(
        self, task_id: str, meta: Mapping[str, Any] | None = None, request: TaskInfo | None = None
    ) -> bool:
        return self.store_result(task_id, dict(meta or {}), STARTED, request=request)

    def mark_as_done(
        self,
        task_id: str,
        result: Any,
        request: TaskInfo | None = None,
        *,
        expires: Expires | _Default = DEFAULT,
    ) -> bool:
        return self.store_result(task_id, result, SUCCESS, request=request, expires=expires)

    def mark_as_failure(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: TaskInfo | None = None,
        *,
        expires: Expires | _Default = DEFAULT,
    ) -> bool:
        self._require_exception(exc)
        return self.store_result(task_id, exc, FAILURE, traceback, request, expires=expires)

    def mark_as_retry(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: TaskInfo | None = None,
    ) -> bool:
        self._require_exception(exc)
        return self.store_result(task_id, exc, RETRY, traceback, request)

    def mark_as_revoked(
        self,
        task_id: str,
        reason: str = "revoked",
        request: TaskInfo | None = None,
        *,
        expires: Expires | _Default = DEFAULT,
    ) -> bool:
        return self.store_result(
            task_id, TaskRevokedError(reason), REVOKED, request=request, expires=expires
        )

    @staticmethod
    def _require_exception(exc: object) -> None:
        if not isinstance(exc, BaseException):
            raise TypeError(f"exc must be an exception instance, got {type(exc).__name__}")
