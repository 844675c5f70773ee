"""The push channel the core gives a plugin without push: one polling thread per backend.

However many threads and coroutines wait, the process reads the store once per
round, for every waited id in one many-id read, and the hub wakes the waiters
of the ids that changed, exactly as a plugin's push channel would. Rounds start
1 ms after a subscribe and back off to :data:`POLL_INTERVAL` while nothing new
is waited on; with nothing subscribed the thread sleeps without reading.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from ._hookspecs import OnChange
from ._meta import TaskMeta

log = logging.getLogger("resultstore")

FIRST_POLL_DELAY = 0.001
POLL_INTERVAL = 0.1
_JOIN_TIMEOUT = 5.0

ReadMany = Callable[[Sequence[str]], Mapping[str, TaskMeta]]


class _Seen:
    """One subscription of an id: the meta last delivered for it."""

    __slots__ = ("meta",)

    def __init__(self) -> None:
        self.meta: TaskMeta | None = None


class PollingChannel:
    """A :class:`NotifyChannel` that reads every subscribed id in one call per round."""

    def __init__(self, read_many: ReadMany, on_change: OnChange, name: str) -> None:
        self._read_many = read_many
        self._on_change = on_change
        self._name = name
        self._cond = threading.Condition()
        # A new _Seen per subscription: a round that read an id before it was
        # unsubscribed and subscribed again must not deliver that older meta.
        self._seen: dict[str, _Seen] = {}
        self._delay = FIRST_POLL_DELAY
        self._next_read = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def subscribe(self, task_ids: Collection[str]) -> None:
        with self._cond:
            for task_id in task_ids:
                self._seen[task_id] = _Seen()
            # A new wait may be for a task about to finish: poll soon again.
            self._delay = FIRST_POLL_DELAY
            self._next_read = time.monotonic() + FIRST_POLL_DELAY
            self._cond.notify()

    def unsubscribe(self, task_ids: Collection[str]) -> None:
        with self._cond:
            for task_id in task_ids:
                self._seen.pop(task_id, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._seen.clear()
            self._cond.notify()
        self._thread.join(_JOIN_TIMEOUT)

    def _run(self) -> None:
        failing = False
        while (watched := self._next_round()) is not None:
            try:
                found = self._read_many(list(watched))
            except Exception:
                # The waits' own reads report errors and deadlines; the poller only
                # keeps trying, logging once per run of failures.
                log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "polling for %s failed; retrying",
                    self._name,
                    exc_info=True,
                )
                failing = True
                found = {}
            else:
                if failing:
                    log.warning("polling for %s works again", self._name)
                failing = False
            self._end_round(watched, found)

    def _next_round(self) -> dict[str, _Seen] | None:
        """Sleep until the next round is due; the ids to read then, None once closed."""
        with self._cond:
            while not self._closed:
                wait = self._next_read - time.monotonic() if self._seen else None
                if wait is not None and wait <= 0:
                    return dict(self._seen)
                self._cond.wait(wait)
            return None

    def _end_round(self, watched: dict[str, _Seen], found: Mapping[str, TaskMeta]) -> None:
        """Deliver what changed and schedule the next round (counted from now: a slow
        read must not make the rounds run back to back)."""
        # Under the lock, so an unsubscribe and subscribe of an id cannot slip in
        # between the check and the delivery; on_change only wakes waiters.
        with self._cond:
            self._next_read = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, POLL_INTERVAL)
            for task_id, meta in found.items():
                seen = watched.get(task_id)
                if seen is None or self._seen.get(task_id) is not seen or seen.meta == meta:
                    continue
                seen.meta = meta
                self._on_change(task_id, meta)
