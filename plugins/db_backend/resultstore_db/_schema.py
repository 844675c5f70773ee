"""Celery's result tables, column for column, with Celery's options for names and schemas."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

# Celery: Integer, BigInteger on MSSQL.
_ID = sa.Integer().with_variant(sa.BigInteger, "mssql")
# DATETIME keeps whole seconds on MySQL/MariaDB unless asked; expiry needs better.
_DATE = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Ids compare byte for byte, as on PostgreSQL and SQLite. MySQL's and MariaDB's
# default collations (utf8mb4_general_ci, utf8mb4_0900_ai_ci) take "Job-1" for
# "job-1" and "é" for "e": a second task's store was refused as a duplicate, its
# read returned the other's result, and a forget deleted both. utf8mb4_bin exists
# on both servers; it ignores trailing spaces, which ids cannot have (the core
# refuses them).
ID_COLLATION = "utf8mb4_bin"
_ID_STRING = sa.String(155).with_variant(
    mysql.VARCHAR(155, charset="utf8mb4", collation=ID_COLLATION), "mysql", "mariadb"
)


# Identifiers: PostgreSQL keeps 63 bytes, MySQL/MariaDB 64.
_MAX_NAME = 63


@dataclass(frozen=True)
class Tables:
    metadata: sa.MetaData
    task: sa.Table
    group: sa.Table
    revoked: sa.Table
    counters: sa.Table
    listing: sa.Index


def task_id_order(task: sa.Table, dialect: str) -> sa.ColumnElement[str]:
    """The task id as listing orders and compares it: code point by code point, as
    Python's ``str`` (the listing's cursor). SQLite's BINARY and the ``utf8mb4_bin`` of
    MySQL/MariaDB do that; PostgreSQL's database collation may be a language's (where
    "a-b" sorts between "ab" and "ac"), so there the "C" collation is asked for."""
    column: sa.ColumnElement[str] = task.c.task_id
    return column.collate("C") if dialect == "postgresql" else column


def listing_index_name(task: sa.Table) -> str:
    name = f"ix_{task.name}_status_date_done_task_id"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha1(task.name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_NAME - 9]}_{digest}"


def make_tables(names: Mapping[str, str], schemas: Mapping[str, str], dialect: str = "") -> Tables:
    """``names`` / ``schemas``: Celery's ``database_table_names`` / ``database_table_schemas``;
    ``dialect`` the engine's name (PostgreSQL's listing index is collated)."""
    metadata = sa.MetaData()
    # The id sequences live in their table's schema, where Celery's ``configure()``
    # puts them: with the sequence in the default schema, Celery could not insert
    # into tables created here (relation "s1.task_id_sequence" does not exist), nor
    # could we into tables Celery created.
    task_schema, group_schema = schemas.get("task"), schemas.get("group")
    task = sa.Table(
        names.get("task", "celery_taskmeta"),
        metadata,
        sa.Column(
            "id",
            _ID,
            sa.Sequence("task_id_sequence", schema=task_schema),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("task_id", _ID_STRING, unique=True),
        sa.Column("status", sa.String(50)),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("date_done", _DATE, nullable=True, index=True),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.Column("children", sa.LargeBinary, nullable=True),
        # Celery's TaskExtended columns (result_extended=True); NULL otherwise.
        sa.Column("name", sa.String(155), nullable=True),
        sa.Column("args", sa.LargeBinary, nullable=True),
        sa.Column("kwargs", sa.LargeBinary, nullable=True),
        sa.Column("worker", sa.String(155), nullable=True),
        sa.Column("retries", sa.Integer, nullable=True),
        sa.Column("queue", sa.String(155), nullable=True),
        sa.Column("stamps", sa.LargeBinary, nullable=True),
        schema=task_schema,
        sqlite_autoincrement=True,
    )
    # Not Celery's: what listing reads (capability "listing", see _listing). Each state
    # is one range of it, in the listing's order (date_done, then task id), so a page
    # of a state is read in order and stops at its limit, from the top or from a
    # cursor; counts over a window read it alone (every column they need is in it).
    # Created with the table; on a table that exists already (Celery's, or an older
    # version's) nothing is altered: the README gives the CREATE INDEX to run, and
    # listing works without it, by sorting.
    listing = sa.Index(
        listing_index_name(task), task.c.status, task.c.date_done, task_id_order(task, dialect)
    )
    group = sa.Table(
        names.get("group", "celery_tasksetmeta"),
        metadata,
        sa.Column(
            "id",
            _ID,
            sa.Sequence("taskset_id_sequence", schema=group_schema),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("taskset_id", _ID_STRING, unique=True),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("date_done", _DATE, nullable=True, index=True),
        schema=group_schema,
        sqlite_autoincrement=True,
    )
    # Not Celery's: revocations (Celery keeps them in worker memory). Celery ignores it.
    revoked = sa.Table(
        "resultstore_revoked",
        metadata,
        sa.Column("task_id", _ID_STRING, primary_key=True),
        sa.Column("expires_at", _DATE, nullable=True, index=True),
        schema=task_schema,
    )
    # Not Celery's either: counters (capability "counter", for chords). Celery ignores it.
    counters = sa.Table(
        "resultstore_counters",
        metadata,
        sa.Column("name", _ID_STRING, primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("expires_at", _DATE, nullable=True, index=True),
        schema=task_schema,
    )
    return Tables(metadata, task, group, revoked, counters, listing)


def collation_fixes(conn: Connection, tables: Tables) -> list[str]:
    """On MySQL/MariaDB: the ``ALTER TABLE`` statements that make existing id columns
    compare byte for byte (tables created by Celery, or by an older version of this
    plugin, have the database's default collation)."""
    dialect = conn.dialect
    fixes = []
    for column in (tables.task.c.task_id, tables.group.c.taskset_id, tables.revoked.c.task_id):
        table = column.table
        assert isinstance(table, sa.Table)
        collation = conn.execute(
            sa.text(
                "SELECT COLLATION_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) "
                "AND TABLE_NAME = :table AND COLUMN_NAME = :column"
            ),
            {"schema": table.schema, "table": table.name, "column": column.name},
        ).scalar()
        if collation is None or collation.endswith("_bin"):
            continue
        spec = sa.schema.CreateColumn(column).compile(dialect=dialect)
        fixes.append(f"ALTER TABLE {dialect.identifier_preparer.format_table(table)} MODIFY {spec}")
    return fixes
