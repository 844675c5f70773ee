"""``cleanup()`` deletes 100,000 expired rows in bounded batches and keeps the rest.

The expired rows go in directly through SQLAlchemy Core (one executemany), the
fresh ones through the backend. Every statement on the plugin's engine
(``backend.plugin.engine``) is watched with cursor events: each
DELETE removes at most ``CLEANUP_BATCH`` rows, and each runs in a transaction
of its own (a COMMIT between any two DELETEs), so no transaction grows with the
number of expired rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from resultstore import Backend, GroupResult
from resultstore_db._extras import CLEANUP_BATCH

KINDS = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}
EXPIRED = 100_000
FRESH = 1_000
EXPIRES = 3600.0  # result_expires, seconds
FIRST_ID = 10_000_000


@pytest.fixture(params=list(KINDS), ids=list(KINDS))
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(KINDS[request.param]))


def naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


LONG_AGO = naive_utc(datetime.now(timezone.utc) - timedelta(days=3))


@dataclass
class Watch:
    """The DELETEs (statement, rows removed) and COMMITs on an engine, in order."""

    events: list[tuple[str, int]] = field(default_factory=list)

    def before(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            self.events.append(("DELETE", -1))

    def after(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            assert self.events[-1] == ("DELETE", -1)
            self.events[-1] = ("DELETE", cursor.rowcount)

    def commit(self, conn: Any) -> None:
        self.events.append(("COMMIT", 0))

    @property
    def deletes(self) -> list[int]:
        return [rows for kind, rows in self.events if kind == "DELETE"]

    def assert_bounded(self) -> None:
        assert self.deletes, "no DELETE ran"
        assert max(self.deletes) <= CLEANUP_BATCH
        for (kind, _), (next_kind, _) in zip(self.events, self.events[1:], strict=False):
            assert not (kind == next_kind == "DELETE"), "two DELETEs in one transaction"


@pytest.fixture
def backend(url: str) -> Iterator[Backend]:
    with Backend(url, expires=EXPIRES) as b:
        yield b


@pytest.fixture
def watch(backend: Backend) -> Iterator[Watch]:
    engine = backend.plugin.engine  # the engine the plugin runs its statements on
    watch = Watch()
    listeners = [
        ("before_cursor_execute", watch.before),
        ("after_cursor_execute", watch.after),
        ("commit", watch.commit),
    ]
    for name, fn in listeners:
        sa.event.listen(engine, name, fn)
    yield watch
    for name, fn in listeners:
        sa.event.remove(engine, name, fn)


def count(backend: Backend, table: sa.Table, *where: Any) -> int:
    engine: sa.Engine = backend.plugin.engine
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()
        )


def test_cleanup_of_100000_expired_rows_in_bounded_batches(
    backend: Backend, watch: Watch, url: str
) -> None:
    tables = backend.plugin.tables
    task = tables.task
    started = time.monotonic()
    # Explicit ids, far above what the id sequence hands out to the backend's stores: an
    # id drawn from the sequence per row is slow on MariaDB (no multi-row rewrite).
    rows = [
        {
            "id": FIRST_ID + n,
            "task_id": f"old-{n}",
            "status": "SUCCESS",
            "result": b"1",
            "date_done": LONG_AGO,
        }
        for n in range(EXPIRED)
    ]
    with backend.plugin.engine.begin() as conn:
        conn.execute(task.insert(), rows)
    for n in range(FRESH):
        backend.mark_as_done(f"fresh-{n}", n)
    loaded = time.monotonic() - started
    assert count(backend, task) == EXPIRED + FRESH
    watch.events.clear()

    started = time.monotonic()
    removed = backend.cleanup()
    took = time.monotonic() - started

    assert removed == EXPIRED
    watch.assert_bounded()
    assert sum(watch.deletes) == EXPIRED
    assert len(watch.deletes) == EXPIRED // CLEANUP_BATCH
    assert count(backend, task) == FRESH
    assert count(backend, task, task.c.task_id.like("old-%")) == 0
    fresh = backend.get_many([f"fresh-{n}" for n in range(FRESH)])
    assert [m.result for m in fresh.values()] == list(range(FRESH))
    assert {m.status for m in fresh.values()} == {"SUCCESS"}
    assert backend.cleanup() == 0  # nothing left to expire
    print(
        f"\n{url.split(':')[0]}: loaded {EXPIRED:,} + {FRESH:,} rows in {loaded:.1f}s; "
        f"cleanup removed {removed:,} in {took:.1f}s with {len(watch.deletes)} DELETEs "
        f"of <= {max(watch.deletes)} rows, one transaction each"
    )


def test_cleanup_removes_expired_groups_and_revocations(backend: Backend, watch: Watch) -> None:
    tables = backend.plugin.tables
    group, revoked = tables.group, tables.revoked
    old_groups = 2 * CLEANUP_BATCH + 500
    old_revocations = CLEANUP_BATCH + 300
    long_past = naive_utc(datetime.now(timezone.utc) - timedelta(hours=1))
    with backend.plugin.engine.begin() as conn:
        conn.execute(
            group.insert(),
            [
                {
                    "id": FIRST_ID + n,
                    "taskset_id": f"old-g{n}",
                    "result": b"[]",
                    "date_done": LONG_AGO,
                }
                for n in range(old_groups)
            ],
        )
        conn.execute(
            revoked.insert(),
            [{"task_id": f"old-r{n}", "expires_at": long_past} for n in range(old_revocations)],
        )
    for n in range(3):
        GroupResult(f"fresh-g{n}", [], backend).save()
    assert backend.revoke("fresh-r", "stop")  # expires with result_expires, an hour away
    assert backend.revoke("forever-r", "stop", expires=None)  # never expires
    assert count(backend, revoked) == old_revocations + 2
    watch.events.clear()

    # The count is of expired results (task and group rows); revocations go too.
    assert backend.cleanup() == old_groups
    watch.assert_bounded()
    assert sum(watch.deletes) == old_groups + old_revocations
    assert count(backend, group) == 3
    assert all(backend.restore_group(f"fresh-g{n}") is not None for n in range(3))
    assert count(backend, revoked) == 2
    assert backend.is_revoked("fresh-r")
    assert backend.is_revoked("forever-r")
    assert not backend.is_revoked("old-r0")
    assert backend.get_state("fresh-r") == "REVOKED"  # the task rows are fresh: kept
