"""The wait loops: push (sleep on the hub, wake on a change) and polling (backoff from 1 ms).

Both yield each task's meta as it becomes ready and end with one deadline for
all ids. ``read(ids)`` is the backend's one-round-trip read of many ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from ._errors import BackendUnavailable, ResultStoreError, TimeoutError
from ._meta import TaskMeta
from ._states import PENDING
from ._waiting import Waiter, WaitHub

FIRST_POLL_DELAY = 0.001

Read = Callable[[Sequence[str]], Mapping[str, TaskMeta]]
OnMessage = Callable[[TaskMeta], None]


class Progress:
    """What a wait has seen so far: the ids still pending and the last meta of each."""

    def __init__(
        self, ids: Sequence[str], timeout: float | None, on_message: OnMessage | None
    ) -> None:
        self.pending = dict.fromkeys(ids)
        self.seen: dict[str, TaskMeta] = {}
        self.timeout = timeout
        self.on_message = on_message

    def settle(self, found: Mapping[str, TaskMeta | None]) -> Iterator[TaskMeta]:
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
            return TimeoutError(
                f"task {ids[0]!r} was not ready within {self.timeout:g} s (state {state})"
            )
        shown = ", ".join(repr(t) for t in ids[:5]) + (", ..." if len(ids) > 5 else "")
        return TimeoutError(f"{len(ids)} tasks were not ready within {self.timeout:g} s: {shown}")


def push_wait(
    hub: WaitHub, read: Read, owner: str, progress: Progress, deadline: float | None
) -> Iterator[TaskMeta]:
    # What is ready already needs no subscription: one read, then subscribe the rest.
    yield from progress.settle(read(list(progress.pending)))
    if not progress.pending:
        return
    waiter = Waiter()
    hub.add(waiter, list(progress.pending))
    try:
        # Subscribed first, read again: a result stored before the subscription
        # took effect is found by this read, one stored after it wakes the waiter.
        found: Mapping[str, TaskMeta | None] = read(list(progress.pending))
        while True:
            for meta in progress.settle(found):
                hub.remove(waiter, [meta.task_id])
                yield meta
            if not progress.pending:
                return
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                yield from _last_read(read, progress)
                return
            changed = waiter.wait(remaining)
            if waiter.closed:
                raise ResultStoreError(
                    f"{owner} was closed while waiting for {list(progress.pending)}"
                )
            unknown = [t for t, m in changed.items() if m is None and t in progress.pending]
            try:
                reread = read(unknown)
            except BackendUnavailable:
                # A wake-up is a hint, and the engine may go away again right after
                # it (a re-check after a reconnect): that must not end a wait before
                # its deadline. The channel re-checks after its next reconnect, and
                # the read at the deadline is the backstop.
                reread = {}
            found = {**{t: m for t, m in changed.items() if m is not None}, **reread}
    finally:
        hub.remove(waiter, progress.pending)


def _last_read(read: Read, progress: Progress) -> Iterator[TaskMeta]:
    """At the deadline, one more read: a notification lost on the way (a reconnect)
    must not turn a stored result into a timeout. If the engine is unreachable for
    it, the deadline has still passed: the wait ends with its timeout error (the
    cause chained), not with the read's error after the plugin's retries."""
    try:
        last = read(list(progress.pending))
    except BackendUnavailable as exc:
        raise progress.timeout_error() from exc
    yield from progress.settle(last)
    if progress.pending:
        raise progress.timeout_error()


def poll_wait(
    read: Read, progress: Progress, deadline: float | None, interval: float
) -> Iterator[TaskMeta]:
    delay = FIRST_POLL_DELAY
    while True:
        yield from progress.settle(read(list(progress.pending)))
        if not progress.pending:
            return
        remaining = _remaining(deadline)
        if remaining is not None and remaining <= 0:
            raise progress.timeout_error()
        time.sleep(delay if remaining is None else min(delay, remaining))
        delay = min(delay * 2, interval)


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


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()
