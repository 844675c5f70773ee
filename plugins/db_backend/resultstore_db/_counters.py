"""Counters (capability ``counter``): one upsert that adds and returns, atomic in the server.

PostgreSQL and SQLite run ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``;
MySQL and MariaDB ``INSERT ... ON DUPLICATE KEY UPDATE`` and read the row back
in the same transaction, which holds the row's lock from the upsert to its
commit. Either way, of many processes incrementing at once each gets a value of
its own. An expired counter
counts from the increment again; ``cleanup()`` deletes expired rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from resultstore import hookimpl

from ._rows import naive_utc, now
from ._schema import Tables


def supports_counters(dialect: str) -> bool:
    if dialect == "sqlite":
        return sqlite3.sqlite_version_info >= (3, 35)  # RETURNING
    return dialect in ("postgresql", "mysql", "mariadb")


class CounterHooks:
    """Mixed into DatabaseBackend, whose ``_run`` runs a function in one retried transaction."""

    tables: Tables
    dialect: str
    _run: Callable[..., Any]

    @hookimpl
    def incr(self, name: str, amount: int, ttl: float | None) -> int:
        counters = self.tables.counters
        at = now()
        expires_at = None if ttl is None else naive_utc(at + timedelta(seconds=ttl))
        expired = sa.and_(
            counters.c.expires_at.is_not(None), counters.c.expires_at <= naive_utc(at)
        )
        added = sa.case((expired, amount), else_=counters.c.value + amount)

        def step(conn: Connection) -> int:
            if self.dialect in ("mysql", "mariadb"):
                upsert = mysql.insert(counters).values(
                    name=name, value=amount, expires_at=expires_at
                )
                conn.execute(upsert.on_duplicate_key_update(value=added, expires_at=expires_at))
                # Our upsert holds the row's lock until this transaction commits.
                read = sa.select(counters.c.value).where(counters.c.name == name)
                return int(conn.execute(read).scalar_one())
            insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
            statement = (
                insert(counters)
                .values(name=name, value=amount, expires_at=expires_at)
                .on_conflict_do_update(
                    index_elements=[counters.c.name],
                    set_={"value": added, "expires_at": expires_at},
                )
                .returning(counters.c.value)
            )
            return int(conn.execute(statement).scalar_one())

        return int(self._run(f"counting {name!r}", step))

    @hookimpl
    def forget_counter(self, name: str) -> bool:
        counters = self.tables.counters
        by_name = counters.c.name == name
        live = sa.or_(counters.c.expires_at.is_(None), counters.c.expires_at > naive_utc(now()))

        def delete(conn: Connection) -> bool:
            existed = conn.execute(counters.delete().where(by_name, live)).rowcount > 0
            conn.execute(counters.delete().where(by_name))  # an expired one, if any
            return existed

        return bool(self._run(f"deleting counter {name!r}", delete))
