"""SQL databases for resultstore: ``db+<SQLAlchemy URL>`` (alias ``database+``).

Celery's tables and columns (``celery_taskmeta``, ``celery_tasksetmeta``; the
``result`` column holds the serializer's bytes), one pooled engine per URL and
process (closed with the last backend that uses it), one statement per store
that keeps a ready state (see _statements), and push waits through LISTEN on
PostgreSQL. Every wait on the server is bounded (see _engine): by the deadline
of the call, else by ``database_connect_timeout`` / ``database_read_timeout``,
within the retry policy. Expiry is ``cleanup()``: it deletes rows whose
``date_done`` is older than ``result_expires``, in bounded batches.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from resultstore import (
    BackendConfig,
    Capability,
    OnChange,
    PerLoop,
    TaskMeta,
    hookimpl,
)

from . import _engine, _options
from ._counters import CounterHooks, supports_counters
from ._counts import ListingStatements
from ._errors import MissingTablesError, denied, first_line, missing_table
from ._extras import ExtraHooks
from ._fast import ConnectionRunner, DirectRunner
from ._listing import DIALECTS as LISTING_DIALECTS
from ._listing_hooks import ListingHooks, ListingIndexWarning
from ._rows import meta_of, row_values
from ._schema import Tables, collation_fixes, make_tables
from ._stack import PoolConnections, connections_for
from ._statements import IN_CHUNK, Statements
from ._store import store_function

if TYPE_CHECKING:  # psycopg is the optional extra [postgresql]: imported when LISTEN is used
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ._listen import ListenChannel

__all__ = [
    "CollationWarning",
    "DatabaseBackend",
    "ListingIndexWarning",
    "MissingTablesError",
    "create_tables",
]

# What a store, read or delete runs: its description, its function, and whether that
# is a single statement (see DatabaseBackend._run). A single statement's function
# takes a runner of fast statements (_fast.DirectRunner, ConnectionRunner), any
# other function a SQLAlchemy connection inside a transaction.
_Op = tuple[str, Callable[[Any], Any], bool]


class CollationWarning(UserWarning):
    """Existing tables compare task ids without regard to case or accents (MySQL/MariaDB)."""


@dataclass(frozen=True)
class _AsyncEngines:
    """One event loop's async engine, and its autocommit view."""

    engine: AsyncEngine
    autocommit: AsyncEngine


def _has_async_twin(dialect: str) -> bool:
    """PostgreSQL through psycopg's asyncio connection (SQLAlchemy's async engine needs
    greenlet); the other dialects run their sync hooks in a worker thread."""
    return dialect == "postgresql" and all(
        importlib.util.find_spec(module) is not None for module in ("psycopg", "greenlet")
    )


class DatabaseBackend(ExtraHooks, CounterHooks, ListingHooks):
    # The core refuses any other option, naming a close spelling; hosts forward these.
    option_names = frozenset(_options.KNOWN)

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.codec = config.codec
        if config.inner_url is None:
            raise ValueError(
                f"{config.url.masked!r}: give a SQLAlchemy URL after the prefix, "
                "e.g. db+sqlite:///results.db or db+postgresql://user@host/db"
            )
        settings = _options.parse(config.options)
        self.engine_options = settings.engine_options
        self.retry = settings.retry
        self.connect_timeout = settings.connect_timeout
        self.read_timeout = settings.read_timeout
        self.bounds = _engine.Bounds(settings.connect_timeout, settings.read_timeout)
        try:
            self.url = _engine.normalize(config.inner_url.raw)
        except sa.exc.ArgumentError as exc:
            raise ValueError(f"{config.url.masked!r} is not a SQLAlchemy URL: {exc}") from None
        self.where = config.url.masked
        self.dialect = self.url.get_backend_name()
        # An in-memory SQLite database lives in this process only.
        in_memory = self.url.database in (None, "", ":memory:")
        self.process_local = self.dialect == "sqlite" and in_memory
        self._engines_lock = threading.Lock()
        self._engines_of: tuple[int, tuple[Engine, ...]] = (0, ())
        self._fast_of: tuple[int, PoolConnections | None] = (0, None)
        self.tables: Tables = make_tables(
            settings.table_names, settings.table_schemas, self.dialect
        )
        caps = {Capability.GET_MANY, Capability.GROUPS, Capability.CLEANUP, Capability.REVOKE}
        if supports_counters(self.dialect):
            caps.add(Capability.COUNTER)
        if self.dialect in LISTING_DIALECTS:
            caps.add(Capability.LISTING)
        if self.dialect == "postgresql":
            caps.add(Capability.PUSH)
        if _has_async_twin(self.dialect):
            caps.add(Capability.ASYNC)
        self.capabilities = frozenset(caps)
        self._async = PerLoop(self._open_async, _dispose)
        self._channels: list[ListenChannel] = []
        self.listing: ListingStatements | None = None
        try:
            self.statements = Statements(self.tables, self.engine.dialect)
            if Capability.LISTING in caps:
                self.listing = ListingStatements(self.tables, self.engine.dialect)
            if settings.create_tables:
                self.create_tables()
        except BaseException:
            self.close()  # the core closes only a plugin that started
            raise

    # --- plumbing ---------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._engines()[0]

    @property
    def fast_engine(self) -> Engine:
        """Where the fast statements run: on PostgreSQL and MySQL/MariaDB a pool of
        autocommit connections (SQLite commits each write on the main engine's)."""
        return self._engines()[-1]

    def _fast_connections(self) -> PoolConnections:
        """This process's source of connections for the fast statements (see _stack)."""
        pid, connections = self._fast_of
        if pid == os.getpid() and connections is not None:
            return connections
        engine = self.fast_engine
        with self._engines_lock:
            pid, connections = self._fast_of
            if pid != os.getpid() or connections is None:
                connections = connections_for(engine)
                self._fast_of = (os.getpid(), connections)
            return connections

    def _engines(self) -> tuple[Engine, ...]:
        # Looked up once per process: the lookup's key rendered the URL on every call.
        pid, engines = self._engines_of
        if pid == os.getpid():
            return engines
        with self._engines_lock:  # each acquired engine is released once, by close()
            if self._engines_of[0] != os.getpid():
                try:
                    engines = (_engine.acquire(self.url, self.engine_options, self.bounds),)
                except ModuleNotFoundError as exc:
                    raise _engine.missing_driver(self.url, exc) from exc
                if self.dialect in ("postgresql", "mysql", "mariadb"):
                    engines += (
                        _engine.acquire(
                            self.url, self.engine_options, self.bounds, autocommit=True
                        ),
                    )
                self._engines_of = (os.getpid(), engines)
            return self._engines_of[1]

    def _open_async(self) -> _AsyncEngines:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(
            self.url.set(drivername="postgresql+psycopg"), **self.engine_options
        )
        _engine.bound_waits(engine.sync_engine, self.bounds)
        if not self.engine_options.get("pool_pre_ping"):
            _engine.ping_when_idle(engine.sync_engine)
        return _AsyncEngines(engine, engine.execution_options(isolation_level="AUTOCOMMIT"))

    async def _arun(self, what: str, fn: Any, one_statement: bool = False) -> Any:
        """:meth:`_run` on this loop's async engine: ``fn`` runs through ``run_sync``
        (SQLAlchemy awaits the driver underneath), with the same retries."""
        engines = await self._async.get()

        async def round_trip() -> Any:
            try:
                if one_statement:
                    async with engines.autocommit.connect() as conn:
                        return await conn.run_sync(lambda sync: fn(ConnectionRunner(sync)))
                async with engines.engine.begin() as conn:
                    return await conn.run_sync(fn)
            except sa.exc.DBAPIError as exc:
                self._raise_if_missing_tables(exc)
                raise

        return await self.retry.arun(
            lambda: _engine.uncut(round_trip()),
            transient=_engine.transient,
            what=what,
            where=self.where,
            describe=_engine.describe,
        )

    def _run(self, what: str, fn: Any, one_statement: bool = False) -> Any:
        """Run ``fn(connection)`` in one transaction, retrying transient errors.

        ``one_statement``: ``fn`` runs a single statement, atomic by itself: on
        the fast path (see _fast), in autocommit where that is free (PostgreSQL,
        SQLite), which skips BEGIN and COMMIT, two of the three round trips.
        """

        def attempt() -> Any:
            try:
                if one_statement:
                    return fn(DirectRunner(self._fast_connections()))
                with self.engine.begin() as conn:
                    return fn(conn)
            except sa.exc.DBAPIError as exc:
                # A missing table is no transient error (SQLite reports it as an
                # OperationalError): say which tables and how to create them.
                self._raise_if_missing_tables(exc)
                raise

        return self._retried(what, attempt)

    def _retried(self, what: str, attempt: Callable[[], Any]) -> Any:
        return self.retry.run(
            attempt,
            transient=_engine.transient,
            what=what,
            where=self.where,
            describe=_engine.describe,
        )

    def _raise_if_missing_tables(self, exc: sa.exc.DBAPIError) -> None:
        if missing_table(exc):
            names = ", ".join(t.fullname for t in self.tables.metadata.sorted_tables)
            raise MissingTablesError(
                f"the result tables ({names}) are missing on {self.where}: "
                f"{first_line(exc)}; create them with "
                "resultstore_db.create_tables(url), or leave database_create_tables_at_setup "
                "at True"
            ) from exc

    def create_tables(self) -> None:
        """Create the tables (and sequences) that are missing; a clear error without the
        right, and a :class:`CollationWarning` for id columns that ignore case (MySQL)."""

        def create() -> list[str]:
            # Inside the retried call: MySQL/MariaDB report a denied CREATE as an
            # OperationalError, which the retry policy takes for a lost connection.
            try:
                with self.engine.begin() as conn:
                    self.tables.metadata.create_all(conn)
                    if self.dialect in ("mysql", "mariadb"):
                        return collation_fixes(conn, self.tables)
                    return []
            except sa.exc.DBAPIError as exc:
                if not denied(exc):
                    raise
                raise PermissionError(
                    f"cannot create the result tables on {self.where}: "
                    f"{first_line(exc)}; create them as a user with "
                    "the right (resultstore_db.create_tables(url)) and set "
                    "database_create_tables_at_setup=False"
                ) from exc

        fixes = self._retried("creating tables", create)
        if fixes:
            warnings.warn(
                CollationWarning(
                    f"the task id columns on {self.where} ignore case and accents (the "
                    "database's default collation), so ids such as 'Job-1' and 'job-1' are "
                    "taken for one task; make them compare byte for byte with:\n"
                    + "".join(f"{fix};\n" for fix in fixes)
                ),
                stacklevel=2,
            )

    # --- hooks ---------------------------------------------------------------------------------

    @hookimpl
    def store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        return bool(self._run(*self._store(meta, overwrite)))

    @hookimpl
    async def async_store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        return bool(await self._arun(*self._store(meta, overwrite)))

    def _store(self, meta: TaskMeta, overwrite: bool) -> _Op:
        values = row_values(self.codec, meta)
        store, one_statement = store_function(
            self.statements, self.dialect, meta.task_id, values, overwrite
        )
        return f"storing task {meta.task_id!r}", store, one_statement

    @hookimpl
    def get(self, task_id: str) -> TaskMeta | None:
        return self._meta_or_none(self._run(*self._get(task_id)))

    @hookimpl
    async def async_get(self, task_id: str) -> TaskMeta | None:
        return self._meta_or_none(await self._arun(*self._get(task_id)))

    def _get(self, task_id: str) -> _Op:
        def read(db: Any) -> Any:
            return db.first(self.statements.select, {"task_id": task_id})

        return f"reading task {task_id!r}", read, True

    def _meta_or_none(self, row: Any) -> TaskMeta | None:
        return None if row is None else meta_of(self.codec, row)

    @hookimpl
    def get_many(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        rows = self._run(*self._get_many(task_ids))
        return {row["task_id"]: meta_of(self.codec, row) for row in rows}

    @hookimpl
    async def async_get_many(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        rows = await self._arun(*self._get_many(task_ids))
        return {row["task_id"]: meta_of(self.codec, row) for row in rows}

    def _get_many(self, task_ids: Sequence[str]) -> _Op:
        statements = self.statements

        def read(db: Any) -> list[dict[str, Any]]:
            if self.dialect == "postgresql":
                # One array parameter, not a long IN list: one plan, any number of ids.
                return db.all(statements.select_any, {"ids": list(task_ids)})  # type: ignore[no-any-return]
            rows: list[dict[str, Any]] = []
            for start in range(0, len(task_ids), IN_CHUNK):
                statement, params = statements.select_in(task_ids[start : start + IN_CHUNK])
                rows += db.all(statement, params)
            return rows

        return f"reading {len(task_ids)} tasks", read, True

    @hookimpl
    def forget(self, task_id: str) -> bool:
        return bool(self._run(*self._forget(task_id)))

    @hookimpl
    async def async_forget(self, task_id: str) -> bool:
        return bool(await self._arun(*self._forget(task_id)))

    def _forget(self, task_id: str) -> _Op:
        task, revoked = self.tables.task, self.tables.revoked

        def delete(conn: Connection) -> bool:
            conn.execute(revoked.delete().where(revoked.c.task_id == task_id))
            return bool(conn.execute(task.delete().where(task.c.task_id == task_id)).rowcount)

        return f"forgetting task {task_id!r}", delete, False

    @hookimpl
    def notify(self, on_change: OnChange) -> ListenChannel:
        from ._listen import ListenChannel  # not at import: SQLite/MariaDB need no psycopg

        conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        channel: ListenChannel = self._retried(
            "opening the LISTEN channel",
            lambda: ListenChannel(
                conninfo,
                self.tables.task.name,
                on_change,
                name=f"resultstore-db-listener {self.where}",
                connect_timeout=self.connect_timeout,
            ),
        )
        self._channels.append(channel)
        return channel

    @hookimpl
    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self._async.close()
        with self._engines_lock:
            (pid, engines), self._engines_of = self._engines_of, (0, ())
            self._fast_of = (0, None)  # the engine's disposal closes its connections
        if pid == os.getpid():  # a forked child's copy holds none of the parent's engines
            for engine in dict.fromkeys(engines):
                _engine.release(engine)

    def subscribed_ids(self) -> frozenset[str]:
        return frozenset().union(*(c.subscribed_ids() for c in self._channels))


async def _dispose(engines: _AsyncEngines) -> None:
    await engines.engine.dispose()


def create_tables(url: str, **options: Any) -> None:
    """Create resultstore's (Celery's) tables ahead of time, e.g. as a privileged user.

    Raises :class:`PermissionError` (naming the masked URL) when the user lacks the right;
    warns (:class:`CollationWarning`) of existing MySQL/MariaDB tables whose ids ignore case.
    """
    from resultstore import Backend

    with Backend(url, options={**options, "database_create_tables_at_setup": True}):
        pass
