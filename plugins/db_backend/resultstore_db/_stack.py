"""Where the fast statements (see _fast) take their connections.

:class:`PoolConnections` is an engine's pool, with its events (the idle ping) and the
invalidation of a connection a server dropped. A SQLite file needs none of that
(no server to ping or to drop a connection), and the pool's checkout and return
cost about as much as the statement: ~4.5 us of an 18 us get, where sqlite3 alone
reads a row in ~5 us. :class:`StackedConnections` keeps a few connections of its
own on a list instead (``pop`` and ``append`` are atomic), and takes the pool's
beyond them, so that many threads at once still open no more than the pool allows.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

_KEEP = 8  # SQLite connections of the stack's own (the pool holds 5 + 10 overflow more)


class PoolConnections:
    """The connections of ``engine``'s pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect

    def take(self) -> Any:
        return self.engine.raw_connection()

    def give(self, connection: Any) -> None:
        connection.close()  # back to the pool, which rolls back what is left open

    def drop(self, connection: Any, exc: Any, cursor: Any) -> bool:
        """After ``exc``: whether the connection is lost (then invalidated)."""
        lost = self.dialect.is_disconnect(exc, connection.driver_connection, cursor)
        if lost:
            # The whole pool, as SQLAlchemy's Connection does: after a server restart
            # every pooled connection is dead, and invalidating one per failed attempt
            # used up the retries on them (a store failed when the pool held more).
            self.engine.pool._invalidate(connection, exc)
        connection.close()
        return bool(lost)

    def close(self) -> None:
        pass  # the engine's owner disposes of it


class StackedConnections(PoolConnections):
    """A SQLite file's connections: up to ``_KEEP`` on a stack of their own, then the pool's."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._idle: list[Any] = []
        self._own: set[Any] = set()  # the connections the stack opened
        self._lock = threading.Lock()  # for opening and closing only
        self._closed = False

    def take(self) -> Any:
        try:
            return self._idle.pop()
        except IndexError:
            pass
        with self._lock:
            if len(self._own) >= _KEEP or self._closed:
                return self.engine.raw_connection()
            # Opened by the pool, for its connect arguments and events (WAL), then
            # detached from it: the stack closes it.
            fairy = self.engine.raw_connection()
            fairy.detach()
            connection = fairy.dbapi_connection
            self._own.add(connection)
            return connection

    def give(self, connection: Any) -> None:
        if connection not in self._own:
            connection.close()  # the pool's
        elif self._closed:
            self._forget(connection)
        else:
            # Reads open no transaction in sqlite3 and writes commit (see _fast).
            self._idle.append(connection)

    def drop(self, connection: Any, exc: Any, cursor: Any) -> bool:
        if connection not in self._own:
            return super().drop(connection, exc, cursor)
        # A busy database or a failed write: closed, so that no transaction is left open.
        self._forget(connection)
        return False

    def _forget(self, connection: Any) -> None:
        with self._lock:
            self._own.discard(connection)
        connection.close()

    def close(self) -> None:
        """Close the idle connections, and those in use as they come back."""
        self._closed = True
        while self._idle:
            self._forget(self._idle.pop())


_stacks: weakref.WeakKeyDictionary[Engine, StackedConnections] = weakref.WeakKeyDictionary()
_stacks_lock = threading.Lock()


def connections_for(engine: Engine) -> PoolConnections:
    """A SQLite file's connections on a stack (one per engine, as the pool: every backend
    of the URL in the process shares it, and the engine's disposal closes it), any other
    engine's from its pool (an in-memory SQLite database is its one shared connection)."""
    file = engine.url.database not in (None, "", ":memory:")
    if (
        engine.dialect.name != "sqlite"
        or not file
        or not isinstance(engine.pool, sa.pool.QueuePool)
    ):
        return PoolConnections(engine)
    with _stacks_lock:
        stack = _stacks.get(engine)
        if stack is None:
            stack = _stacks[engine] = StackedConnections(engine)
            sa.event.listen(engine, "engine_disposed", lambda _engine: stack.close())
        return stack
