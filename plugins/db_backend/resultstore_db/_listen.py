"""Push on PostgreSQL: one LISTEN connection per backend and process.

Every store of a row runs ``pg_notify(<table>, task_id)`` in its own
transaction, so the notification is sent exactly when the row is committed.
The listener filters the ids someone waits on. LISTEN is active before the
channel is handed to the core, and after a reconnect every waited id is
re-checked, so no store is missed in between. Its connection waits on the server
no longer than ``database_connect_timeout`` (or the opening wait's deadline): it
runs nothing but LISTEN and a periodic ``SELECT 1``, and a health check that
hung for a read timeout would hold back the reconnect.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Collection
from typing import Any

import psycopg
import sqlalchemy as sa

from resultstore import OnChange

from ._psycopg import connection_classes

log = logging.getLogger("resultstore.db")

_POLL = 0.5  # how often the listener looks at its stop flag while idle
_MAX_BACKOFF = 1.0
_PING_EVERY = 25.0  # seconds of quiet after which the listener checks its connection


class ListenChannel:
    def __init__(
        self,
        conninfo: str,
        channel: str,
        on_change: OnChange,
        name: str,
        connect_timeout: float,
    ) -> None:
        self._conninfo = conninfo
        self._connection_class = connection_classes(connect_timeout, connect_timeout)[0]
        self._channel = channel
        self._on_change = on_change
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        try:
            self._conn: Any = self._listen()
        except psycopg.OperationalError as exc:
            # Unreachable now: raised as SQLAlchemy's error, so that the backend's
            # RetryPolicy retries it like any engine error and then names the masked
            # URL in BackendUnavailable, instead of a raw driver error reaching a waiter.
            raise sa.exc.OperationalError(f'LISTEN "{channel}"', None, exc) from exc
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def subscribe(self, task_ids: Collection[str]) -> None:
        with self._lock:
            self._ids.update(task_ids)

    def unsubscribe(self, task_ids: Collection[str]) -> None:
        with self._lock:
            self._ids.difference_update(task_ids)

    def subscribed_ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ids)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _listen(self) -> Any:
        conn = self._connection_class.connect(self._conninfo, autocommit=True)
        try:
            conn.execute(f'LISTEN "{self._channel}"')
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        backoff = 0.05
        next_ping = time.monotonic() + _PING_EVERY
        while not self._stop.is_set():
            try:
                if self._conn is None:
                    self._conn = self._listen()
                    backoff = 0.05
                    for task_id in self.subscribed_ids():  # what was stored meanwhile
                        self._on_change(task_id, None)
                for note in self._conn.notifies(timeout=_POLL):
                    with self._lock:
                        wanted = note.payload in self._ids
                    if wanted:
                        self._on_change(note.payload, None)
                if time.monotonic() >= next_ping:
                    # A connection dropped without a reset (a dead peer, a NAT) sends
                    # no error; a query on it does.
                    self._conn.execute("SELECT 1")
                    next_ping = time.monotonic() + _PING_EVERY
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                log.warning("LISTEN connection lost (%s); retry in %.2fs", exc, backoff)
                self._drop()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # it is gone either way
                conn.close()
