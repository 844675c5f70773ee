"""The waiting side of push: one channel per backend, many waiters, nothing left behind.

The hub keeps, per task id, the set of waiters that want it. The first waiter
for an id subscribes it on the plugin's channel and the last one to leave
unsubscribes it, so a timed-out, finished or abandoned wait leaves no
subscription and no reference. Waiters only record "this id changed" (with the
new meta when the plugin sent it); the wait loop then decides what to read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Protocol

from ._errors import ResultStoreError
from ._hookspecs import NotifyChannel, OnChange
from ._meta import TaskMeta

if TYPE_CHECKING:
    from ._offloop import OffLoopHub


class Wakeable(Protocol):
    """What the hub holds: a thread's Waiter or a coroutine's AsyncWaiter."""

    def wake(self, task_id: str, meta: TaskMeta | None) -> None: ...

    def close(self) -> None: ...


Entries = Sequence[tuple[Wakeable, Collection[str]]]


def closed_error() -> ResultStoreError:
    return ResultStoreError("the backend is closed: open a new Backend to wait")


class Waiter:
    """A blocking waiter for one or more ids, woken from any thread."""

    __slots__ = ("_changed", "_event", "_lock", "closed")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._changed: dict[str, TaskMeta | None] = {}
        self.closed = False

    def close(self) -> None:
        """Wake the wait for good: its backend is closing."""
        with self._lock:
            self.closed = True
            self._event.set()

    def wake(self, task_id: str, meta: TaskMeta | None) -> None:
        with self._lock:
            self._changed[task_id] = meta
            self._event.set()

    def wait(self, timeout: float | None) -> dict[str, TaskMeta | None]:
        """Block until woken or ``timeout``; return what changed (empty on timeout).

        Clearing the event and taking the changes happen under one lock, so a
        wake-up that lands at any moment is seen now or by the next wait.
        """
        self._event.wait(timeout)
        with self._lock:
            changed, self._changed = self._changed, {}
            self._event.clear()
        return changed


class WaitHub:
    """Per-backend registry of waiters over one lazily opened notify channel."""

    def __init__(self, open_channel: Callable[[OnChange], NotifyChannel]) -> None:
        self._open_channel = open_channel
        # Reentrant: a garbage collection inside a channel call can finalize an
        # abandoned wait, whose clean-up comes back here on the same thread.
        self._lock = threading.RLock()
        # Copy-on-write frozensets, so that _on_change reads them without the lock:
        # a plugin's listener may deliver while a subscribe waits on that listener.
        self._waiters: dict[str, frozenset[Wakeable]] = {}
        self._channel: NotifyChannel | None = None
        self._in_channel_call = False
        self._deferred: list[str] = []
        self._closed = False
        self._offloop: OffLoopHub | None = None
        # Removals asked for while another thread held the lock (see remove_soon).
        self._soon_lock = threading.Lock()
        self._soon: list[tuple[Wakeable, Collection[str]]] = []

    def add(self, waiter: Wakeable, task_ids: Collection[str]) -> None:
        self.add_many([(waiter, task_ids)])

    def add_many(self, entries: Entries) -> None:
        """Register every waiter with its ids; one subscribe for the ids nobody waited on."""
        # Subscribe and unsubscribe under the lock: their order on the channel must
        # be the order the hub decided them in, or a late unsubscribe could undo a
        # newer waiter's subscribe.
        with self._lock:
            if self._closed:  # a closed backend must not open a new channel
                raise closed_error()
            first = []
            for waiter, task_ids in entries:
                for task_id in task_ids:
                    waiters = self._waiters.get(task_id, frozenset())
                    if not waiters:
                        first.append(task_id)
                    self._waiters[task_id] = waiters | {waiter}
            if not first:
                self._flush_soon()
                return
            try:
                if self._channel is None:
                    self._channel = self._open_channel(self._on_change)
                self._call(self._channel.subscribe, first)
            except BaseException:
                for waiter, task_ids in entries:
                    self._discard(waiter, task_ids)
                raise
            finally:
                self._flush_soon()

    def remove(self, waiter: Wakeable, task_ids: Collection[str]) -> None:
        self.remove_many([(waiter, task_ids)])

    def remove_many(self, entries: Entries) -> None:
        with self._lock:
            self._remove_locked(entries)
            self._flush_soon()

    def remove_soon(self, waiter: Wakeable, task_ids: Collection[str]) -> None:
        """Remove without ever waiting for the lock (from ``__del__``, a GC callback, a
        channel's thread): now if it is free, else by the thread that holds it."""
        if not task_ids:
            return
        with self._soon_lock:
            self._soon.append((waiter, task_ids))
        # The holder flushes before it lets go; if it let go between our append and
        # its last look, the lock is free now and we flush ourselves.
        if self._lock.acquire(blocking=False):
            try:
                self._flush_soon()
            finally:
                self._lock.release()

    def _flush_soon(self) -> None:
        """With the lock held: make the removals queued by :meth:`remove_soon`."""
        while self._soon:
            with self._soon_lock:
                entries, self._soon = self._soon, []
            self._remove_locked(entries)

    def try_remove(self, waiter: Wakeable, task_ids: Collection[str]) -> bool:
        """Remove now if the lock is free, else return False (an event loop must not wait
        for a subscribe in another thread to be confirmed)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._remove_locked([(waiter, task_ids)])
        finally:
            self._lock.release()
        return True

    def _remove_locked(self, entries: Entries) -> None:
        last = [t for waiter, task_ids in entries for t in self._discard(waiter, task_ids)]
        if not last or self._channel is None:
            return
        if self._in_channel_call:
            # Re-entered from inside a channel call: never call the channel
            # re-entrantly; the outer call unsubscribes these when it returns.
            self._deferred.extend(last)
        else:
            self._call(self._channel.unsubscribe, last)

    def for_coroutines(self) -> OffLoopHub:
        """This hub as coroutines use it: its blocking calls made off the event loop."""
        from ._offloop import OffLoopHub

        with self._lock:
            if self._offloop is None:
                self._offloop = OffLoopHub(self)
            return self._offloop

    def _call(self, method: Callable[[list[str]], None], task_ids: list[str]) -> None:
        """Call the channel with the lock held, then flush unsubscribes deferred meanwhile."""
        self._in_channel_call = True
        try:
            method(task_ids)
            while self._deferred and self._channel is not None:
                idle = [t for t in self._deferred if t not in self._waiters]
                self._deferred.clear()
                if idle:
                    self._channel.unsubscribe(idle)
        finally:
            self._in_channel_call = False

    def _discard(self, waiter: Wakeable, task_ids: Collection[str]) -> list[str]:
        last = []
        for task_id in task_ids:
            waiters = self._waiters.get(task_id)
            if waiters is None or waiter not in waiters:
                continue
            if len(waiters) > 1:
                self._waiters[task_id] = waiters - {waiter}
            else:
                del self._waiters[task_id]
                last.append(task_id)
        return last

    def _on_change(self, task_id: str, meta: TaskMeta | None) -> None:
        for waiter in self._waiters.get(task_id, ()):
            waiter.wake(task_id, meta)

    def waiting_ids(self) -> frozenset[str]:
        """The ids someone is waiting on now (for tests and diagnostics)."""
        with self._lock:
            return frozenset(self._waiters)

    def close(self) -> None:
        """Close the channel and release every blocked waiter (they raise)."""
        with self._lock:
            self._closed = True
            channel, self._channel = self._channel, None
            waiters: frozenset[Wakeable] = frozenset().union(*self._waiters.values())
            self._waiters.clear()
            offloop = self._offloop
        for waiter in waiters:
            waiter.close()
        if offloop is not None:
            offloop.close()
        if channel is not None:
            channel.close()
