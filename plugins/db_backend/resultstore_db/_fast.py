"""The hot statements on the bare DB-API cursor of a pooled connection.

A get and a store are one statement each. Through SQLAlchemy's Connection
they cost 60-250 us of Python per call (checkout events, the autocommit
switch, execution context, result processing) on top of the driver; here
SQLAlchemy compiles each statement once, for the engine's dialect, and the
call is: take a pooled connection, execute, fetch, give it back. On
PostgreSQL the connections come from a pool of autocommit connections of
their own (switching psycopg's autocommit per call cost two of its waits,
~25 us); sqlite3 commits a write explicitly; on MySQL/MariaDB, too, the
connections autocommit, and go back to the pool without a rollback (PyMySQL's is
a round trip). Pool checkout events (the idle ping) still run,
and driver errors come out as SQLAlchemy's DBAPIError with the connection
invalidated on a disconnect, so the retry policy treats them as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ._stack import PoolConnections

T = TypeVar("T")


class FastStatement:
    """One statement compiled for a dialect, run on a raw connection of an engine."""

    def __init__(
        self,
        dialect: sa.Dialect,
        statement: Any,
        unpack: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        # render_postcompile: an IN list of constants becomes plain parameters.
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        self.statement = statement
        self.sql = compiled.string
        # The statement's own parameters are built with required=False (None until
        # given); what has a value is a constant of the statement.
        self.constants = {k: v for k, v in compiled.construct_params().items() if v is not None}
        columns = list(getattr(statement, "selected_columns", ()))
        self.columns = tuple(c.key for c in columns)
        # Positional paramstyles (qmark, format) take a tuple in compiled order.
        self.order: Sequence[str] | None = (
            list(compiled.positiontup) if compiled.positional else None
        )
        self.sqlite = dialect.name == "sqlite"
        # The fast engines of PostgreSQL and MySQL/MariaDB autocommit (see _engine).
        self.commit_writes = self.sqlite
        # SQLite keeps DateTime as text, which SQLAlchemy would have parsed.
        self.dates = [c.key for c in columns if isinstance(c.type, sa.DateTime)] * self.sqlite
        # psycopg2 returns bytea as memoryview, which SQLAlchemy would have made bytes.
        self.binaries = [c.key for c in columns if isinstance(c.type, sa.LargeBinary)]
        self.unpack = unpack  # rows whose columns travel packed (see _rows.read_columns)

    def _params(self, params: Mapping[str, Any]) -> Any:
        params = {**self.constants, **params}
        if self.sqlite:
            # SQLAlchemy's SQLite DateTime stores this text; sqlite3's own adapter
            # is deprecated and writes a different format.
            params = {
                k: v.isoformat(" ", "microseconds") if isinstance(v, datetime) else v
                for k, v in params.items()
            }
        return params if self.order is None else tuple(params[name] for name in self.order)

    def run(
        self, connections: PoolConnections, params: Mapping[str, Any], *, write: bool = False
    ) -> Any:
        """Execute and return the first row (a dict for a SELECT), or ``None``."""
        row = self._execute(connections, params, write, _fetchone)
        return row if row is None or not self.columns else self._row(row)

    def count(self, connections: PoolConnections, params: Mapping[str, Any]) -> int:
        """Execute a write and return the driver's count of rows it changed."""
        return self._execute(connections, params, True, _rowcount)

    def rows(self, connections: PoolConnections, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Execute a SELECT and return every row as a dict."""
        return [self._row(row) for row in self._execute(connections, params, False, _fetchall)]

    def _row(self, row: Sequence[Any]) -> dict[str, Any]:
        found = dict(zip(self.columns, row, strict=True))
        for name in self.dates:
            if isinstance(found[name], str):
                found[name] = datetime.fromisoformat(found[name])
        for name in self.binaries:
            if type(found[name]) is memoryview:
                found[name] = bytes(found[name])
        return found if self.unpack is None else self.unpack(found)

    def shape(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row SQLAlchemy read, as :meth:`_row` makes it."""
        return row if self.unpack is None else self.unpack(row)

    def _execute(
        self,
        connections: PoolConnections,
        params: Mapping[str, Any],
        write: bool,
        fetch: Callable[[Any], T],
    ) -> T:
        dialect = connections.dialect
        error = dialect.loaded_dbapi.Error
        try:
            connection = connections.take()
        except error as exc:  # SQLAlchemy's Connection would have wrapped this one too
            raise _wrap(dialect, self.sql, exc, params, lost=True) from exc
        cursor = None
        try:
            cursor = connection.cursor()
            cursor.execute(self.sql, self._params(params))
            found = fetch(cursor)
            if write and self.commit_writes:
                connection.commit()
            cursor.close()
        except error as exc:
            if cursor is not None:
                cursor.close()
            lost = connections.drop(connection, exc, cursor)
            raise _wrap(dialect, self.sql, exc, params, lost=lost) from exc
        except BaseException:
            connections.drop(connection, RuntimeError("interrupted"), cursor)
            raise
        connections.give(connection)
        return found


def _fetchone(cursor: Any) -> Any:
    return cursor.fetchone()


def _fetchall(cursor: Any) -> Any:
    return cursor.fetchall()


def _rowcount(cursor: Any) -> int:
    return int(cursor.rowcount)


class DirectRunner:
    """Runs fast statements on the bare cursor of a connection of ``connections``."""

    def __init__(self, connections: PoolConnections) -> None:
        self.connections = connections
        self.engine = connections.engine

    def first(
        self, statement: FastStatement, params: Mapping[str, Any], *, write: bool = False
    ) -> Any:
        return statement.run(self.connections, params, write=write)

    def count(self, statement: FastStatement, params: Mapping[str, Any]) -> int:
        return statement.count(self.connections, params)

    def all(self, statement: FastStatement, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return statement.rows(self.connections, params)


class ConnectionRunner:
    """The same on a SQLAlchemy connection (the async engine's, through ``run_sync``)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def first(
        self, statement: FastStatement, params: Mapping[str, Any], *, write: bool = False
    ) -> Any:
        row = self.connection.execute(statement.statement, params).mappings().first()
        return None if row is None else statement.shape(dict(row))

    def all(self, statement: FastStatement, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        found = self.connection.execute(statement.statement, params).mappings().all()
        return [statement.shape(dict(row)) for row in found]


def _wrap(
    dialect: sa.Dialect, sql: str, exc: Any, params: Mapping[str, Any], *, lost: bool
) -> sa.exc.StatementError:
    """What SQLAlchemy would have raised: a DBAPIError, invalidated on a disconnect."""
    wrapped: sa.exc.StatementError = sa.exc.DBAPIError.instance(
        sql,
        dict(params),
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )
    return wrapped
