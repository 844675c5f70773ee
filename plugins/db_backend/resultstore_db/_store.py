"""One store: the dialect's single statement, and what its outcome tells."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resultstore import READY_STATES

from ._fast import ConnectionRunner
from ._statements import Statements


def store_function(
    statements: Statements, dialect: str, task_id: str, values: dict[str, Any], overwrite: bool
) -> tuple[Callable[[Any], bool], bool]:
    """The function that stores ``values`` for ``task_id`` (retried as one attempt each),
    and whether it runs a single statement (then it takes a runner of fast statements,
    else a SQLAlchemy Connection in a transaction)."""
    params = {"task_id": task_id, **values}
    upsert = dialect in ("postgresql", "sqlite")
    mysql = dialect in ("mysql", "mariadb")
    attempts = 0

    def store(db: Any) -> bool:
        nonlocal attempts
        attempts += 1
        unchanged = False
        if upsert:
            written = db.first(statements.upsert[overwrite], params, write=True) is not None
        elif mysql:
            changed = db.count(statements.mysql_upsert(overwrite, db.engine), params)
            # 0: the row was left as it was. Without overwrite that is a ready state
            # kept, or an unfinished one stored again with equal values (the read
            # below tells which); with overwrite, our values are there either way.
            unchanged = not changed and not overwrite
            written = changed > 0 or overwrite
        else:
            written = statements.store_generic(db, task_id, values, not overwrite)
        if written or not (unchanged or attempts > 1):
            return written
        row = (db if upsert or mysql else ConnectionRunner(db)).first(
            statements.select, {"task_id": task_id}
        )
        if row is None:
            return False
        if unchanged and row["status"] not in READY_STATES:
            return True
        # A retry after the connection died in COMMIT (server killed or
        # restarted): that commit may have gone through with only its reply
        # lost, and then the ready row blocking this attempt is our own write,
        # not a duplicate's. Reporting False would tell the caller otherwise.
        return attempts > 1 and all(
            row[name] == values[name] for name in ("status", "result", "traceback")
        )

    return store, upsert or mysql
