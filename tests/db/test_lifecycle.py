"""``Backend.close()`` closes the plugin's sessions: the shared engines with their last user.

Engines are shared by the backends of one process with the same URL and options. Each
test counts the server's sessions of its own database (``pg_stat_activity``, MariaDB's
``information_schema.PROCESSLIST``) while two backends use it: closing one leaves the
other working on the shared pool; closing the last leaves no session at all, the
LISTEN connection and the async engines' included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

import resultstore
from resultstore import AsyncResult, Backend, BackendLoadError, BackendUnavailable

from ..threads import wait_until

KINDS = {"postgresql": "postgres_url", "mariadb": "mysql_url"}
SESSIONS = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE datname = :db",
    "mariadb": "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = :db",
}


@pytest.fixture(params=list(KINDS), ids=list(KINDS))
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(KINDS[request.param]))


@pytest.fixture
def sessions(url: str, request: pytest.FixtureRequest) -> Iterator[Callable[[], int]]:
    """How many sessions the server has for the test's database (the admin's not counted:
    it is connected to another database)."""
    kind = "postgresql" if url.startswith("db+postgresql") else "mariadb"
    admin = sa.create_engine(
        request.getfixturevalue("postgres_admin" if kind == "postgresql" else "mysql_admin"),
        isolation_level="AUTOCOMMIT",
    )
    dbname = sa.make_url(url.removeprefix("db+")).database

    def count() -> int:
        with admin.connect() as conn:
            return int(conn.execute(sa.text(SESSIONS[kind]), {"db": dbname}).scalar_one())

    yield count
    admin.dispose()


def use(backend: Backend, task_id: str) -> None:
    """Every kind of connection the plugin opens: both engines' pools, the push channel,
    and an async engine (PostgreSQL)."""

    async def read() -> None:
        assert await AsyncResult(task_id, backend).aget(timeout=5) == 1

    assert backend.mark_as_done(task_id, 1)
    assert backend.forget(f"{task_id}-none") is False
    with pytest.raises(resultstore.TimeoutError):  # it subscribed: PostgreSQL's LISTEN is up
        AsyncResult(f"{task_id}-pending", backend).get(timeout=0.05)
    assert backend.wait_for(task_id, timeout=5).result == 1
    asyncio.run(read())


def test_closing_the_last_backend_closes_every_session(
    url: str, sessions: Callable[[], int]
) -> None:
    assert sessions() == 0
    first, second = Backend(url), Backend(url)
    try:
        use(first, "first")
        use(second, "second")
        assert sessions() > 0
        first.close()
        assert second.get_result("first") == 1  # the shared engine is still open
        assert sessions() > 0
    finally:
        first.close()
        second.close()
    wait_until(lambda: sessions() == 0, "the server has no session of the test's database")


FAILED_START = {
    "postgresql": (
        BackendLoadError,
        'ProgrammingError: (psycopg.errors.InvalidSchemaName) schema "no_such_schema" does not '
        "exist",
    ),
    "mariadb": (
        BackendUnavailable,
        'no retries left (max_retries=0): OperationalError: (1049, "Unknown database '
        "'no_such_schema'\")",
    ),
}


def test_a_backend_that_fails_to_start_leaves_no_session(
    url: str, sessions: Callable[[], int]
) -> None:
    """Table creation fails (a schema that does not exist): the engine is released."""
    options = {
        "database_table_schemas": {"task": "no_such_schema"},
        "database_retry_policy": {"max_retries": 0},
    }
    error, message = FAILED_START["postgresql" if "postgresql" in url else "mariadb"]
    with pytest.raises(error) as raised:
        Backend(url, options=options)
    assert message in str(raised.value)
    wait_until(lambda: sessions() == 0, "the server has no session of the test's database")
