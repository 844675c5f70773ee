"""The waiting half of :class:`Backend`: reads of many ids, waits, watches, and the hub.

Each Backend has one hub per process (see _waiting): every wait and watch of the
backend shares its one channel, the plugin's push channel or the core's poller.
Nothing a channel's thread holds may hold the Backend, or a Backend dropped
without ``close()`` would never be collected and its thread and connection would
live on: the hub reaches the plugin's hooks, not the Backend, and a finalizer
closes what a dropped Backend leaves open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._args import DEFAULT_INTERVAL, unique_ids, validate_task_id
from ._backend_plugin import Parts, PluginHost
from ._hookspecs import NotifyChannel, OnChange
from ._meta import TaskMeta
from ._plugins import Capability
from ._polling import PollingChannel
from ._wait import (
    AsyncReadyIterator,
    OnMessage,
    Plan,
    Progress,
    ReadyIterator,
    arun,
    push_plan,
    run,
)
from ._waiting import WaitHub, closed_error
from ._watch import Watch, WatchCallback


class Waits(PluginHost):
    """Mixed into :class:`Backend`."""

    _hub: WaitHub
    _dropped: weakref.finalize[Any, Any]

    def _start_hub(self) -> None:
        """A hub for this process, and what closes it if the Backend is dropped unclosed."""
        if Capability.PUSH in self.capabilities:
            me = weakref.ref(self)
            self._hub = WaitHub(lambda on_change: _notify(me, on_change))
        else:
            # Without push the core is the channel: one poller for every wait of this
            # backend in this process, reading all their ids in one round trip.
            read = weakref.WeakMethod(self._read)
            name = f"resultstore-poll {self.url.masked}"
            self._hub = WaitHub(lambda on_change: PollingChannel(read, on_change, name))
        self._parts.hub = self._hub
        self._dropped = weakref.finalize(self, _close_dropped, self._parts)
        self._dropped.atexit = False  # at exit the process takes its sockets along
        _live_backends.add(self)

    def _read(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        if not task_ids:
            return {}
        if len(task_ids) > 1 and Capability.GET_MANY in self.capabilities:
            return self._hook.get_many(task_ids=task_ids) or {}
        metas = [self._get(task_id=task_id) for task_id in task_ids]
        return {t: m for t, m in zip(task_ids, metas, strict=True) if m is not None}

    async def _aread(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        if not task_ids:
            return {}
        if Capability.ASYNC not in self.capabilities:
            return await asyncio.to_thread(self._read, task_ids)
        if len(task_ids) > 1 and Capability.GET_MANY in self.capabilities:
            return await self._hook.async_get_many(task_ids=task_ids) or {}
        metas = [await self._hook.async_get(task_id=task_id) for task_id in task_ids]
        return {t: m for t, m in zip(task_ids, metas, strict=True) if m is not None}

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = DEFAULT_INTERVAL,
        on_message: OnMessage | None = None,
    ) -> TaskMeta:
        """Block until ``task_id`` is ready and return its meta (TimeoutError at the deadline)."""
        with self.iter_ready([task_id], timeout, interval, on_message) as ready:
            return next(ready)

    def iter_ready(
        self,
        task_ids: Iterable[str],
        timeout: float | None = None,
        interval: float = DEFAULT_INTERVAL,
        on_message: OnMessage | None = None,
    ) -> ReadyIterator:
        """Yield the metas of ``task_ids`` as each becomes ready (use as a context manager).

        The wait sleeps until the plugin's push channel wakes it; a plugin without
        push is polled for it by the backend's one poller (from 1 ms after a new
        wait, backing off to 0.1 s; ``interval`` is accepted for Celery and not
        used). ``timeout`` is one deadline for all ids.
        """
        plan, deadline = self._wait_plan(task_ids, timeout, interval, on_message)
        return ReadyIterator(run(plan, self._read, self._hub, deadline))

    def aiter_ready(
        self,
        task_ids: Iterable[str],
        timeout: float | None = None,
        interval: float = DEFAULT_INTERVAL,
        on_message: OnMessage | None = None,
    ) -> AsyncReadyIterator:
        """:meth:`iter_ready` for coroutines: ``async for`` (and ``async with``) over the metas.

        Wake-ups come through the same channel (or poller) as the threads' (no
        thread and no poll per waiter); reads use the plugin's async twin or a
        worker thread. A cancelled or timed-out wait leaves no subscription behind.
        """
        plan, deadline = self._wait_plan(task_ids, timeout, interval, on_message)
        return AsyncReadyIterator(arun(plan, self._aread, self._hub.for_coroutines(), deadline))

    def watch(self, callback: WatchCallback) -> Watch:
        """Hear of changes of ids, on the backend's shared channel: ``watch.add(ids)``,
        ``watch.discard(ids)``, ``watch.close()``; see :class:`Watch`.

        For hosts with a consumer loop of their own (Celery's result consumer): the
        callback ``callback(task_id, meta_or_None)`` runs on the channel's thread.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        return Watch(self._hub, callback, validate_task_id)

    def _wait_plan(
        self,
        task_ids: Iterable[str],
        timeout: float | None,
        interval: float,
        on_message: OnMessage | None,
    ) -> tuple[Plan, float | None]:
        """The checked arguments' wait plan, and its deadline."""
        ids = unique_ids(task_ids)
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
            if not timeout >= 0:
                raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
            if timeout > threading.TIMEOUT_MAX:
                timeout = None  # longer than a lock can wait (inf): wait without a deadline
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"interval must be a number of seconds, got {interval!r}")
        if interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        hint = (
            f"{self.url.masked} keeps results inside one process: a result stored by "
            "another process is never seen here"
            if self.process_local
            else None
        )
        progress = Progress(ids, timeout, on_message, hint)
        return push_plan(progress, deadline, repr(self)), deadline

    def waiting_ids(self) -> frozenset[str]:
        """Ids that some thread or coroutine in this process is waiting on (or watching) now."""
        return self._hub.waiting_ids()


def _notify(backend: weakref.ref[Waits], on_change: OnChange) -> NotifyChannel:
    """Open the plugin's push channel (the hub holds the Backend only weakly)."""
    owner = backend()
    if owner is None:
        raise closed_error()
    channel: NotifyChannel = owner._hook.notify(on_change=on_change)
    return channel


def _close_dropped(parts: Parts) -> None:
    """A Backend was collected without ``close()``: close its channel and plugin. In a
    thread of its own: a collection can run on any thread, the channel's own included,
    which could not join itself."""

    def close() -> None:
        parts.hub.close()
        if parts.hooks is not None:
            parts.hooks.close()

    # RuntimeError: the interpreter is shutting down, and takes them along.
    with contextlib.suppress(RuntimeError):
        threading.Thread(target=close, name="resultstore-close-dropped", daemon=True).start()


# After a fork the child must not share the parent's push channel or poller (their
# threads did not survive, a socket is the parent's) nor the parent's waiters; and
# the parent's channel must never be closed from the child (that would shut the
# parent's socket down).
_live_backends: weakref.WeakSet[Waits] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for backend in list(_live_backends):
        backend._dropped.detach()
        backend._forked()
        backend._start_hub()


os.register_at_fork(after_in_child=_reset_after_fork)
