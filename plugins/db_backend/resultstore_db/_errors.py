"""What a database's errors mean: a missing table, a denied CREATE."""

from __future__ import annotations

import sqlalchemy as sa

from resultstore import ResultStoreError


class MissingTablesError(ResultStoreError):
    """The result tables are not there (``database_create_tables_at_setup=False``)."""


def first_line(exc: sa.exc.DBAPIError) -> str:
    """The driver's message without SQLAlchemy's SQL echo (PostgreSQL adds LINE ... lines)."""
    lines = str(exc.orig).strip().splitlines()
    return lines[0] if lines else type(exc.orig).__name__


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _errno(exc: sa.exc.DBAPIError) -> object:
    args = getattr(exc.orig, "args", ())
    return args[0] if args else None


def missing_table(exc: sa.exc.DBAPIError) -> bool:
    """Undefined table or sequence: PostgreSQL 42P01, MySQL/MariaDB 1146, SQLite's text."""
    return (
        _sqlstate(exc) == "42P01"
        or _errno(exc) == 1146
        or str(exc.orig).startswith("no such table")
    )


def denied(exc: sa.exc.DBAPIError) -> bool:
    """No right to create: PostgreSQL 42501, MySQL/MariaDB 1044/1142, a read-only SQLite."""
    return (
        _sqlstate(exc) == "42501"
        or _errno(exc) in (1044, 1142)
        or "readonly database" in str(exc.orig)
    )
