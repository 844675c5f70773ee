"""A small executor that makes ``task.delay()`` real, for scripts, demos and tests.

It is not a task queue: no broker, no retries, no scheduling. A decorated
function runs on a thread or process pool inside ``backend.run(...)`` (the
provider API a real worker uses), and the caller gets an ``AsyncResult``.
Workers and client meet only in the backend: a process pool needs one that
processes share (``redis://``, ``db+...``), not ``memory://``.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor as _PoolExecutor
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, ParamSpec, TypeVar

from ._backend import Backend
from ._errors import WorkerLostError
from ._meta import TaskInfo
from ._plugins import Capability
from ._provider import current_run
from ._result import AsyncResult, GroupResult
from ._states import READY_STATES

P = ParamSpec("P")
R = TypeVar("R")
Pool = Literal["thread", "process"]

log = logging.getLogger("resultstore.executor")

# How often a task that never ran is sent to a fresh pool after its pool broke: a pool
# that breaks every time (a worker that cannot start) must end in an error.
_RESENDS = 3


class Task(Generic[P, R]):
    """A function bound to an :class:`Executor`: call it directly, or ``.delay()`` it."""

    def __init__(self, fn: Callable[P, R], executor: Executor | None, name: str) -> None:
        self.fn = fn
        self.executor = executor
        self.name = name
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run in this thread, like the plain function (nothing is stored)."""
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
    ) -> AsyncResult:
        """Submit one run; ``task_id`` defaults to a new UUID."""
        return self._bound().submit(self, tuple(args), dict(kwargs or {}), task_id)

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature:
        """A call to make later, for :meth:`Executor.group`."""
        return Signature(self, args, kwargs)

    def _bound(self) -> Executor:
        if self.executor is None:
            raise RuntimeError(f"task {self.name!r} is not bound to an executor here")
        return self.executor

    def __reduce__(self) -> str | tuple[Any, ...]:
        # A process worker gets the task by reference, as pickle sends functions.
        # Decorated at module level, the module's attribute is this Task; else the
        # plain function is the module's attribute and travels instead.
        name = self.fn.__qualname__
        if getattr(sys.modules.get(self.fn.__module__), name, None) is self:
            return name
        return (Task, (self.fn, None, self.name))

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


@dataclass(frozen=True)
class Signature:
    """A task with its arguments, not yet submitted."""

    task: Task[Any, Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class Executor:
    """Runs tasks on a thread pool (``pool="thread"``) or process pool (``"process"``).

    >>> with Executor(Backend("memory://")) as executor:
    ...     square = executor.task(lambda n: n * n, name="square")
    ...     square.delay(4).get(timeout=5)
    16
    """

    def __init__(
        self,
        backend: Backend,
        *,
        pool: Pool = "thread",
        max_workers: int | None = None,
        track_started: bool = True,
        mp_context: str = "spawn",
    ) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a resultstore.Backend, got {type(backend).__name__}")
        if pool not in ("thread", "process"):
            raise ValueError(f"pool must be 'thread' or 'process', got {pool!r}")
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
        ):
            raise ValueError(f"max_workers must be a positive int or None, got {max_workers!r}")
        if pool == "process" and backend.process_local:
            raise ValueError(
                f"{backend.url.masked!r} keeps results inside one process, so process "
                "workers could not share them; use pool='thread', or a backend that "
                "processes share (redis://, db+sqlite:///FILE, db+postgresql://...)"
            )
        self.backend = backend
        self.pool = pool
        self.max_workers = max_workers
        self.track_started = track_started
        self._mp_context = multiprocessing.get_context(mp_context)
        self._lock = threading.Lock()
        self._executor: _PoolExecutor | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Executor {self.pool} pool on {self.backend!r}>"

    def task(
        self, fn: Callable[P, R] | None = None, *, name: str | None = None
    ) -> Any:  # Task[P, R], or a decorator making one when called with name= only
        """Decorator: ``@executor.task`` or ``@executor.task(name="...")``."""

        def bind(fn: Callable[P, R]) -> Task[P, R]:
            if not callable(fn):
                raise TypeError(f"executor.task decorates a function, got {fn!r}")
            return Task(fn, self, name or f"{fn.__module__}.{fn.__qualname__}")

        return bind if fn is None else bind(fn)

    def submit(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        task_id: str | None = None,
        group_id: str | None = None,
    ) -> AsyncResult:
        if self.pool == "process":
            _check_sendable(task)
        result = AsyncResult(task_id or str(uuid.uuid4()), self.backend)
        info = TaskInfo(name=task.name, args=args, kwargs=kwargs, group_id=group_id)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is shut down")
            self._submit_locked(task, result.id, info, resends=0)
        return result

    def _submit_locked(
        self, task: Task[Any, Any], task_id: str, info: TaskInfo, resends: int
    ) -> None:
        pool = self._pool()
        try:
            future = self._send(pool, task, task_id, info)
        except BrokenProcessPool:  # a worker died while idle: start a fresh pool
            self._executor = None
            pool = self._pool()
            future = self._send(pool, task, task_id, info)
        future.add_done_callback(lambda f: self._settle(f, pool, task, task_id, info, resends))

    def _send(
        self, pool: _PoolExecutor, task: Task[Any, Any], task_id: str, info: TaskInfo
    ) -> Future[None]:
        if self.pool == "thread":
            return pool.submit(_run, self.backend, task.fn, task_id, info, self.track_started)
        return pool.submit(_run_in_process, task, task_id, info, self.track_started)

    def group(self, signatures: Iterable[Signature], group_id: str | None = None) -> GroupResult:
        """Submit every signature as one group; saved when the backend keeps groups."""
        group_id = group_id or str(uuid.uuid4())
        members = [
            self.submit(sig.task, sig.args, sig.kwargs, group_id=group_id) for sig in signatures
        ]
        group = GroupResult(group_id, members, self.backend)
        if Capability.GROUPS in self.backend.capabilities:
            group.save()
        return group

    def _pool(self) -> _PoolExecutor:
        if self._executor is None:
            if self.pool == "thread":
                self._executor = ThreadPoolExecutor(
                    self.max_workers, thread_name_prefix="resultstore-worker"
                )
            else:
                self._executor = ProcessPoolExecutor(
                    self.max_workers,
                    mp_context=self._mp_context,
                    initializer=_init_process,
                    initargs=(self.backend.arguments,),
                )
        return self._executor

    def _settle(
        self,
        future: Future[None],
        pool: _PoolExecutor,
        task: Task[Any, Any],
        task_id: str,
        info: TaskInfo,
        resends: int,
    ) -> None:
        """A run that ended without storing its end: cancelled at shutdown, a dead
        process, a failed store. Its result must not read PENDING or STARTED forever."""
        try:
            if future.cancelled():
                self.backend.revoke(task_id, "the executor shut down before the task ran")
                return
            exc = future.exception()
            if exc is None:
                return
            if isinstance(exc, BrokenProcessPool):
                with self._lock:  # the next submit starts a fresh pool (not a newer one)
                    if self._executor is pool:
                        self._executor = None
                    # Queued on a pool that broke before any worker took it: it never
                    # ran (a run stores STARTED before it calls the function), so it
                    # goes to a fresh pool instead of failing.
                    if (
                        not self._closed
                        and self.track_started
                        and resends < _RESENDS
                        and not self.backend.exists(task_id)
                    ):
                        self._submit_locked(task, task_id, info, resends + 1)
                        return
                exc = WorkerLostError(
                    f"the worker process running task {task_id!r} exited abruptly"
                )
            self.backend.mark_as_failure(task_id, exc, request=info)
        except Exception:
            log.exception("could not record the end of task %r", task_id)

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting tasks; with ``wait``, return when the running ones are done."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def _check_sendable(task: Task[Any, Any]) -> None:
    try:
        pickle.dumps(task)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise TypeError(
            f"task {task.name!r} cannot be sent to a worker process ({exc}); "
            "define its function at module level, or use pool='thread'"
        ) from None


def _run(
    backend: Backend, fn: Callable[..., Any], task_id: str, info: TaskInfo, track_started: bool
) -> None:
    """One run in a worker: the provider API stores the outcome; nothing comes back."""
    run = backend.run(task_id, info, track_started=track_started)
    try:
        run.call(fn, *(info.args or ()), **(info.kwargs or {}))
    except Exception:
        if run.state not in READY_STATES:
            raise  # nothing recorded this end: the executor's done callback will
        # The task's own failure, recorded: the worker carries on.


_process_backend: Backend | None = None


def _init_process(arguments: dict[str, Any]) -> None:
    global _process_backend
    _process_backend = Backend(**arguments)
    # SIGTERM ends the run through the provider API (FAILURE, WorkerLostError)
    # instead of killing the process with the task reading STARTED.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    if current_run() is None:  # idle: die as SIGTERM means
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    raise SystemExit(f"worker process {os.getpid()} received SIGTERM")


def _run_in_process(
    task: Task[Any, Any], task_id: str, info: TaskInfo, track_started: bool
) -> None:
    assert _process_backend is not None, "the process pool's initializer did not run"
    try:
        _run(_process_backend, task.fn, task_id, info, track_started)
    except SystemExit:
        # SIGTERM during the task: the run recorded it; now end this process as
        # SIGTERM means (the pool's worker loop would otherwise carry on).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise
