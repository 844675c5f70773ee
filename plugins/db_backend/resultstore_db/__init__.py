"""SQL databases for resultstore: ``db+<SQLAlchemy URL>`` (alias ``database+``).

Celery's tables and columns (``celery_taskmeta``, ``celery_tasksetmeta``; the
``result`` column holds the serializer's bytes), one pooled engine per URL and
process, one statement per store that keeps a ready state (a dialect upsert
with a condition; on PostgreSQL its ``pg_notify`` rides in the same
statement), and push waits through LISTEN on PostgreSQL. Expiry is
``cleanup()``: it deletes rows whose ``date_done`` is older than
``result_expires``, in bounded batches.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from resultstore import (
    READY_STATES,
    BackendConfig,
    Capability,
    GroupMeta,
    OnChange,
    PerLoop,
    ResultStoreError,
    TaskMeta,
    hookimpl,
)

from . import _engine
from ._fast import ConnectionRunner, DirectRunner, FastStatement
from ._schema import Tables, make_tables

if TYPE_CHECKING:  # psycopg is the optional extra [postgresql]: imported when LISTEN is used
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ._listen import ListenChannel

__all__ = ["DatabaseBackend", "MissingTablesError", "create_tables"]


class MissingTablesError(ResultStoreError):
    """The result tables are not there (``database_create_tables_at_setup=False``)."""


_OPTIONS = {
    "database_engine_options",
    "database_table_names",
    "database_table_schemas",
    "database_create_tables_at_setup",
    "database_retry_policy",
    "database_short_lived_sessions",  # Celery's; engines here are pooled either way
}
_READY = sorted(READY_STATES)
# The columns a store writes (all of Celery's but the id and stamps).
_STORED = (
    "task_id", "status", "result", "date_done", "traceback", "children",
    "name", "args", "kwargs", "worker", "retries", "queue",
)  # fmt: skip
CLEANUP_BATCH = 1000
_IN_CHUNK = 500  # ids per IN (...) list on engines without arrays
# What a store, read or delete runs: its description, its function, and whether that
# is a single statement (see DatabaseBackend._run). A single statement's function
# takes a runner of fast statements (_fast.DirectRunner, ConnectionRunner), any
# other function a SQLAlchemy connection inside a transaction.
_Op = tuple[str, Callable[[Any], Any], bool]


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


class DatabaseBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.codec = config.codec
        if config.inner_url is None:
            raise ValueError(
                f"{config.url.masked!r}: give a SQLAlchemy URL after the prefix, "
                "e.g. db+sqlite:///results.db or db+postgresql://user@host/db"
            )
        options = dict(config.options)
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ValueError(
                f"resultstore-db does not take option(s) {sorted(unknown)}; "
                f"known: {sorted(_OPTIONS)}"
            )
        self.engine_options = _mapping(options, "database_engine_options")
        self.retry = _engine.RetryPolicy.from_option(options.get("database_retry_policy"))
        create = options.get("database_create_tables_at_setup", True)
        if not isinstance(create, bool):
            raise TypeError(
                f"database_create_tables_at_setup must be True or False, got {create!r}"
            )
        try:
            self.url = _engine.normalize(config.inner_url.raw)
        except sa.exc.ArgumentError as exc:
            raise ValueError(f"{config.url.masked!r} is not a SQLAlchemy URL: {exc}") from None
        self.where = config.url.masked
        self.dialect = self.url.get_backend_name()
        # An in-memory SQLite database lives in this process only.
        in_memory = self.url.database in (None, "", ":memory:")
        self.process_local = self.dialect == "sqlite" and in_memory
        self._engines_of: tuple[int, tuple[Engine, Engine]] = (0, ())  # type: ignore[assignment]
        self.tables: Tables = make_tables(
            _mapping(options, "database_table_names"), _mapping(options, "database_table_schemas")
        )
        caps = {Capability.GET_MANY, Capability.GROUPS, Capability.CLEANUP, Capability.REVOKE}
        if self.dialect == "postgresql":
            caps.add(Capability.PUSH)
        if _has_async_twin(self.dialect):
            caps.add(Capability.ASYNC)
        self.capabilities = frozenset(caps)
        self._async = PerLoop(self._open_async, _dispose)
        self._channels: list[ListenChannel] = []
        # The hot statements, compiled once and run on the bare DB-API cursor.
        task, revoked = self.tables.task, self.tables.revoked
        dialect = self.engine.dialect
        by_id = task.c.task_id == sa.bindparam("task_id", required=False)
        self._fast_select = FastStatement(dialect, sa.select(task).where(by_id))
        self._fast_upsert = {
            overwrite: FastStatement(dialect, self._upsert(overwrite))
            for overwrite in (False, True)
            if self.dialect in ("postgresql", "sqlite")
        }
        any_id = task.c.task_id == sa.any_(
            sa.bindparam("ids", type_=postgresql.ARRAY(sa.String), required=False)
        )
        self._fast_any = FastStatement(dialect, sa.select(task).where(any_id))
        self._fast_in_lists: dict[int, FastStatement] = {}
        now = sa.bindparam("now", type_=revoked.c.expires_at.type, required=False)
        in_force = sa.select(revoked.c.task_id).where(
            revoked.c.task_id == sa.bindparam("task_id", required=False),
            sa.or_(revoked.c.expires_at.is_(None), revoked.c.expires_at > now),
        )
        self._fast_revoked = FastStatement(dialect, in_force)
        if create:
            self.create_tables()

    # --- plumbing ---------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._engines()[0]

    @property
    def fast_engine(self) -> Engine:
        """Where the fast statements run: on PostgreSQL a pool of autocommit connections."""
        return self._engines()[1]

    def _engines(self) -> tuple[Engine, Engine]:
        # Looked up once per process: the lookup's key rendered the URL on every call.
        pid = os.getpid()
        if self._engines_of[0] != pid:
            engine = _engine.engine_for(self.url, self.engine_options)
            fast = engine
            if self.dialect == "postgresql":
                options = {**self.engine_options, "isolation_level": "AUTOCOMMIT"}
                fast = _engine.engine_for(self.url, options)
            self._engines_of = (pid, (engine, fast))
        return self._engines_of[1]

    def _open_async(self) -> _AsyncEngines:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(
            self.url.set(drivername="postgresql+psycopg"), **self.engine_options
        )
        if not self.engine_options.get("pool_pre_ping"):
            _engine.ping_when_idle(engine.sync_engine)
        return _AsyncEngines(engine, engine.execution_options(isolation_level="AUTOCOMMIT"))

    async def _arun(self, what: str, fn: Any, one_statement: bool = False) -> Any:
        """:meth:`_run` on this loop's async engine: ``fn`` runs through ``run_sync``
        (SQLAlchemy awaits the driver underneath), with the same retries."""
        engines = await self._async.get()

        async def attempt() -> Any:
            try:
                if one_statement:
                    async with engines.autocommit.connect() as conn:
                        return await conn.run_sync(lambda sync: fn(ConnectionRunner(sync)))
                async with engines.engine.begin() as conn:
                    return await conn.run_sync(fn)
            except sa.exc.DBAPIError as exc:
                self._raise_if_missing_tables(exc)
                raise

        return await self.retry.arun(what, self.where, attempt)

    def _run(self, what: str, fn: Any, one_statement: bool = False) -> Any:
        """Run ``fn(connection)`` in one transaction, retrying transient errors.

        ``one_statement``: ``fn`` runs a single statement, atomic by itself: on
        the fast path (see _fast), in autocommit where that is free (PostgreSQL,
        SQLite), which skips BEGIN and COMMIT, two of the three round trips.
        """

        def attempt() -> Any:
            if one_statement:
                return fn(DirectRunner(self.fast_engine))
            with self.engine.begin() as conn:
                return fn(conn)

        return self.retry.run(what, self.where, lambda: self._tables_checked(attempt))

    def _tables_checked(self, attempt: Callable[[], Any]) -> Any:
        # A missing table is no transient error (SQLite reports it as an
        # OperationalError, which was retried and then blamed on the connection);
        # say which tables and how to create them.
        try:
            return attempt()
        except sa.exc.DBAPIError as exc:
            self._raise_if_missing_tables(exc)
            raise

    def _raise_if_missing_tables(self, exc: sa.exc.DBAPIError) -> None:
        if _missing_table(exc):
            names = ", ".join(t.fullname for t in self.tables.metadata.sorted_tables)
            raise MissingTablesError(
                f"the result tables ({names}) are missing on {self.where}: "
                f"{_first_line(exc)}; create them with "
                "resultstore_db.create_tables(url), or leave database_create_tables_at_setup "
                "at True"
            ) from exc

    def create_tables(self) -> None:
        """Create the tables (and sequences) that are missing; a clear error without the right."""

        def create() -> None:
            # Inside the retried call: MySQL/MariaDB report a denied CREATE as an
            # OperationalError, which the retry policy takes for a lost connection.
            try:
                self.tables.metadata.create_all(self.engine)
            except sa.exc.DBAPIError as exc:
                if not _denied(exc):
                    raise
                raise PermissionError(
                    f"cannot create the result tables on {self.where}: "
                    f"{_first_line(exc)}; create them as a user with "
                    "the right (resultstore_db.create_tables(url)) and set "
                    "database_create_tables_at_setup=False"
                ) from exc

        self.retry.run("creating tables", self.where, create)

    # --- rows <-> metas --------------------------------------------------------------------

    def _row_values(self, meta: TaskMeta) -> dict[str, Any]:
        dumps = self.codec.dumps
        what = f"result of task {meta.task_id!r}"
        values: dict[str, Any] = {
            "status": meta.status,
            "result": dumps(meta.result, what),
            "date_done": _naive_utc(meta.date_done or datetime.now(timezone.utc)),
            "traceback": meta.traceback,
            "children": dumps(meta.children, what) if meta.children else None,
            "name": meta.name,
            "args": dumps(meta.args, what) if meta.extended else None,
            "kwargs": dumps(meta.kwargs, what) if meta.extended else None,
            "worker": meta.worker,
            "retries": meta.retries,
            "queue": meta.queue,
        }
        return values

    def _meta(self, row: Mapping[str, Any]) -> TaskMeta:
        loads = self.codec.loads
        task_id = row["task_id"]
        what = f"stored result of task {task_id!r}"
        status, result, children = row["status"], row["result"], row["children"]
        name, args, kwargs, worker = row["name"], row["args"], row["kwargs"], row["worker"]
        date_done = row["date_done"] if status in READY_STATES else None
        return TaskMeta.from_fields(
            {
                "task_id": task_id,
                "status": status,
                "result": loads(result, what) if result is not None else None,
                "traceback": row["traceback"],
                "children": loads(children, what) if children is not None else [],
                "date_done": date_done.replace(tzinfo=timezone.utc) if date_done else None,
                "group_id": None,
                "parent_id": None,
                "extended": name is not None or args is not None or worker is not None,
                "name": name,
                "args": loads(args, what) if args is not None else None,
                "kwargs": loads(kwargs, what) if kwargs is not None else None,
                "worker": worker,
                "retries": row["retries"],
                "queue": row["queue"],
            }
        )

    # --- hooks ---------------------------------------------------------------------------------

    @hookimpl
    def store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        return bool(self._run(*self._store(meta, overwrite)))

    @hookimpl
    async def async_store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        return bool(await self._arun(*self._store(meta, overwrite)))

    def _store(self, meta: TaskMeta, overwrite: bool) -> _Op:
        values = self._row_values(meta)
        upsert = self.dialect in ("postgresql", "sqlite")
        attempts = 0

        def store(db: Any) -> bool:  # a runner for the upsert, else a Connection
            nonlocal attempts
            attempts += 1
            if upsert:
                params = {"task_id": meta.task_id, **values}
                written = db.first(self._fast_upsert[overwrite], params, write=True) is not None
            else:
                keep_ready = None if overwrite else self.tables.task.c.status.notin_(_READY)
                written = self._store_generic(db, meta.task_id, values, keep_ready)
            if not written and attempts > 1:
                # A retry after the connection died in COMMIT (server killed or
                # restarted): that commit may have gone through with only its reply
                # lost, and then the ready row blocking this attempt is our own write,
                # not a duplicate's. Reporting False would tell the caller otherwise.
                row = (db if upsert else ConnectionRunner(db)).first(
                    self._fast_select, {"task_id": meta.task_id}
                )
                return row is not None and all(
                    row[name] == values[name] for name in ("status", "result", "traceback")
                )
            return written

        return f"storing task {meta.task_id!r}", store, upsert

    def _upsert(self, overwrite: bool) -> Any:
        """The store statement on PostgreSQL and SQLite: the ready guard inside the upsert."""
        task = self.tables.task
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        row = insert(task).values(
            {name: sa.bindparam(name, type_=task.c[name].type, required=False) for name in _STORED}
        )
        stmt: Any = row.on_conflict_do_update(
            index_elements=[task.c.task_id],
            set_={name: row.excluded[name] for name in _STORED if name != "task_id"},
            where=None if overwrite else task.c.status.notin_(_READY),
        ).returning(task.c.task_id)
        if self.dialect == "postgresql":
            # The notification is part of the same statement and transaction: sent
            # on commit, and only when the row was written.
            written = stmt.cte("written")
            stmt = sa.select(sa.func.pg_notify(task.name, written.c.task_id))
        return stmt

    def _store_generic(
        self, conn: Connection, task_id: str, values: dict[str, Any], keep_ready: Any
    ) -> bool:
        """Engines without a conditional upsert (MySQL, MariaDB): conditional UPDATE, else INSERT.

        The UPDATE's WHERE makes the ready check and the write one statement. When
        it matches nothing, the row is missing, ready, or being inserted by another
        writer right now (InnoDB's semi-consistent read skips such rows): a locking
        read waits for that writer and tells which.
        """
        task = self.tables.task
        update = task.update().where(task.c.task_id == task_id).values(**values)
        if keep_ready is not None:
            update = update.where(keep_ready)
        locked = sa.select(task.c.status).where(task.c.task_id == task_id).with_for_update()
        for _ in range(3):
            if conn.execute(update).rowcount:
                return True
            row = conn.execute(locked).first()
            if row is not None:
                if keep_ready is not None and row.status in READY_STATES:
                    return False
                continue  # we hold the row lock now: the UPDATE will match
            try:
                with conn.begin_nested():
                    conn.execute(task.insert().values(task_id=task_id, **values))
                return True
            except sa.exc.IntegrityError:
                continue  # another writer inserted it first
        raise RuntimeError(f"task {task_id!r}: the row kept changing under three store attempts")

    @hookimpl
    def get(self, task_id: str) -> TaskMeta | None:
        return self._meta_or_none(self._run(*self._get(task_id)))

    @hookimpl
    async def async_get(self, task_id: str) -> TaskMeta | None:
        return self._meta_or_none(await self._arun(*self._get(task_id)))

    def _get(self, task_id: str) -> _Op:
        def read(db: Any) -> Any:
            return db.first(self._fast_select, {"task_id": task_id})

        return f"reading task {task_id!r}", read, True

    def _meta_or_none(self, row: Any) -> TaskMeta | None:
        return None if row is None else self._meta(row)

    @hookimpl
    def get_many(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        return {row["task_id"]: self._meta(row) for row in self._run(*self._get_many(task_ids))}

    @hookimpl
    async def async_get_many(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        rows = await self._arun(*self._get_many(task_ids))
        return {row["task_id"]: self._meta(row) for row in rows}

    def _get_many(self, task_ids: Sequence[str]) -> _Op:
        def read(db: Any) -> list[dict[str, Any]]:
            if self.dialect == "postgresql":
                # One array parameter, not a long IN list: one plan, any number of ids.
                return db.all(self._fast_any, {"ids": list(task_ids)})  # type: ignore[no-any-return]
            rows: list[dict[str, Any]] = []
            for start in range(0, len(task_ids), _IN_CHUNK):
                statement, params = self._fast_in(task_ids[start : start + _IN_CHUNK])
                rows += db.all(statement, params)
            return rows

        return f"reading {len(task_ids)} tasks", read, True

    def _fast_in(self, chunk: Sequence[str]) -> tuple[FastStatement, dict[str, str]]:
        """``task_id IN (...)`` for ``chunk``, with room for 10, 100 or _IN_CHUNK ids: a
        few statements, each prepared once by the driver, padded with the first id."""
        size = next(size for size in (10, 100, _IN_CHUNK) if len(chunk) <= size)
        statement = self._fast_in_lists.get(size)
        if statement is None:
            task = self.tables.task
            ids: list[Any] = [sa.bindparam(f"id{i}", required=False) for i in range(size)]
            select = sa.select(task).where(task.c.task_id.in_(ids))
            statement = self._fast_in_lists[size] = FastStatement(self.engine.dialect, select)
        padded = [*chunk, *[chunk[0]] * (size - len(chunk))]
        return statement, {f"id{i}": task_id for i, task_id in enumerate(padded)}

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
    def save_group(self, meta: GroupMeta, ttl: float | None) -> bool:
        group = self.tables.group
        # Celery stores the group's as_tuple form itself in the result column.
        data = self.codec.dumps(meta.result, f"group {meta.group_id!r}")
        now = _naive_utc(datetime.now(timezone.utc))

        def save(conn: Connection) -> bool:
            conn.execute(group.delete().where(group.c.taskset_id == meta.group_id))
            conn.execute(
                group.insert().values(taskset_id=meta.group_id, result=data, date_done=now)
            )
            return True

        return bool(self._run(f"saving group {meta.group_id!r}", save))

    @hookimpl
    def get_group(self, group_id: str) -> GroupMeta | None:
        group = self.tables.group
        row = self._run(
            f"reading group {group_id!r}",
            lambda conn: conn.execute(
                sa.select(group.c.result).where(group.c.taskset_id == group_id)
            ).first(),
        )
        if row is None:
            return None
        return GroupMeta(group_id, self.codec.loads(row.result, f"stored group {group_id!r}"))

    @hookimpl
    def forget_group(self, group_id: str) -> bool:
        group = self.tables.group
        return bool(
            self._run(
                f"deleting group {group_id!r}",
                lambda conn: (
                    conn.execute(group.delete().where(group.c.taskset_id == group_id)).rowcount
                ),
            )
        )

    @hookimpl
    def revoke(self, task_id: str, ttl: float | None) -> bool:
        revoked = self.tables.revoked
        expires_at = None if ttl is None else _naive_utc(_now() + timedelta(seconds=ttl))

        def record(conn: Connection) -> bool:
            conn.execute(revoked.delete().where(revoked.c.task_id == task_id))
            conn.execute(revoked.insert().values(task_id=task_id, expires_at=expires_at))
            return True

        return bool(self._run(f"revoking task {task_id!r}", record))

    @hookimpl
    def is_revoked(self, task_id: str) -> bool:
        params = {"task_id": task_id, "now": _naive_utc(_now())}
        found = self._run(
            "reading revocations", lambda db: db.first(self._fast_revoked, params), True
        )
        return found is not None

    @hookimpl
    def cleanup(self, progress: Callable[[int], None]) -> int:
        """Delete expired rows in batches of ``CLEANUP_BATCH``, one short transaction each."""
        now = _now()
        removed = 0
        if self.config.expires is not None:
            cutoff = _naive_utc(now - timedelta(seconds=self.config.expires))
            for table in (self.tables.task, self.tables.group):
                removed += self._delete_batches(
                    table, table.c.id, table.c.date_done < cutoff, progress
                )
        revoked = self.tables.revoked
        self._delete_batches(
            revoked, revoked.c.task_id, revoked.c.expires_at < _naive_utc(now), _ignore
        )
        return removed

    def _delete_batches(
        self,
        table: sa.Table,
        key: sa.Column[Any],
        expired: Any,
        progress: Callable[[int], None],
    ) -> int:
        removed = 0
        while True:

            def batch(conn: Connection) -> int:
                ids = conn.execute(sa.select(key).where(expired).limit(CLEANUP_BATCH)).scalars()
                found = list(ids)
                if found:
                    conn.execute(table.delete().where(key.in_(found)))
                return len(found)

            count = int(self._run(f"cleaning up {table.name}", batch))
            removed += count
            if count:
                progress(count)
            if count < CLEANUP_BATCH:
                return removed

    @hookimpl
    def notify(self, on_change: OnChange) -> ListenChannel:
        from ._listen import ListenChannel  # not at import: SQLite/MariaDB need no psycopg

        conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        channel = self.retry.run(
            "opening the LISTEN channel",
            self.where,
            lambda: ListenChannel(
                conninfo,
                self.tables.task.name,
                on_change,
                name=f"resultstore-db-listener {self.where}",
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

    def subscribed_ids(self) -> frozenset[str]:
        return frozenset().union(*(c.subscribed_ids() for c in self._channels))


async def _dispose(engines: _AsyncEngines) -> None:
    await engines.engine.dispose()


def create_tables(url: str, **options: Any) -> None:
    """Create resultstore's (Celery's) tables ahead of time, e.g. as a privileged user.

    Raises :class:`PermissionError` (naming the masked URL) when the user lacks the right.
    """
    from resultstore import Backend

    with Backend(url, options={**options, "database_create_tables_at_setup": True}):
        pass


def _first_line(exc: sa.exc.DBAPIError) -> str:
    """The driver's message without SQLAlchemy's SQL echo (PostgreSQL adds LINE ... lines)."""
    lines = str(exc.orig).strip().splitlines()
    return lines[0] if lines else type(exc.orig).__name__


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _errno(exc: sa.exc.DBAPIError) -> object:
    args = getattr(exc.orig, "args", ())
    return args[0] if args else None


def _missing_table(exc: sa.exc.DBAPIError) -> bool:
    """Undefined table or sequence: PostgreSQL 42P01, MySQL/MariaDB 1146, SQLite's text."""
    return (
        _sqlstate(exc) == "42P01"
        or _errno(exc) == 1146
        or str(exc.orig).startswith("no such table")
    )


def _denied(exc: sa.exc.DBAPIError) -> bool:
    """No right to create: PostgreSQL 42501, MySQL/MariaDB 1044/1142, a read-only SQLite."""
    return (
        _sqlstate(exc) == "42501"
        or _errno(exc) in (1044, 1142)
        or "readonly database" in str(exc.orig)
    )


def _mapping(options: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = options.get(name) or {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, got {value!r}")
    return dict(value)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _naive_utc(value: datetime) -> datetime:
    """Celery's DateTime columns hold naive UTC."""
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def _ignore(count: int) -> None:
    """Expired revocation records are not results: cleanup() does not count them."""
