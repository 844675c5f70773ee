"""Watching ids with a callback: push for hosts that run a consumer loop of their own.

A task system's result consumer (Celery's), a live view: they want to hear that an
id changed, in their own thread, instead of blocking in a wait. A :class:`Watch`
puts its ids on the backend's one channel, the one every wait of the process
shares, so a watch costs no connection of its own; the callback runs on the
channel's thread, and a closed or discarded watch leaves no subscription behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from ._meta import TaskMeta
from ._waiting import WaitHub

log = logging.getLogger("resultstore")

WatchCallback = Callable[[str, "TaskMeta | None"], None]


class Watch:
    """Ids watched on one backend; ``callback(task_id, meta)`` hears of their changes.

    Made by :meth:`Backend.watch`. The callback runs on the channel's thread (the
    listener of a push plugin, the core's poller otherwise): it must return quickly
    and never block, so hand the news to your own thread. ``meta`` is the stored
    state when the channel carries it (Redis publishes every store), else ``None``,
    meaning "may have changed: read it" (PostgreSQL's NOTIFY carries only the id; a
    channel re-checks every id so after a reconnect). A push channel reports every
    store; the poller reports the changes it sees between its reads.
    """

    def __init__(
        self, hub: WaitHub, callback: WatchCallback, validate: Callable[[str], str]
    ) -> None:
        self._hub = hub
        self._callback = callback
        self._validate = validate
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"<Watch of {len(self._ids)} ids{' (closed)' if self._closed else ''}>"

    @property
    def watched(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ids)

    def add(self, task_ids: Iterable[str]) -> None:
        """Watch these ids too. Once this returns every later store of them is reported;
        a store made before may not be, so read the ids after adding them when their
        current state matters (a subscription cannot see the past)."""
        ids = [self._validate(t) for t in task_ids]
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            new = [t for t in dict.fromkeys(ids) if t not in self._ids]
            self._ids.update(new)
        try:
            self._hub.add(self, new)
        except BaseException:
            with self._lock:
                self._ids.difference_update(new)
            raise

    def discard(self, task_ids: Iterable[str]) -> None:
        """Stop watching these ids. Never blocks: safe from ``__del__`` and any thread."""
        with self._lock:
            gone = [t for t in task_ids if t in self._ids]
            self._ids.difference_update(gone)
        self._hub.remove_soon(self, gone)

    def close(self) -> None:
        """Stop watching everything (also called when the backend closes). Idempotent."""
        with self._lock:
            self._closed = True
            gone, self._ids = list(self._ids), set()
        self._hub.remove_soon(self, gone)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wake(self, task_id: str, meta: TaskMeta | None) -> None:
        """From the channel's thread: report a change of a watched id."""
        if task_id not in self._ids:  # discarded while the news was on its way
            return
        try:
            self._callback(task_id, meta)
        except Exception:  # the channel's thread serves every wait of the process
            log.exception("the watch callback %r failed for task %r", self._callback, task_id)
