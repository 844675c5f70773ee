"""The wait loop: read, subscribe on the hub, sleep until woken, read what changed.

Every wait takes it, with or without push in the plugin (without it, the
hub's channel is the core's shared poller, see _polling). The loop is written
once, as a plan: a generator that says what to do next (read these ids,
subscribe, wait for a wake-up, hand out a ready meta) and is sent the outcome,
or has the error thrown in. Two drivers carry plans
out: :func:`run` blocks a thread, :func:`arun` awaits the same steps without
blocking the event loop. Both yield each task's meta as it becomes ready and
end with one deadline for all ids.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _deadline
from ._errors import BackendUnavailable, ResultStoreError, TimeoutError
from ._meta import TaskMeta
from ._offloop import AsyncWaiter, OffLoopHub
from ._states import PENDING
from ._waiting import Waiter, WaitHub

Read = Callable[[Sequence[str]], Mapping[str, TaskMeta]]
AsyncRead = Callable[[Sequence[str]], Awaitable[Mapping[str, TaskMeta]]]
OnMessage = Callable[[TaskMeta], None]
Found = Mapping[str, "TaskMeta | None"]
T = TypeVar("T")


class Progress:
    """What a wait has seen so far: the ids still pending and the last meta of each."""

    def __init__(
        self,
        ids: Sequence[str],
        timeout: float | None,
        on_message: OnMessage | None,
        hint: str | None = None,
    ) -> None:
        self.pending = dict.fromkeys(ids)
        self.seen: dict[str, TaskMeta] = {}
        self.timeout = timeout
        self.on_message = on_message
        self.hint = hint  # said when a timed-out id was never seen (e.g. memory://)

    def settle(self, found: Found) -> Iterator[TaskMeta]:
        """Yield the ready ones among ``found`` (dropping them from ``pending``)."""
        for task_id, meta in found.items():
            if meta is None or task_id not in self.pending or self.seen.get(task_id) == meta:
                continue
            self.seen[task_id] = meta
            if self.on_message is not None:
                self.on_message(meta)
            if meta.ready:
                del self.pending[task_id]
                yield meta

    def timeout_error(self) -> TimeoutError:
        ids = list(self.pending)
        if len(ids) == 1:
            state = self.seen[ids[0]].status if ids[0] in self.seen else PENDING
            message = f"task {ids[0]!r} was not ready within {self.timeout:g} s (state {state})"
        else:
            shown = ", ".join(repr(t) for t in ids[:5]) + (", ..." if len(ids) > 5 else "")
            message = f"{len(ids)} tasks were not ready within {self.timeout:g} s: {shown}"
        if self.hint and any(t not in self.seen for t in ids):
            message += f"; {self.hint}"
        return TimeoutError(message)


# --- the steps a plan asks for --------------------------------------------------------


@dataclass(frozen=True)
class ReadStep:
    """Read these ids; the reply is ``{id: meta}`` of the stored ones."""

    ids: list[str]


@dataclass(frozen=True)
class Subscribe:
    """Register one waiter for these ids on the hub."""

    ids: list[str]


@dataclass(frozen=True)
class WakeUp:
    """Wait for the waiter until woken or ``timeout``: the reply is what changed
    (empty on timeout), or ``None`` when the backend was closed meanwhile."""

    timeout: float | None


@dataclass(frozen=True)
class Ready:
    """Hand this meta to the caller (its id needs no subscription any more)."""

    meta: TaskMeta


Step = ReadStep | Subscribe | WakeUp | Ready
Plan = Generator[Step, Any, None]


# --- the plans ------------------------------------------------------------------------


def push_plan(progress: Progress, deadline: float | None, owner: str) -> Plan:
    # What is ready already needs no subscription: one read, then subscribe the rest.
    found = yield from _in_time(progress, deadline, ReadStep(list(progress.pending)))
    yield from _ready(progress, found)
    if not progress.pending:
        return
    yield from _in_time(progress, deadline, Subscribe(list(progress.pending)))
    # Subscribed first, read again: a result stored before the subscription
    # took effect is found by this read, one stored after it wakes the waiter.
    # Only a ready state is taken from this read: an unfinished one may be newer
    # than changes the channel has yet to deliver, and ``on_message`` would see
    # progress go backwards (3, 2, 3). From here the channel alone reports
    # unfinished states, in the order they were stored.
    reread = yield from _in_time(progress, deadline, ReadStep(list(progress.pending)))
    found = {t: m for t, m in reread.items() if m is not None and m.ready}
    while True:
        yield from _ready(progress, found)
        if not progress.pending:
            return
        remaining = _remaining(deadline)
        if remaining is not None and remaining <= 0:
            yield from _last_read(progress)
            return
        changed = yield WakeUp(remaining)
        if changed is None:
            raise ResultStoreError(f"{owner} was closed while waiting for {list(progress.pending)}")
        unknown = [t for t, m in changed.items() if m is None and t in progress.pending]
        try:
            reread = yield ReadStep(unknown)
        except BackendUnavailable:
            # A wake-up is a hint, and the engine may go away again right after
            # it (a re-check after a reconnect): that must not end a wait before
            # its deadline. The channel re-checks after its next reconnect, and
            # the read at the deadline is the backstop.
            reread = {}
        found = {**{t: m for t, m in changed.items() if m is not None}, **reread}


def _in_time(progress: Progress, deadline: float | None, step: Step) -> Generator[Step, Any, Any]:
    """One step, whose failure after the deadline is the wait's timeout: a server that
    stopped answering was cut off by the deadline (the drivers run every step under it)."""
    try:
        return (yield step)
    except BackendUnavailable as exc:
        remaining = _remaining(deadline)
        if remaining is not None and remaining <= 0:
            raise progress.timeout_error() from exc
        raise


def _ready(progress: Progress, found: Found) -> Plan:
    for meta in progress.settle(found):
        yield Ready(meta)


def _last_read(progress: Progress) -> Plan:
    """At the deadline, one more read: a notification lost on the way (a reconnect)
    must not turn a stored result into a timeout. If the engine is unreachable for
    it, the deadline has still passed: the wait ends with its timeout error (the
    cause chained), not with the read's error after the plugin's retries."""
    try:
        last = yield ReadStep(list(progress.pending))
    except BackendUnavailable as exc:
        raise progress.timeout_error() from exc
    yield from _ready(progress, last)
    if progress.pending:
        raise progress.timeout_error()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


# --- the drivers ------------------------------------------------------------------------


class _Cursor:
    """A plan's position: the next step, given the outcome of the last one."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.reply: Any = None
        self.error: Exception | None = None

    def next(self) -> Step | None:
        reply, error = self.reply, self.error
        self.reply = self.error = None
        try:
            return self.plan.throw(error) if error is not None else self.plan.send(reply)
        except StopIteration:
            return None


def run(plan: Plan, read: Read, hub: WaitHub, deadline: float | None) -> Iterator[TaskMeta]:
    """Carry ``plan`` out in this thread, each step under ``deadline`` (see _deadline)."""
    cursor = _Cursor(plan)
    waiter: Waiter | None = None
    subscribed: list[str] = []
    try:
        while (step := cursor.next()) is not None:
            if isinstance(step, Ready):
                if waiter is not None:
                    hub.remove(waiter, [step.meta.task_id])
                yield step.meta
                continue
            try:
                if isinstance(step, ReadStep):
                    with _deadline.scope(deadline):
                        cursor.reply = read(step.ids)
                elif isinstance(step, Subscribe):
                    waiter = Waiter()
                    with _deadline.scope(deadline):
                        hub.add(waiter, step.ids)
                    subscribed = step.ids
                else:
                    assert waiter is not None
                    changed = waiter.wait(step.timeout)
                    cursor.reply = None if waiter.closed else changed
            except Exception as exc:
                cursor.error = exc
    finally:
        if waiter is not None:
            hub.remove(waiter, subscribed)


async def arun(
    plan: Plan, read: AsyncRead, hub: OffLoopHub, deadline: float | None
) -> AsyncGenerator[TaskMeta, None]:
    """Carry ``plan`` out in a coroutine: every step is awaited, none blocks the loop, and
    none outlasts ``deadline`` (a coroutine can be cut off, unlike a blocked thread)."""
    cursor = _Cursor(plan)
    waiter: AsyncWaiter | None = None
    subscribed: list[str] = []
    try:
        while (step := cursor.next()) is not None:
            if isinstance(step, Ready):
                if waiter is not None:
                    await hub.remove(waiter, [step.meta.task_id])
                yield step.meta
                continue
            try:
                if isinstance(step, ReadStep):
                    with _deadline.scope(deadline):
                        cursor.reply = await _bounded(read(step.ids), deadline)
                elif isinstance(step, Subscribe):
                    waiter = AsyncWaiter(asyncio.get_running_loop())
                    with _deadline.scope(deadline):
                        await _bounded(hub.add(waiter, step.ids), deadline)
                    subscribed = step.ids
                else:
                    assert waiter is not None
                    changed = await waiter.wait(step.timeout)
                    cursor.reply = None if waiter.closed else changed
            except Exception as exc:
                cursor.error = exc
    finally:
        if waiter is not None and subscribed:
            await hub.remove(waiter, subscribed)


async def _bounded(step: Awaitable[T], deadline: float | None) -> T:
    if deadline is None:
        return await step
    seconds = max(deadline - time.monotonic(), _deadline.GRACE)
    try:
        if sys.version_info >= (3, 11):  # no task of its own, unlike wait_for
            async with asyncio.timeout(seconds):
                return await step
        return await asyncio.wait_for(step, seconds)
    except asyncio.TimeoutError:
        raise BackendUnavailable(
            f"the backend did not answer within the wait's timeout ({seconds:.2f} s left)"
        ) from None


class ReadyIterator:
    """An iterator that also closes the wait (and its subscriptions) on ``with`` exit."""

    def __init__(self, gen: Iterator[TaskMeta]) -> None:
        self._gen = gen

    def __iter__(self) -> ReadyIterator:
        return self

    def __next__(self) -> TaskMeta:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()  # type: ignore[attr-defined]

    def __enter__(self) -> ReadyIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncReadyIterator:
    """The async twin of :class:`ReadyIterator`: ``async for``, closed on ``async with`` exit."""

    def __init__(self, gen: AsyncGenerator[TaskMeta, None]) -> None:
        self._gen = gen

    def __aiter__(self) -> AsyncReadyIterator:
        return self

    async def __anext__(self) -> TaskMeta:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def __aenter__(self) -> AsyncReadyIterator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
