"""Timeouts hold when the database server stops answering, on PostgreSQL and MariaDB.

The servers are this module's own (servers.py), frozen with SIGSTOP of all their
processes: connections stay open and the kernel still accepts new ones, but nothing
answers. A wait raises ``resultstore.TimeoutError`` within its timeout and the
documented grace (0.25 s; asserted with room for a loaded machine), whether the server
froze before it began or while it waited. Calls without a timeout of their own are
bounded by ``database_read_timeout`` / ``database_connect_timeout`` within the retry
policy, and so is ``Backend(...)`` against a server that accepts and never answers.
Every call runs in a thread joined with a deadline: a regression fails, never hangs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import resultstore
from resultstore import (
    Backend,
    BackendUnavailable,
    hookimpl,
)
from resultstore_db import _engine

from ..frozen_waits import (
    BEFORE,
    BOUND,
    CALL_ROOM,
    DURING,
    WAITS,
    Waiting,
    assert_timed_out,
    ids_for,
)
from ..silent import SilentServer
from ..threads import DEADLINE, Worker, wait_until
from .servers import Freezer, MariaDBServer, PostgresServer

ENGINES = ["postgresql", "mariadb"]


@dataclass
class DB:
    """One test's database on a server of the module's own, and how to freeze it."""

    kind: str
    url: str
    masked: str
    freezer: Freezer
    server: PostgresServer | MariaDBServer
    dbname: str

    def subscribed(self, backend: Backend, ids: list[str]) -> bool:
        """The wait is registered and, on PostgreSQL, its LISTEN session is up."""
        if backend.waiting_ids() != set(ids):
            return False
        return not isinstance(self.server, PostgresServer) or self.server.listening(self.dbname)


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest) -> Iterator[DB]:
    server: PostgresServer | MariaDBServer = request.getfixturevalue(
        "pg_server" if request.param == "postgresql" else "mariadb"
    )
    dbname = server.create_database()
    scheme = "postgresql" if request.param == "postgresql" else "mysql"
    url = f"db+{scheme}://{'postgres' if scheme == 'postgresql' else 'root'}"
    url += f"@127.0.0.1:{server.port}/{dbname}"
    freezer = Freezer(server)
    try:
        yield DB(request.param, url, resultstore.URL.parse(url).masked, freezer, server, dbname)
    finally:
        freezer.thaw()


def start(fn: Callable[[], Any]) -> Worker:
    worker = Worker(fn)
    worker.start()
    return worker


# --- waits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("wait", WAITS)
def test_a_wait_on_a_frozen_server_ends_on_time(db: DB, wait: str) -> None:
    ids = ids_for(wait)
    with Backend(db.url) as backend:
        for task_id in ids:  # the pool holds connections now: the frozen server keeps them
            assert backend.mark_as_started(task_id)
        db.freezer.freeze()
        waiter = Waiting(wait, backend, ids, BEFORE, warm=False)
        assert_timed_out(waiter, ids, BEFORE, "PENDING")  # not even the first read came back
        db.freezer.thaw()


@pytest.mark.parametrize("wait", WAITS)
def test_a_wait_ends_on_time_when_the_server_freezes_during_it(db: DB, wait: str) -> None:
    ids = ids_for(wait)
    with Backend(db.url) as backend:
        for task_id in ids:
            assert backend.mark_as_started(task_id)
        waiter = Waiting(wait, backend, ids, DURING, warm=True)
        wait_until(
            lambda: db.subscribed(backend, ids) or not waiter.is_alive(), "the wait subscribes"
        )
        assert waiter.is_alive(), "the wait ended before it was seen subscribed"
        db.freezer.freeze()
        assert db.freezer.frozen_at < waiter.began + DURING, "froze after the deadline"
        assert_timed_out(waiter, ids, DURING, "STARTED")
        db.freezer.thaw()


class FreezeOnRead:
    """A wrapper plugin: once armed, the server freezes as the next read of a task begins
    (``after``: as it ends)."""

    def __init__(self, freezer: Freezer, after: bool) -> None:
        self.freezer = freezer
        self.after = after
        self.armed = False

    def _fire(self) -> None:
        if self.armed:
            self.armed = False
            self.freezer.freeze()

    @hookimpl(wrapper=True)
    def get(self, task_id: str) -> Generator[None, Any, Any]:
        if not self.after:
            self._fire()
        meta = yield
        if self.after:
            self._fire()
        return meta


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_opening_the_listen_channel_on_a_frozen_server_ends_on_time(db: DB) -> None:
    """PostgreSQL's LISTEN connection is opened by the first wait, after its first read:
    the server freezes in between."""
    with Backend(db.url) as backend:
        assert backend.mark_as_started("Task-1")
        freeze = FreezeOnRead(db.freezer, after=True)
        backend.add_plugin(freeze)
        freeze.armed = True
        waiter = Waiting("get", backend, ["Task-1"], BEFORE, warm=False)
        assert_timed_out(waiter, ["Task-1"], BEFORE, "STARTED")
        assert db.freezer.frozen_at, "the first read did not happen"
        db.freezer.thaw()
        assert backend.waiting_ids() == frozenset()


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_the_read_after_a_notification_on_a_frozen_server_ends_on_time(db: DB) -> None:
    """A store wakes the wait, and the server freezes before the wait reads what changed."""
    with Backend(db.url) as backend, Backend(db.url) as provider:
        assert provider.mark_as_started("Task-1")
        freeze = FreezeOnRead(db.freezer, after=False)
        backend.add_plugin(freeze)
        waiter = Waiting("get", backend, ["Task-1"], DURING, warm=False)
        wait_until(lambda: db.subscribed(backend, ["Task-1"]), "the wait is subscribed")
        freeze.armed = True
        assert provider.store_result("Task-1", {"step": 1}, "PROGRESS")
        assert_timed_out(waiter, ["Task-1"], DURING, "STARTED")
        assert db.freezer.frozen_at, "the wait never read after the notification"
        db.freezer.thaw()


# --- calls without a timeout of their own -----------------------------------------------------

BOUNDED = {
    "database_read_timeout": BOUND,
    "database_connect_timeout": BOUND,
    "database_retry_policy": {"max_retries": 0},
}
CALLS: dict[str, tuple[str, Callable[[Backend], Any]]] = {
    "store": ("storing task 'Task-1'", lambda b: b.mark_as_done("Task-1", 1)),
    "get_task_meta": ("reading task 'Task-1'", lambda b: b.get_task_meta("Task-1")),
    "forget": ("forgetting task 'Task-1'", lambda b: b.forget("Task-1")),
}
DRIVER_ERRORS = {
    "postgresql": re.escape(f"OperationalError: the server did not answer within {BOUND:.2f} s"),
    "mariadb": re.escape(
        "OperationalError: (2013, 'Lost connection to MySQL server during query (timed out)')"
    ),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_call_on_a_frozen_server_is_bounded_by_the_read_timeout(db: DB, call: str) -> None:
    what, fn = CALLS[call]
    with Backend(db.url, options=BOUNDED) as backend:
        assert backend.mark_as_started("Task-1")
        db.freezer.freeze()
        caller = start(lambda: fn(backend))
        with pytest.raises(BackendUnavailable) as raised:
            caller.finish(DEADLINE)
        assert re.fullmatch(
            re.escape(f"{what} failed on {db.masked} after 1 attempt in ")
            + r"\d+\.\d\d s, no retries left \(max_retries=0\): "
            + DRIVER_ERRORS[db.kind],
            str(raised.value),
        ), str(raised.value)
        assert BOUND <= caller.elapsed < BOUND + CALL_ROOM
        db.freezer.thaw()
        assert backend.mark_as_done("Task-2", 2)  # the dead connection was replaced


NO_ANSWER = f"the server did not answer within {BOUND:.2f} s while connecting"
CONNECT_ERRORS = {
    "postgresql": f"ConnectionTimeout: {NO_ANSWER}",
    "mariadb": f"OperationalError: (2013, '{NO_ANSWER}')",
}


@pytest.mark.parametrize("kind", ENGINES)
def test_a_backend_for_a_server_that_never_answers_fails_in_bounded_time(kind: str) -> None:
    """Table creation at start-up: each attempt is bounded by the connect timeout (the
    handshake included), the attempts by the retry policy."""
    policy = {"max_retries": 1, "interval_start": 0.05}
    options = {"database_connect_timeout": BOUND, "database_retry_policy": policy}
    with SilentServer() as silent:
        scheme, user = ("postgresql", "postgres") if kind == "postgresql" else ("mysql", "root")
        url = f"db+{scheme}://{user}@127.0.0.1:{silent.port}/never"
        opener = start(lambda: Backend(url, options=options))
        with pytest.raises(BackendUnavailable) as raised:
            opener.finish(DEADLINE)
        found = re.fullmatch(
            re.escape(f"creating tables failed on {url} after 2 attempts in ")
            + r"(\d+\.\d\d) s, no retries left \(max_retries=1\): "
            + re.escape(CONNECT_ERRORS[kind]),
            str(raised.value),
        )
        assert found, str(raised.value)
        # Two attempts and the pause between them; the setup before them (the engine, the
        # statements compiled) is work of the machine's, not waits on the server.
        attempts = float(found.group(1))
        assert 2 * BOUND + 0.05 <= attempts + 0.01 < 2 * BOUND + 0.05 + CALL_ROOM
        assert opener.elapsed < attempts + 1.0
        wait_until(lambda: silent.accepted == 2, "the server saw both attempts")


# --- the settings ---------------------------------------------------------------------------


def test_timeouts_default_to_five_seconds_to_connect_and_two_minutes_to_read(
    sqlite_url: str,
) -> None:
    with Backend(sqlite_url) as backend:
        assert backend.plugin.connect_timeout == 5.0  # type: ignore[attr-defined]
        assert backend.plugin.read_timeout == 120.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["database_connect_timeout", "database_read_timeout"])
@pytest.mark.parametrize("value", [0, -1, True, "5", None])
def test_timeout_settings_are_validated(sqlite_url: str, name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be a number of seconds > 0, got "):
        Backend(sqlite_url, options={name: value})


def test_unknown_options_are_still_rejected(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="does not take option 'database_timeout'") as caught:
        Backend(sqlite_url, options={"database_timeout": 5})
    message = str(caught.value)
    assert message.startswith(
        f"{sqlite_url}: plugin resultstore_db.DatabaseBackend does not take option "
        "'database_timeout'; did you mean 'database_read_timeout'? (it takes: "
    )


@pytest.mark.parametrize(
    ("url", "installed", "driver"),
    [
        ("postgresql://u@h/db", {"psycopg", "psycopg2"}, "postgresql+psycopg"),
        ("postgresql://u@h/db", {"psycopg2"}, "postgresql+psycopg2"),
        ("mysql://u@h/db", {"pymysql", "MySQLdb"}, "mysql+pymysql"),
        ("mariadb://u@h/db", {"MySQLdb"}, "mariadb+mysqldb"),
        ("postgresql+psycopg2://u@h/db", {"psycopg", "psycopg2"}, "postgresql+psycopg2"),
    ],
)
def test_a_plain_url_picks_the_driver_whose_waits_can_be_bounded(
    monkeypatch: pytest.MonkeyPatch, url: str, installed: set[str], driver: str
) -> None:
    """psycopg 3 and PyMySQL (the extras') before psycopg2 and mysqlclient; a URL that
    names its driver keeps it."""
    monkeypatch.setattr(
        _engine.importlib.util, "find_spec", lambda name: object() if name in installed else None
    )
    assert _engine.normalize(url).drivername == driver
