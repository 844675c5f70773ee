"""The provider side: what a worker wraps around one task run.

``backend.run(task_id)`` records STARTED on entry, SUCCESS on a clean exit
and FAILURE (with the traceback) on an exception, and makes ``get()`` inside
the task refuse to block. What a killed run can leave behind is in the
README's "Providers" section.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from contextvars import ContextVar
from dataclasses import replace
from traceback import format_exception
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._context import running_task
from ._errors import EncodeError, ResultStoreError, TaskRevokedError, WorkerLostError
from ._meta import TaskInfo
from ._states import FAILURE, READY_STATES, REVOKED, STARTED, SUCCESS

if TYPE_CHECKING:
    from ._backend import Backend

P = ParamSpec("P")
R = TypeVar("R")

_current_run: ContextVar[TaskRun | None] = ContextVar("resultstore_current_run", default=None)


def current_run() -> TaskRun | None:
    """The task run this code is inside (``backend.run(...)``), if any."""
    return _current_run.get()


def default_worker_name() -> str:
    """``<pid>@<host>``, what STARTED records and extended results name the worker by."""
    return f"{os.getpid()}@{socket.gethostname()}"


class TaskRun:
    """One run of one task, as a context manager (``with backend.run(id) as run:``).

    On entry it refuses a revoked or finished task (:class:`TaskRevokedError`,
    :class:`ResultStoreError`) and, with ``track_started``, stores STARTED with
    the worker's host and pid. On exit it stores SUCCESS with :attr:`result`,
    FAILURE with the exception on an ``Exception`` (re-raised), REVOKED when
    the task raised :class:`TaskRevokedError`, and FAILURE with a
    :class:`WorkerLostError` when a ``BaseException`` (``KeyboardInterrupt``,
    ``SystemExit``) interrupted it. :meth:`call` runs a function in the run and
    stores its return value.
    """

    def __init__(
        self,
        backend: Backend,
        task_id: str,
        request: TaskInfo | None = None,
        *,
        track_started: bool = True,
    ) -> None:
        if request is not None and not isinstance(request, TaskInfo):
            raise TypeError(f"request must be a TaskInfo, got {type(request).__name__}")
        if not isinstance(track_started, bool):
            raise TypeError(f"track_started must be a bool, got {track_started!r}")
        self.backend = backend
        self.task_id = task_id
        self.request = request or TaskInfo()
        if self.request.worker is None:
            self.request = replace(self.request, worker=default_worker_name())
        self.track_started = track_started
        self.result: Any = None
        self.state: str | None = None  # the last state this run stored
        self._entered = False
        self._stack = ExitStack()

    def __repr__(self) -> str:
        return f"<TaskRun {self.task_id} state={self.state}>"

    # --- inside the task ---------------------------------------------------------------

    def update_state(self, state: str, meta: Mapping[str, Any] | None = None) -> None:
        """Report progress: a custom state (``"PROGRESS"``) with its meta."""
        if state in READY_STATES:
            raise ValueError(
                f"update_state({state!r}) would end the task; return the value, raise, "
                "or raise TaskRevokedError instead"
            )
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
        self._store(dict(meta or {}), state)

    def is_revoked(self) -> bool:
        """Whether a client revoked the task (check it between steps of long work)."""
        return self.backend.is_revoked(self.task_id)

    def raise_if_revoked(self) -> None:
        """Raise :class:`TaskRevokedError` when revoked; the run then ends as REVOKED."""
        if self.is_revoked():
            raise TaskRevokedError(f"task {self.task_id!r} was revoked")

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` as this task; its return value is the result."""
        with self:
            value = self.result = fn(*args, **kwargs)
        return value

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """As a decorator: the decorated call runs as this task (once)."""

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.call(fn, *args, **kwargs)

        return wrapper

    # --- the context manager --------------------------------------------------------------

    def __enter__(self) -> TaskRun:
        if self._entered:
            raise RuntimeError(f"{self!r} was entered already; a run is used once")
        self._entered = True
        if self.track_started:
            started = {"pid": os.getpid(), "hostname": socket.gethostname()}
            if not self._store(started, STARTED):
                self._refuse()
        elif self.backend.get_state(self.task_id) in READY_STATES:
            self._refuse()
        self._stack.enter_context(running_task(self.task_id))
        self._stack.callback(_current_run.reset, _current_run.set(self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()
        if exc is None:
            try:
                self._store(self.result, SUCCESS)
            except EncodeError as error:
                # The task ran, but its value cannot be stored: say so in the
                # result, or it would read STARTED forever.
                self._store(error, FAILURE)
                raise
        elif isinstance(exc, TaskRevokedError):
            self._store(exc, REVOKED)
        elif isinstance(exc, Exception):
            self._store(exc, FAILURE)
        else:
            assert exc_type is not None
            lost = WorkerLostError(f"task {self.task_id!r} was interrupted by {exc_type.__name__}")
            self._store(lost, FAILURE, "".join(format_exception(exc)))

    def _refuse(self) -> None:
        state = self.backend.get_state(self.task_id)
        if state == REVOKED:
            raise TaskRevokedError(f"task {self.task_id!r} was revoked before it started")
        raise ResultStoreError(
            f"task {self.task_id!r} already finished ({state}); a task id is run once"
        )

    def _store(self, value: Any, state: str, traceback: str | None = None) -> bool:
        written = self.backend.store_result(
            self.task_id, value, state, traceback, request=self.request
        )
        if written:
            self.state = state
        return written
