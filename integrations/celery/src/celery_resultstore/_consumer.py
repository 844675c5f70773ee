"""Celery's result consumer on ``Backend.watch``: push waiting for ``get()``, ``join()``,
``then()`` and ``on_message``.

Celery's asynchronous model (AsyncBackendMixin) registers an id when a task is
sent or a result object made, and a drainer calls ``drain_events`` until the awaited
result is ready. Here the ids are watched when someone waits, in one
:class:`resultstore.Watch` on the backend's one shared channel (Redis pub/sub,
PostgreSQL LISTEN, the core's poller elsewhere). Its callback runs on the
channel's thread and only queues the news; ``drain_events`` takes the queue in the
caller's thread, reads the ids that came without their state (NOTIFY carries only
the id) in one ``get_many``, and hands each state to Celery's ``on_state_change``.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from celery import states
from celery.backends.asynchronous import BaseResultConsumer, _waiting_on
from kombu.utils.compat import detect_environment

from resultstore import TaskMeta, Watch

if TYPE_CHECKING:
    from ._backend import ResultStoreBackend


def is_missing(meta: TaskMeta) -> bool:
    """The PENDING meta resultstore's reads give for an id with nothing stored (cheaper
    than comparing with ``TaskMeta(task_id)``: a join checks every member)."""
    return (
        meta.status == states.PENDING
        and meta.result is None
        and meta.date_done is None
        and meta.traceback is None
    )


# drain_events(timeout=None) waits at most this long: Celery's drainer loops and
# checks its own deadline between calls.
IDLE_WAIT = 1.0


class ResultConsumer(BaseResultConsumer):  # type: ignore[misc]
    backend: ResultStoreBackend

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # eventlet or gevent (kombu ships no type hints)
        self._greenlets = detect_environment() != "default"  # type: ignore[no-untyped-call]
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._events: deque[tuple[str, TaskMeta | None]] = deque()
        # Bumped after each batch is handed on: a thread waiting while another one
        # drained the news wakes up to see whether its result is ready now.
        self._generation = 0
        self._watch: Watch | None = None
        # Ids to watch once someone waits (see consume_from).
        self._wanted: set[str] = set()

    def _watcher(self) -> Watch:
        if self._pid != os.getpid():
            # A forked child: the parent's watch lives on the parent's channel.
            self._reset()
        if self._watch is None:
            with self._cond:
                if self._watch is None:
                    self._watch = self.backend.store.watch(self._on_change)
        return self._watch

    def _on_change(self, task_id: str, meta: TaskMeta | None) -> None:
        """On the channel's thread: queue the news and wake the draining threads."""
        with self._cond:
            self._events.append((task_id, meta))
            self._cond.notify_all()

    def start(self, initial_task_id: str, **kwargs: Any) -> None:
        self.consume_from(initial_task_id)

    def stop(self) -> None:
        if self._watch is not None and self._pid == os.getpid():
            self._watch.close()
            self._watch = None

    def on_after_fork(self) -> None:
        self._reset()

    def consume_from(self, task_id: str) -> None:
        """Celery calls this for every task sent and every result object made (a
        GroupResult of 200 members: 200 calls). The ids are watched when someone
        waits, all in one go: a result that is ready by then, or the members of a
        finished group, cost no subscription at all."""
        if self._pid != os.getpid():
            self._reset()
        self._wanted.add(task_id)

    def cancel_for(self, task_id: str) -> None:
        # Never blocks (Watch.discard): Celery calls this from AsyncResult.__del__.
        self._wanted.discard(task_id)
        if self._watch is not None and self._pid == os.getpid():
            self._watch.discard([task_id])

    def _watch_wanted(self) -> None:
        with self._cond:
            ids, self._wanted = self._wanted, set()
        if not ids:
            return
        self._watcher().add(ids)
        # A subscription cannot see the past: what was stored before it is read now,
        # all in one round trip, and handed on as news.
        for task_id, meta in self.backend.store.get_many(ids).items():
            if not is_missing(meta):
                self._on_change(task_id, meta)

    def on_wait_for_pending(self, result: Any, **kwargs: Any) -> None:
        """Before waiting: read the states (every member of a group in one round trip);
        the ready ones are done with, the others are watched by drain_events."""
        for meta in result._iter_meta(**kwargs):
            if meta is not None:
                self.on_state_change(meta, None)

    def on_state_change(self, meta: dict[str, Any], message: Any) -> None:
        if self._greenlets:
            super().on_state_change(meta, message)  # yields to other greenlets after each
        else:
            self._deliver(meta)
        if meta["status"] in states.READY_STATES:
            self.cancel_for(meta["task_id"])  # nothing more will change: stop watching it

    def _deliver(self, meta: dict[str, Any]) -> None:
        """Celery's on_state_change without its ``sleep(0)`` after each message: with
        threads that is a system call that hands the CPU away, 200 of them (0.5 ms each
        on a busy machine) were most of the join of a finished 200-member group."""
        if self.on_message:
            self.on_message(meta)
        if meta["status"] not in states.READY_STATES:
            return
        task_id = meta["task_id"]
        waiting = _waiting_on(self._pending_results, task_id)
        if not waiting:  # kept for a result object made later (Celery's buffer)
            self._pending_messages.put(task_id, meta)
        for result in waiting:
            result._maybe_set_cache(meta)
            bucket = self.buckets.pop(result, None)
            if bucket is not None:
                bucket.append(result)

    def drain_events(self, timeout: float | None = None) -> None:
        self._watch_wanted()
        wait = IDLE_WAIT if timeout is None else timeout
        with self._cond:
            generation = self._generation
            self._cond.wait_for(lambda: self._events or self._generation != generation, wait)
            batch = list(self._events)
            self._events.clear()
        if not batch:
            return
        try:
            for meta in self._complete(batch):
                self.on_state_change(self.backend.meta_for_celery(meta), None)
        finally:
            with self._cond:
                self._generation += 1
                self._cond.notify_all()

    def _complete(self, batch: list[tuple[str, TaskMeta | None]]) -> list[TaskMeta]:
        """The batch's states in order, those that came without one read in one round trip."""
        unknown = {task_id for task_id, meta in batch if meta is None}
        found = self.backend.store.get_many(unknown) if unknown else {}
        metas = []
        for task_id, meta in batch:
            if meta is None:
                meta = found.pop(task_id, None)  # once: one id announced twice, read once
            if meta is not None and not is_missing(meta):  # a missing id: no news
                metas.append(meta)
        return metas
