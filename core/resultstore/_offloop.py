"""Push waits for coroutines: the same hub and channel as threads, never blocking the loop.

An :class:`AsyncWaiter` sits in the hub next to the threads' waiters; the
channel's listener wakes it from its own thread and the wake-up reaches the
waiter's event loop through ``call_soon_threadsafe``. Subscribing can block (a
Redis subscribe returns once the server confirmed it), so coroutines hand the
hub's calls to :class:`OffLoopHub`: one worker thread that makes them, many at a
time, in the order they were asked for.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor

from . import _deadline
from ._meta import TaskMeta
from ._waiting import Entries, WaitHub, closed_error


class AsyncWaiter:
    """A coroutine's waiter for one or more ids, woken from any thread."""

    __slots__ = ("_changed", "_future", "_lock", "closed", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._changed: dict[str, TaskMeta | None] = {}
        self._future: asyncio.Future[None] | None = None
        self.closed = False

    def close(self) -> None:
        """Wake the wait for good: its backend is closing."""
        with self._lock:
            self.closed = True
            future, self._future = self._future, None
        _resolve(self.loop, future, None)

    def wake(self, task_id: str, meta: TaskMeta | None) -> None:
        with self._lock:
            self._changed[task_id] = meta
            future, self._future = self._future, None
        _resolve(self.loop, future, None)

    async def wait(self, timeout: float | None) -> dict[str, TaskMeta | None]:
        """Wait until woken or ``timeout``; return what changed (empty on timeout).

        A wake-up that lands before the future exists is kept in ``_changed`` and
        returned at once; one that lands after finds the future (both under the lock).
        """
        with self._lock:
            if self._changed or self.closed:
                future = None
            else:
                future = self._future = self.loop.create_future()
        if future is not None:
            try:
                await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                with self._lock:
                    self._future = None
        with self._lock:
            changed, self._changed = self._changed, {}
        return changed


def _resolve(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[None] | None,
    error: BaseException | None,
) -> bool:
    """Settle ``future`` on its loop from any thread; False when that loop is closed."""
    if future is None:
        return True
    try:
        loop.call_soon_threadsafe(_settle, future, error)
    except RuntimeError:  # the loop is closed: nobody awaits the future any more
        return False
    return True


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


# A job's deadline is the one of the wait that asked for it (None: no deadline).
_Job = tuple[AsyncWaiter, Collection[str], "asyncio.Future[None]", float | None]


class OffLoopHub:
    """The hub's add and remove for coroutines, made by one worker thread.

    Everything queued while the worker is busy goes to the hub in one call: ten
    thousand awaits that start together cost a few subscribe commands. A remove
    always follows its waiter's add: a queued add is dropped instead, one in
    flight is undone by the worker once it is done.
    """

    def __init__(self, hub: WaitHub) -> None:
        self._hub = hub
        self._lock = threading.Lock()
        self._adds: dict[AsyncWaiter, _Job] = {}
        self._removes: list[_Job] = []
        self._in_flight: set[AsyncWaiter] = set()
        self._busy = False
        self._closed = False
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="resultstore-offloop")

    async def add(self, waiter: AsyncWaiter, task_ids: Collection[str]) -> None:
        """Register ``waiter``; returns once subscribed. Cancelled, it leaves nothing behind."""
        future = waiter.loop.create_future()
        with self._lock:
            self._adds[waiter] = (waiter, task_ids, future, _deadline.current())
            self._start()
        try:
            await future
        except asyncio.CancelledError:
            await self.remove(waiter, task_ids)
            raise

    async def remove(self, waiter: AsyncWaiter, task_ids: Collection[str]) -> None:
        """Unregister ``waiter`` from ``task_ids``; done (in the hub) when this returns.

        Shielded: a second cancellation ends the await, not the removal.
        """
        with self._lock:
            if self._adds.pop(waiter, None) is not None:
                return  # never reached the hub
            queue = waiter in self._in_flight
        # The usual case is quick (the channel only sends an unsubscribe): do it here
        # unless the hub is busy in another thread, which may take a round trip.
        if not queue and self._hub.try_remove(waiter, task_ids):
            return
        future = waiter.loop.create_future()
        with self._lock:
            # No deadline: a removal often comes after the wait's deadline passed.
            self._removes.append((waiter, task_ids, future, None))
            self._start()
        await asyncio.shield(future)

    def _start(self) -> None:
        """With the lock held: have the worker run what is queued."""
        if self._busy:
            return
        if self._closed:
            self._fail_queued(closed_error())
            return
        self._busy = True
        self._worker.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                adds, self._adds = list(self._adds.values()), {}
                removes, self._removes = self._removes, []
                if not adds and not removes:
                    self._busy = False
                    return
                self._in_flight = {waiter for waiter, *_ in adds}
            self._run(self._hub.remove_many, removes)
            self._run(self._hub.add_many, adds, undo_when_gone=True)
            with self._lock:
                self._in_flight = set()

    def _run(
        self, call: Callable[[Entries], None], jobs: list[_Job], undo_when_gone: bool = False
    ) -> None:
        if not jobs:
            return
        error: BaseException | None = None
        try:
            # The worker thread does not inherit the waits' context: bound the call by
            # the latest deadline of the batch, so a frozen server holds the worker no
            # longer than some wait still needs it (the plugin's own bound without one).
            with _deadline.scope(_latest(deadline for *_, deadline in jobs)):
                call([(waiter, ids) for waiter, ids, *_ in jobs])
        except BaseException as exc:
            error = exc
        for waiter, ids, future, _ in jobs:
            if not _resolve(waiter.loop, future, error) and undo_when_gone and error is None:
                # Its loop closed while the add was made: no coroutine will remove it.
                self._hub.remove(waiter, ids)

    def _fail_queued(self, error: BaseException) -> None:
        jobs = [*self._adds.values(), *self._removes]
        self._adds, self._removes = {}, []
        for waiter, _, future, _ in jobs:
            _resolve(waiter.loop, future, error)

    def close(self) -> None:
        """Stop the worker once what it runs now is done; what is queued fails."""
        with self._lock:
            self._closed = True
            if not self._busy:
                self._fail_queued(closed_error())
        self._worker.shutdown(wait=False)


def _latest(deadlines: Iterable[float | None]) -> float | None:
    """The latest of ``deadlines``; ``None`` when any of them is ``None`` (no deadline)."""
    latest: float | None = None
    for deadline in deadlines:
        if deadline is None:
            return None
        latest = deadline if latest is None else max(latest, deadline)
    return latest
