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

from collections.abc import Callable, Mapping, Sequence
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
    ResultStoreError,
    TaskMeta,
    hookimpl,
)

from . import _engine
from ._fast import FastStatement
from ._schema import Tables, make_tables

if TYPE_CHECKING:  # psycopg is the optional extra [postgresql]: imported when LISTEN is used
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
        self.tables: Tables = make_tables(
            _mapping(options, "database_table_names"), _mapping(options, "database_table_schemas")
        )
        caps = {Capability.GET_MANY, Capability.GROUPS, Capability.CLEANUP, Capability.REVOKE}
        if self.dialect == "postgresql":
            caps.add(Capability.PUSH)
        self.capabilities = frozenset(caps)
        self._channels: list[ListenChannel] = []
        # The hot statements, compiled once and run on the bare DB-API cursor.
        task = self.tables.task
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
        if create:
            self.create_tables()

    # --- plumbing ---------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return _engine.engine_for(self.url, self.engine_options)

    def _run(self, what: str, fn: Any, *, one_statement: bool = False) -> Any:
        """Run ``fn(connection)`` in one transaction, retrying transient errors.

        ``one_statement``: ``fn`` runs a single statement, atomic by itself; where
        autocommit is free (PostgreSQL, SQLite) it skips BEGIN and COMMIT, two of
        the three round trips of a read or a store.
        """

        def attempt() -> Any:
            if one_statement and self.dialect in ("postgresql", "sqlite"):
                with _engine.autocommit(self.engine).connect() as conn:
                    return fn(conn)
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
            if not _missing_table(exc):
                raise
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
        return TaskMeta(
            task_id=task_id,
            status=status,
            result=loads(result, what) if result is not None else None,
            traceback=row["traceback"],
            children=loads(children, what) if children is not None else [],
            date_done=date_done.replace(tzinfo=timezone.utc) if date_done else None,
            extended=name is not None or args is not None or worker is not None,
            name=name,
            args=loads(args, what) if args is not None else None,
            kwargs=loads(kwargs, what) if kwargs is not None else None,
            worker=worker,
            retries=row["retries"],
            queue=row["queue"],
        )

    # --- hooks ---------------------------------------------------------------------------------

    @hookimpl
    def store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        values = self._row_values(meta)
        what = f"storing task {meta.task_id!r}"
        attempts = 0

        def store() -> bool:
            nonlocal attempts
            attempts += 1
            if self.dialect in ("postgresql", "sqlite"):
                # One statement, atomic by itself: on the fast path, in autocommit.
                params = {"task_id": meta.task_id, **values}
                row = self._fast_upsert[overwrite].run(self.engine, params, write=True)
                written = row is not None
            else:
                keep_ready = None if overwrite else self.tables.task.c.status.notin_(_READY)
                with self.engine.begin() as conn:
                    written = self._store_generic(conn, meta.task_id, values, keep_ready)
            if not written and attempts > 1:
                # A retry after the connection died in COMMIT (server killed or
                # restarted): that commit may have gone through with only its reply
                # lost, and then the ready row blocking this attempt is our own write,
                # not a duplicate's. Reporting False would tell the caller otherwise.
                return self._holds(meta.task_id, values)
            return written

        return bool(self.retry.run(what, self.where, lambda: self._tables_checked(store)))

    def _holds(self, task_id: str, values: dict[str, Any]) -> bool:
        """Whether the row of ``task_id`` holds the state, result and traceback of ``values``."""
        row = self._fast_select.run(self.engine, {"task_id": task_id})
        return row is not None and (row["status"], row["result"], row["traceback"]) == (
            values["status"],
            values["result"],
            values["traceback"],
        )

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
        row = self.retry.run(
            f"reading task {task_id!r}",
            self.where,
            lambda: self._tables_checked(
                lambda: self._fast_select.run(self.engine, {"task_id": task_id})
            ),
        )
        return None if row is None else self._meta(row)

    @hookimpl
    def get_many(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        def read() -> list[dict[str, Any]]:
            if self.dialect == "postgresql":
                # One array parameter, not a long IN list: one plan, any number of ids.
                return self._fast_any.rows(self.engine, {"ids": list(task_ids)})
            rows: list[dict[str, Any]] = []
            for start in range(0, len(task_ids), _IN_CHUNK):
                statement, params = self._fast_in(task_ids[start : start + _IN_CHUNK])
                rows += statement.rows(self.engine, params)
            return rows

        what = f"reading {len(task_ids)} tasks"
        rows = self.retry.run(what, self.where, lambda: self._tables_checked(read))
        return {row["task_id"]: self._meta(row) for row in rows}

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
        task, revoked = self.tables.task, self.tables.revoked

        def delete(conn: Connection) -> bool:
            conn.execute(revoked.delete().where(revoked.c.task_id == task_id))
            return bool(conn.execute(task.delete().where(task.c.task_id == task_id)).rowcount)

        return bool(self._run(f"forgetting task {task_id!r}", delete))

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
        revoked = self.tables.revoked
        now = _naive_utc(_now())
        query = sa.select(revoked.c.task_id).where(
            revoked.c.task_id == task_id,
            sa.or_(revoked.c.expires_at.is_(None), revoked.c.expires_at > now),
        )
        return bool(
            self._run(
                "reading revocations", lambda conn: conn.execute(query).first(), one_statement=True
            )
        )

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

    def subscribed_ids(self) -> frozenset[str]:
        return frozenset().union(*(c.subscribed_ids() for c in self._channels))


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
