"""The statements of the hot paths (compiled once, see _fast) and of the store.

One statement per store keeps a ready state: on PostgreSQL and SQLite a
conditional upsert (with PostgreSQL's ``pg_notify`` in the same statement), on
MySQL/MariaDB an ``INSERT ... ON DUPLICATE KEY UPDATE`` that keeps a ready row's
columns with ``IF()``; other engines take a conditional UPDATE backed by a
locking read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from resultstore import READY_STATES

from ._fast import FastStatement
from ._rows import STORED, read_columns, unpack
from ._schema import Tables

READY = sorted(READY_STATES)
IN_CHUNK = 500  # ids per IN (...) list on engines without arrays


class Statements:
    """One backend's fast statements, for its tables and dialect."""

    def __init__(self, tables: Tables, dialect: sa.Dialect) -> None:
        self.tables = tables
        self.dialect = dialect
        task, revoked = tables.task, tables.revoked
        by_id = task.c.task_id == sa.bindparam("task_id", required=False)
        self._columns = read_columns(task, dialect.name)
        self._unpack = unpack if dialect.name in ("mysql", "mariadb") else None
        self.select = self._fast(sa.select(*self._columns).where(by_id))
        self.upsert = {
            overwrite: FastStatement(dialect, self._upsert(overwrite))
            for overwrite in (False, True)
            if dialect.name in ("postgresql", "sqlite")
        }
        any_id = task.c.task_id == sa.any_(
            sa.bindparam("ids", type_=postgresql.ARRAY(sa.String), required=False)
        )
        self.select_any = self._fast(sa.select(*self._columns).where(any_id))
        self._in_lists: dict[int, FastStatement] = {}
        self._mysql_upserts: dict[bool, FastStatement] = {}
        now = sa.bindparam("now", type_=revoked.c.expires_at.type, required=False)
        in_force = sa.select(revoked.c.task_id).where(
            revoked.c.task_id == sa.bindparam("task_id", required=False),
            sa.or_(revoked.c.expires_at.is_(None), revoked.c.expires_at > now),
        )
        self.revoked = FastStatement(dialect, in_force)

    def _fast(self, select: Any) -> FastStatement:
        """A read of metas' rows."""
        return FastStatement(self.dialect, select, unpack=self._unpack)

    def _upsert(self, overwrite: bool) -> Any:
        """The store statement on PostgreSQL and SQLite: the ready guard inside the upsert."""
        task = self.tables.task
        insert = postgresql.insert if self.dialect.name == "postgresql" else sqlite.insert
        row = insert(task).values(
            {name: sa.bindparam(name, type_=task.c[name].type, required=False) for name in STORED}
        )
        stmt: Any = row.on_conflict_do_update(
            index_elements=[task.c.task_id],
            set_={name: row.excluded[name] for name in STORED if name != "task_id"},
            where=None if overwrite else task.c.status.notin_(READY),
        ).returning(task.c.task_id)
        if self.dialect.name == "postgresql":
            # The notification is part of the same statement and transaction: sent
            # on commit, and only when the row was written.
            written = stmt.cte("written")
            stmt = sa.select(sa.func.pg_notify(task.name, written.c.task_id))
        return stmt

    def mysql_upsert(self, overwrite: bool, engine: Engine) -> FastStatement:
        """The store statement on MySQL/MariaDB, one round trip: an INSERT whose ON
        DUPLICATE KEY UPDATE keeps every column of a row in a ready state with ``IF()``.

        ``status`` is assigned last: MySQL makes the assignments in order, and a column
        read after its own assignment has the new value. Built at the first store, on
        ``engine``'s dialect once it has met the server: MariaDB takes the id from
        Celery's sequence, MySQL (no sequences) from AUTO_INCREMENT. The driver's count
        tells the outcome (the engine reports changed rows, see _engine): 1 inserted, 2
        updated, 0 left as it was.
        """
        statement = self._mysql_upserts.get(overwrite)
        if statement is None:
            if engine.dialect.server_version_info is None:
                engine.connect().close()  # the dialect learns the server's version
            task = self.tables.task
            values: dict[str, Any] = {
                name: sa.bindparam(name, type_=task.c[name].type, required=False) for name in STORED
            }
            sequence = task.c.id.default
            if engine.dialect.supports_sequences and isinstance(sequence, sa.Sequence):
                values["id"] = sequence.next_value()
            row = mysql.insert(task).values(values)
            # Constants in the SQL: SQLAlchemy leaves a bound IN list inside ON
            # DUPLICATE KEY UPDATE unrendered.
            ready = task.c.status.in_([sa.literal_column(f"'{state}'") for state in READY])
            updates = [
                (
                    name,
                    row.inserted[name]
                    if overwrite
                    else sa.func.IF(ready, task.c[name], row.inserted[name]),
                )
                for name in [n for n in STORED if n not in ("task_id", "status")] + ["status"]
            ]
            upsert = row.on_duplicate_key_update(updates)
            statement = self._mysql_upserts[overwrite] = FastStatement(engine.dialect, upsert)
        return statement

    def select_in(self, chunk: Sequence[str]) -> tuple[FastStatement, dict[str, str]]:
        """``task_id IN (...)`` for ``chunk``, with room for 10, 100 or IN_CHUNK ids: a
        few statements, each prepared once by the driver, padded with the first id."""
        size = next(size for size in (10, 100, IN_CHUNK) if len(chunk) <= size)
        statement = self._in_lists.get(size)
        if statement is None:
            task = self.tables.task
            ids: list[Any] = [sa.bindparam(f"id{i}", required=False) for i in range(size)]
            select = sa.select(*self._columns).where(task.c.task_id.in_(ids))
            statement = self._in_lists[size] = self._fast(select)
        padded = [*chunk, *[chunk[0]] * (size - len(chunk))]
        return statement, {f"id{i}": task_id for i, task_id in enumerate(padded)}

    def store_generic(
        self, conn: Connection, task_id: str, values: dict[str, Any], keep_ready: bool
    ) -> bool:
        """Engines without a conditional upsert (MySQL, MariaDB): conditional UPDATE, else INSERT.

        The UPDATE's WHERE makes the ready check and the write one statement. When
        it matches nothing, the row is missing, ready, or being inserted by another
        writer right now (InnoDB's semi-consistent read skips such rows): a locking
        read waits for that writer and tells which.
        """
        task = self.tables.task
        update = task.update().where(task.c.task_id == task_id).values(**values)
        if keep_ready:
            update = update.where(task.c.status.notin_(READY))
        locked = sa.select(task.c.status).where(task.c.task_id == task_id).with_for_update()
        for _ in range(3):
            if conn.execute(update).rowcount:
                return True
            row = conn.execute(locked).first()
            if row is not None:
                if keep_ready and row.status in READY_STATES:
                    return False
                continue  # we hold the row lock now: the UPDATE will match
            try:
                with conn.begin_nested():
                    conn.execute(task.insert().values(task_id=task_id, **values))
                return True
            except sa.exc.IntegrityError:
                continue  # another writer inserted it first
        raise RuntimeError(f"task {task_id!r}: the row kept changing under three store attempts")
