"""taskiq's ``AsyncResultBackend`` on a resultstore ``Backend``.

A taskiq result is stored as a resultstore task record in Celery's wire format:
SUCCESS with the return value, or FAILURE with the error as Celery's exception
dict and its traceback, so ``resultstore show ID`` and Celery's ``AsyncResult``
read it. What Celery has no field for (``execution_time``, ``labels``, ``log``,
taskiq's own form of the error) goes in the record's extra field ``taskiq``, and
comes back as the same ``TaskiqResult``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from taskiq import AsyncResultBackend, TaskiqResult
from taskiq.depends.progress_tracker import TaskProgress
from taskiq.exceptions import ResultGetError, TaskiqResultTimeoutError

import resultstore
from resultstore import EXCEPTION_STATES, FAILURE, READY_STATES, SUCCESS, Backend, TaskMeta

_ReturnType = TypeVar("_ReturnType")

# Progress lives in a record of its own (as taskiq-redis keeps it under a key of its
# own): a progress report can then never replace a result, nor a result the last report.
PROGRESS_SUFFIX = "__progress"
# The state of a progress record: never a ready state, whatever taskiq state it carries.
PROGRESS = "PROGRESS"
EXTRA = "taskiq"


class ResultIsMissingError(ResultGetError):
    """``get_result`` of a task that has no result (yet, or no longer)."""

    __template__ = "task {task_id!r} has no result (state {state})"
    task_id: str
    state: str


class ResultStoreBackend(AsyncResultBackend[_ReturnType]):
    """A taskiq result backend on any resultstore plugin, chosen by ``url``.

    ``keep_results=False`` deletes a result once it was read (as taskiq-redis's).
    ``result_ex_time`` (seconds) or ``result_px_time`` (milliseconds) expire results
    and progress; without either they are kept until deleted, as taskiq's backends
    do. ``exception_allow`` and the other keywords go to :class:`resultstore.Backend`
    (``serializer``, ``accept_content``, ``options``, ...).
    """

    def __init__(
        self,
        url: str,
        *,
        keep_results: bool = True,
        result_ex_time: int | None = None,
        result_px_time: int | None = None,
        exception_allow: Iterable[type[BaseException]] = (),
        **backend_settings: Any,
    ) -> None:
        for name, value in (("result_ex_time", result_ex_time), ("result_px_time", result_px_time)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be more than zero, got {value!r}")
        if result_ex_time and result_px_time:
            raise ValueError("choose result_ex_time or result_px_time, not both")
        self.url = url
        self.keep_results = keep_results
        self.expires: float | None = result_ex_time or (
            result_px_time / 1000 if result_px_time else None
        )
        self._settings = {"exception_allow": tuple(exception_allow), **backend_settings}
        self._backend: Backend | None = None
        self.backend  # noqa: B018 -- a bad URL or setting fails here, not at the first task

    @property
    def backend(self) -> Backend:
        """The resultstore Backend (opened again after :meth:`shutdown`)."""
        if self._backend is None:
            self._backend = Backend(self.url, expires=self.expires, **self._settings)
        return self._backend

    def __repr__(self) -> str:
        return f"<ResultStoreBackend {self.backend.url.masked!r}>"

    async def shutdown(self) -> None:
        """Close the store's connections and push channel (taskiq calls it at shutdown)."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()
        await super().shutdown()

    async def set_result(self, task_id: str, result: TaskiqResult[_ReturnType]) -> None:
        fields = result.model_dump(mode="json")
        if result.is_err:
            value: Any = result.error or RuntimeError(f"task {task_id} failed without an error")
            state = FAILURE
        else:
            value, state = fields.pop("return_value"), SUCCESS
        # taskiq replaces a result on every set (a retried task's success replaces its
        # failure): so does this, where resultstore would keep the first ready state.
        await self.backend.astore_result(
            task_id, value, state, extra={EXTRA: fields}, overwrite=True
        )

    async def is_result_ready(self, task_id: str) -> bool:
        meta = await self.backend.aget_task_meta(task_id)
        return meta.status in READY_STATES

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[_ReturnType]:
        """The result, or :class:`ResultIsMissingError` when the task has none."""
        meta = await self.backend.aget_task_meta(task_id)
        if meta.status not in READY_STATES:
            raise ResultIsMissingError(task_id=task_id, state=meta.status)
        return await self.take(meta, with_logs)

    async def wait_result(
        self, task_id: str, timeout: float | None = None, with_logs: bool = False
    ) -> TaskiqResult[_ReturnType]:
        """Wait for the result by push (the plugin's channel, or the core's one poller),
        not taskiq's poll every 0.2 s: ``TaskiqResultTimeoutError`` after ``timeout``."""
        return await self.take(await self.wait_ready(task_id, timeout), with_logs)

    async def wait_ready(self, task_id: str, timeout: float | None = None) -> TaskMeta:
        """Wait by push until the task is ready; its record, left in the store."""
        try:
            async with self.backend.aiter_ready([task_id], timeout) as ready:
                return await anext(ready)
        except resultstore.TimeoutError:
            raise TaskiqResultTimeoutError(timeout=timeout) from None

    async def take(self, meta: TaskMeta, with_logs: bool) -> TaskiqResult[_ReturnType]:
        """A ready record as ``get_result`` returns it (deleted if not ``keep_results``)."""
        result = self.to_taskiq(meta)
        if not self.keep_results:
            await self.backend.aforget(meta.task_id)
        if not with_logs:
            result.log = None
        return result

    def to_taskiq(self, meta: TaskMeta) -> TaskiqResult[_ReturnType]:
        """The ``TaskiqResult`` of a ready record: as taskiq stored it, or built from
        what Celery or resultstore stored (the error rebuilt the way resultstore's
        ``exception_allow`` permits, else a ``resultstore.RemoteError``)."""
        failed = meta.status in EXCEPTION_STATES
        stored = (meta.extra or {}).get(EXTRA)
        if isinstance(stored, dict):
            fields = dict(stored)
            if not failed:
                fields["return_value"] = meta.result
        else:
            fields = {
                "is_err": failed,
                "return_value": None if failed else meta.result,
                "execution_time": 0.0,
                "error": self.backend.exception_from_meta(meta) if failed else None,
            }
        return TaskiqResult[_ReturnType].model_validate(fields)

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        await self.backend.astore_result(
            task_id + PROGRESS_SUFFIX, progress.model_dump(mode="json"), PROGRESS
        )

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        meta = await self.backend.aget_task_meta(task_id + PROGRESS_SUFFIX)
        if meta.status != PROGRESS:
            return None
        return TaskProgress[Any].model_validate(meta.result)
