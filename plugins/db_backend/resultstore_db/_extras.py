"""The optional hooks: groups (Celery's taskset table), revocations, and the expiry sweep."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from resultstore import BackendConfig, Codec, GroupMeta, hookimpl

from ._rows import naive_utc, now
from ._schema import Tables
from ._statements import Statements

CLEANUP_BATCH = 1000


class ExtraHooks:
    """Mixed into DatabaseBackend, whose ``_run`` runs a function in one retried transaction."""

    config: BackendConfig
    codec: Codec
    tables: Tables
    statements: Statements
    _run: Callable[..., Any]

    @hookimpl
    def save_group(self, meta: GroupMeta, ttl: float | None) -> bool:
        group = self.tables.group
        # Celery stores the group's as_tuple form itself in the result column.
        data = self.codec.dumps(meta.result, f"group {meta.group_id!r}")
        saved_at = naive_utc(now())

        def save(conn: Connection) -> bool:
            conn.execute(group.delete().where(group.c.taskset_id == meta.group_id))
            conn.execute(
                group.insert().values(taskset_id=meta.group_id, result=data, date_done=saved_at)
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
        expires_at = None if ttl is None else naive_utc(now() + timedelta(seconds=ttl))

        def record(conn: Connection) -> bool:
            conn.execute(revoked.delete().where(revoked.c.task_id == task_id))
            conn.execute(revoked.insert().values(task_id=task_id, expires_at=expires_at))
            return True

        return bool(self._run(f"revoking task {task_id!r}", record))

    @hookimpl
    def is_revoked(self, task_id: str) -> bool:
        params = {"task_id": task_id, "now": naive_utc(now())}
        found = self._run(
            "reading revocations", lambda db: db.first(self.statements.revoked, params), True
        )
        return found is not None

    @hookimpl
    def cleanup(self, progress: Callable[[int], None]) -> int:
        """Delete expired rows in batches of ``CLEANUP_BATCH``, one short transaction each."""
        started = now()
        removed = 0
        if self.config.expires is not None:
            cutoff = naive_utc(started - timedelta(seconds=self.config.expires))
            for table in (self.tables.task, self.tables.group):
                removed += self._delete_batches(
                    table, table.c.id, table.c.date_done < cutoff, progress
                )
        for kept in (self.tables.revoked, self.tables.counters):
            key = kept.c.task_id if kept is self.tables.revoked else kept.c.name
            self._delete_batches(kept, key, kept.c.expires_at < naive_utc(started), _ignore)
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


def _ignore(count: int) -> None:
    """Expired revocations and counters are not results: cleanup() does not count them."""
