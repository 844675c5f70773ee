"""Celery's result tables, column for column, with Celery's options for names and schemas."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

# Celery: Integer, BigInteger on MSSQL.
_ID = sa.Integer().with_variant(sa.BigInteger, "mssql")
# DATETIME keeps whole seconds on MySQL/MariaDB unless asked; expiry needs better.
_DATE = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


@dataclass(frozen=True)
class Tables:
    metadata: sa.MetaData
    task: sa.Table
    group: sa.Table
    revoked: sa.Table


def make_tables(names: Mapping[str, str], schemas: Mapping[str, str]) -> Tables:
    """``names`` / ``schemas``: Celery's ``database_table_names`` / ``database_table_schemas``."""
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
        sa.Column("task_id", sa.String(155), unique=True),
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
        sa.Column("taskset_id", sa.String(155), unique=True),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("date_done", _DATE, nullable=True, index=True),
        schema=group_schema,
        sqlite_autoincrement=True,
    )
    # Not Celery's: revocations (Celery keeps them in worker memory). Celery ignores it.
    revoked = sa.Table(
        "resultstore_revoked",
        metadata,
        sa.Column("task_id", sa.String(155), primary_key=True),
        sa.Column("expires_at", _DATE, nullable=True, index=True),
        schema=task_schema,
    )
    return Tables(metadata, task, group, revoked)
