"""The provider side: what a worker wraps around one task run.

``backend.run(task_id)`` records STARTED on entry, SUCCESS on a clean exit
and FAILURE (with the traceback) on an exception, and makes ``get()`` inside
the task refuse to block. What a killed run can leave behind is in the
README's "Providers" section.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from contextlib import ExitStack
from contextvars import ContextVar
from dataclasses import replace
from traceback import format_exception
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

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

    Coroutines use ``async with`` and :meth:`acall`, :meth:`aupdate_state` and
    :meth:`ais_revoked`: the same steps, never blocking the event loop (a
    cancelled run ends as FAILURE with :class:`WorkerLostError`).
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
        self.request = _storable(backend, request or TaskInfo())
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
        self._store(self._progress(state, meta), state)

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

    # --- the same for coroutines -------------------------------------------------------------

    async def aupdate_state(self, state: str, meta: Mapping[str, Any] | None = None) -> None:
        """:meth:`update_state` for coroutines: never blocks the event loop."""
        await self._astore(self._progress(state, meta), state)

    async def ais_revoked(self) -> bool:
        """:meth:`is_revoked` for coroutines (in a worker thread: revocation hooks are sync)."""
        return await asyncio.to_thread(self.backend.is_revoked, self.task_id)

    async def araise_if_revoked(self) -> None:
        if await self.ais_revoked():
            raise TaskRevokedError(f"task {self.task_id!r} was revoked")

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` as this task; its value is the result."""
        async with self:
            value = self.result = await fn(*args, **kwargs)
        return value

    # --- the context manager --------------------------------------------------------------

    def __enter__(self) -> TaskRun:
        self._enter_once()
        if self.track_started:
            runnable = self._store(self._started(), STARTED)
        else:
            runnable = self.backend.get_state(self.task_id) not in READY_STATES
        if not runnable:
            self._refuse(self.backend.get_state(self.task_id))
        return self._activate()

    async def __aenter__(self) -> TaskRun:
        self._enter_once()
        if self.track_started:
            runnable = await self._astore(self._started(), STARTED)
        else:
            runnable = (await self._astate()) not in READY_STATES
        if not runnable:
            self._refuse(await self._astate())
        return self._activate()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()
        try:
            self._store(*self._outcome(exc))
        except EncodeError as error:
            self._store(*self._unstorable(error))
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()
        try:
            await self._astore(*self._outcome(exc))
        except EncodeError as error:
            await self._astore(*self._unstorable(error))
            raise

    # --- what to store, decided once for both ------------------------------------------------

    def _enter_once(self) -> None:
        if self._entered:
            raise RuntimeError(f"{self!r} was entered already; a run is used once")
        self._entered = True

    @staticmethod
    def _started() -> dict[str, Any]:
        return {"pid": os.getpid(), "hostname": socket.gethostname()}

    def _activate(self) -> TaskRun:
        self._stack.enter_context(running_task(self.task_id))
        self._stack.callback(_current_run.reset, _current_run.set(self))
        return self

    def _refuse(self, state: str) -> NoReturn:
        if state == REVOKED:
            raise TaskRevokedError(f"task {self.task_id!r} was revoked before it started")
        raise ResultStoreError(
            f"task {self.task_id!r} already finished ({state}); a task id is run once"
        )

    @staticmethod
    def _progress(state: str, meta: Mapping[str, Any] | None) -> dict[str, Any]:
        if state in READY_STATES:
            raise ValueError(
                f"update_state({state!r}) would end the task; return the value, raise, "
                "or raise TaskRevokedError instead"
            )
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
        return dict(meta or {})

    def _outcome(self, exc: BaseException | None) -> tuple[Any, str, str | None]:
        """The value, state and traceback that end the run."""
        if exc is None:
            return self.result, SUCCESS, None
        if isinstance(exc, TaskRevokedError):
            return exc, REVOKED, None
        if isinstance(exc, Exception):
            return exc, FAILURE, None
        lost = WorkerLostError(f"task {self.task_id!r} was interrupted by {type(exc).__name__}")
        return lost, FAILURE, "".join(format_exception(exc))

    @staticmethod
    def _unstorable(error: EncodeError) -> tuple[Any, str, str | None]:
        # The task ran, but its value cannot be stored: say so in the result, or it
        # would read STARTED forever.
        return error, FAILURE, None

    def _store(self, value: Any, state: str, traceback: str | None = None) -> bool:
        written = self.backend.store_result(
            self.task_id, value, state, traceback, request=self.request
        )
        if written:
            self.state = state
        return written

    async def _astore(self, value: Any, state: str, traceback: str | None = None) -> bool:
        written = await self.backend.astore_result(
            self.task_id, value, state, traceback, request=self.request
        )
        if written:
            self.state = state
        return written

    async def _astate(self) -> str:
        return (await self.backend.aget_task_meta(self.task_id)).status


def _storable(backend: Backend, request: TaskInfo) -> TaskInfo:
    """The request with arguments the serializer cannot encode stored as their repr.

    With result_extended the arguments go with every state: one that does not
    encode would make every store of the run fail, and the task read PENDING.
    """
    if not backend.config.extended:
        return request
    try:
        backend.codec.dumps([request.args, request.kwargs], "the task's arguments")
    except EncodeError:
        args = [repr(arg) for arg in request.args or ()]
        kwargs = {str(k): repr(v) for k, v in (request.kwargs or {}).items()}
        return replace(request, args=args, kwargs=kwargs)
    return request
