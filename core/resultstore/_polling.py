"""The push channel the core gives a plugin without push: one polling thread per backend.

However many threads and coroutines wait, the process reads the store in
rounds, every due id in one many-id read, and the hub wakes the waiters of the
ids that changed, exactly as a plugin's push channel would. Ids subscribed in
the last :data:`POLL_INTERVAL` are read 1 ms after the newest subscribe, then
at doubling delays; older ids are read together once per interval. So new
waits arriving all the time poll their own ids fast, not everyone's. A round
that found a change is followed by a quick one, then again at doubling delays:
results come in runs (a group's members, a batch of tasks), and with 1,000
waiters read once per interval the first store of a run waited 50 ms on
average, every later one as long again. With nothing subscribed the thread
sleeps without reading.

The thread holds the backend's read weakly: a backend dropped without
``close()`` is still collected, and its poller ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from ._errors import DecodeError
from ._hookspecs import OnChange
from ._meta import TaskMeta

log = logging.getLogger("resultstore")

FIRST_POLL_DELAY = 0.001
POLL_INTERVAL = 0.1
_JOIN_TIMEOUT = 5.0

ReadMany = Callable[[Sequence[str]], Mapping[str, TaskMeta]]


class _Seen:
    """One subscription of an id: when it began, and the meta last delivered for it."""

    __slots__ = ("meta", "since")

    def __init__(self, now: float) -> None:
        self.meta: TaskMeta | None = None
        self.since = now


class PollingChannel:
    """A :class:`NotifyChannel` that reads every subscribed id in one call per round."""

    def __init__(
        self, read_many: Callable[[], ReadMany | None], on_change: OnChange, name: str
    ) -> None:
        self._read_many = read_many  # a weak reference: None once its backend is gone
        self._on_change = on_change
        self._name = name
        self._cond = threading.Condition()
        # A new _Seen per subscription: a round that read an id before it was
        # unsubscribed and subscribed again must not deliver that older meta.
        self._seen: dict[str, _Seen] = {}
        # Two schedules: ids subscribed less than POLL_INTERVAL ago (backing off from
        # 1 ms after the newest subscribe), and the rest (once per POLL_INTERVAL).
        self._young_delay = FIRST_POLL_DELAY
        self._young_due = 0.0
        self._old_delay = POLL_INTERVAL  # FIRST_POLL_DELAY after a round found a change
        self._old_due = 0.0
        self._round_began = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def subscribe(self, task_ids: Collection[str]) -> None:
        with self._cond:
            now = time.monotonic()
            for task_id in task_ids:
                self._seen[task_id] = _Seen(now)
            # A new wait may be for a task about to finish: read the new ids soon.
            self._young_delay = FIRST_POLL_DELAY
            self._young_due = now + FIRST_POLL_DELAY
            self._cond.notify()

    def unsubscribe(self, task_ids: Collection[str]) -> None:
        with self._cond:
            for task_id in task_ids:
                self._seen.pop(task_id, None)

    def close(self) -> None:
        self.stop()
        self._thread.join(_JOIN_TIMEOUT)

    def stop(self) -> None:
        """End the thread without waiting for it (its backend is being collected)."""
        with self._cond:
            self._closed = True
            self._seen.clear()
            self._cond.notify()

    def _run(self) -> None:
        failing = False
        while (watched := self._next_round()) is not None:
            read_many = self._read_many()
            if read_many is None:
                return  # the backend was collected without close()
            try:
                found, broken = _read_apart(read_many, list(watched))
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
                found, broken = {}, []
            else:
                if failing:
                    log.warning("polling for %s works again", self._name)
                failing = False
            del read_many  # not held while the thread sleeps
            self._end_round(watched, found, broken)

    def _next_round(self) -> dict[str, _Seen] | None:
        """Sleep until some ids are due; those ids then, None once closed."""
        with self._cond:
            while not self._closed:
                if not self._seen:
                    self._cond.wait()
                    continue
                now = self._round_began = time.monotonic()
                young = {t: s for t, s in self._seen.items() if now - s.since < POLL_INTERVAL}
                due = young if young and self._young_due <= now else {}
                if len(young) < len(self._seen) and self._old_due <= now:
                    due = {**due, **{t: s for t, s in self._seen.items() if t not in young}}
                if due:
                    return due
                wakes = [self._young_due] if young else []
                if len(young) < len(self._seen):
                    wakes.append(self._old_due)
                self._cond.wait(max(0.0, min(wakes) - now))
            return None

    def _end_round(
        self, watched: dict[str, _Seen], found: Mapping[str, TaskMeta], broken: list[str]
    ) -> None:
        """Deliver what changed and schedule what was read (counted from now: a slow
        read must not make the rounds run back to back). A broken record's waiters are
        told it changed without a meta: their own read then raises its DecodeError."""
        # Under the lock, so an unsubscribe and subscribe of an id cannot slip in
        # between the check and the delivery; on_change only wakes waiters.
        with self._cond:
            changed = False
            for task_id, meta in found.items():
                seen = watched.get(task_id)
                if seen is None or self._seen.get(task_id) is not seen or seen.meta == meta:
                    continue
                seen.meta = meta
                changed = True
                self._on_change(task_id, meta)
            for task_id in broken:
                if self._seen.get(task_id) is watched[task_id]:
                    self._on_change(task_id, None)
            now = time.monotonic()
            if changed:  # more of the run is likely stored now: look again soon
                self._young_delay = self._old_delay = FIRST_POLL_DELAY
            if self._young_due <= self._round_began or changed:
                self._young_due = now + self._young_delay
                self._young_delay = min(self._young_delay * 2, POLL_INTERVAL)
            if self._old_due <= self._round_began or changed:
                self._old_due = now + self._old_delay
                self._old_delay = min(self._old_delay * 2, POLL_INTERVAL)


def _read_apart(read_many: ReadMany, ids: list[str]) -> tuple[Mapping[str, TaskMeta], list[str]]:
    """Read ``ids`` in one call; if a record cannot be decoded, halve the batch until the
    broken ids are found (a few reads per broken record), so that one bad record fails its
    own waiters only. Returns what was read and the ids that cannot be decoded."""
    try:
        return read_many(ids), []
    except DecodeError:
        if len(ids) == 1:
            return {}, ids
    half = len(ids) // 2
    first, broken_first = _read_apart(read_many, ids[:half])
    second, broken_second = _read_apart(read_many, ids[half:])
    return {**first, **second}, broken_first + broken_second
