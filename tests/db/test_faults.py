"""Faults: a PostgreSQL the tests own is crash-stopped and restarted, MariaDB connections are
killed server-side, and SQLite is kept busy by another writer.

Results arrive, or errors are clear (``BackendUnavailable`` naming the masked URL), within
the timeout. The PostgreSQL instance is this module's own (servers.py: ``initdb`` into a temp
dir, ``pg_ctl -m immediate stop`` as the crash); MariaDB is the machine's server with a database
per test. Every step is polled with a deadline; nothing sleeps to let another thread "get
there".
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import resultstore
from resultstore import AsyncResult, Backend, BackendUnavailable, hookimpl
from resultstore_db import DatabaseBackend

from ..threads import DEADLINE, Worker, wait_until
from .servers import PostgresServer

WAIT_TIMEOUT = 20.0  # the waiters' own timeout in the restart tests
# Spans a crash restart: sleeps 0.05 + 0.1 + 0.2 + 0.4 + 6 * 0.5 = 3.75 s in all.
SPANNING = {"max_retries": 10, "interval_start": 0.05, "interval_max": 0.5}
# Gives up quickly: sleeps 0.02 + 0.04 = 0.06 s in all.
FAST = {"max_retries": 2, "interval_start": 0.02, "interval_max": 0.05}
PASSWORD = "s3cret-pw"  # trust auth ignores it; it must never show in an error


def retry_sleeps(policy: dict[str, Any]) -> float:
    """The total time ``RetryPolicy`` sleeps between its attempts."""
    delay, total = policy["interval_start"], 0.0
    for _ in range(policy["max_retries"]):
        total += delay
        delay = min(delay * 2, policy["interval_max"])
    return float(total)


def start(fn: Callable[[], Any]) -> Worker:
    worker = Worker(fn)
    worker.start()
    return worker


def waiting(backend: Backend, task_id: str, timeout: float) -> Worker:
    return start(lambda: AsyncResult(task_id, backend).get(timeout=timeout))


def assert_clear(exc: BaseException, masked_url: str) -> None:
    """A ``BackendUnavailable`` that names the masked URL and leaks no password."""
    assert isinstance(exc, BackendUnavailable), repr(exc)
    assert masked_url in str(exc)
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    for link in chain:
        assert PASSWORD not in str(link), f"{type(link).__name__} leaks the password: {link}"
        assert PASSWORD not in repr(link), f"{type(link).__name__} leaks the password: {link!r}"


# --- a PostgreSQL instance the tests own (see servers.py) -------------------------------------


class PG:
    """One test's database on the module's server, which is up when the test starts."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.dbname = server.create_database()
        netloc = f"postgres:{PASSWORD}@127.0.0.1:{server.port}"
        self.url = f"db+postgresql://{netloc}/{self.dbname}"
        self.masked = resultstore.URL.parse(self.url).masked
        assert PASSWORD not in self.masked

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()


@pytest.fixture
def pg(pg_server: PostgresServer) -> PG:
    if not pg_server.running():  # a previous test left it down
        pg_server.start()
    return PG(pg_server)


def test_restart_while_waiters_block(pg: PG) -> None:
    ids = [f"restart-wait-{i}" for i in range(10)]
    options = {"database_retry_policy": SPANNING}
    with Backend(pg.url, options=options) as waits, Backend(pg.url, options=options) as stores:
        waiters = [waiting(waits, task_id, WAIT_TIMEOUT) for task_id in ids]
        wait_until(lambda: waits.waiting_ids() == set(ids), "the 10 waiters are subscribed")
        wait_until(lambda: pg.server.listening(pg.dbname), "the LISTEN session is up")

        pg.stop()
        assert all(w.is_alive() for w in waiters), "a waiter gave up when the server went away"
        # The stores start while the server is down: they are retried while it comes back.
        storer = start(lambda: [stores.mark_as_done(t, {"n": i}) for i, t in enumerate(ids)])
        pg.start()
        assert storer.finish(DEADLINE + retry_sleeps(SPANNING)) == [True] * 10

        for i, waiter in enumerate(waiters):
            assert waiter.finish(WAIT_TIMEOUT) == {"n": i}
            assert waiter.elapsed < WAIT_TIMEOUT

        # The LISTEN channel is back, and pushes: a new wait wakes well before any deadline.
        wait_until(lambda: pg.server.listening(pg.dbname), "the LISTEN session reconnected")
        probe = waiting(waits, "after-restart", WAIT_TIMEOUT)
        wait_until(lambda: "after-restart" in waits.waiting_ids(), "the probe waits")
        stored_at = time.monotonic()
        assert stores.mark_as_done("after-restart", "pushed")
        assert probe.finish(WAIT_TIMEOUT) == "pushed"
        assert probe.returned_at - stored_at < 1.0
        assert waits.waiting_ids() == frozenset()


def _store_through_restart(pg: PG, policy: dict[str, Any]) -> dict[str, Any]:
    """Store 200 results one by one while the server is crash-stopped and started again.

    Returns each id's outcome (``True``/``False`` or the exception).
    """
    outcomes: dict[str, Any] = {}
    backend = Backend(pg.url, options={"database_retry_policy": policy})
    stopped = threading.Event()

    def store_all() -> None:
        for i in range(200):
            if i == 20:  # the rest run against the stopped, then restarted, server
                stopped.wait(DEADLINE)
            task_id = f"store-{i}"
            try:
                outcomes[task_id] = backend.mark_as_done(task_id, {"i": i, "s": "x" * (i % 7)})
            except Exception as exc:
                outcomes[task_id] = exc

    try:
        storer = start(store_all)
        wait_until(lambda: len(outcomes) >= 20, "20 stores are done")
        pg.stop()
        stopped.set()
        if policy is FAST:  # let the down time show: until a store has given up
            wait_until(
                lambda: any(isinstance(o, Exception) for o in list(outcomes.values())),
                "a store gives up on the stopped server",
            )
        pg.start()
        storer.finish(DEADLINE + retry_sleeps(policy))
    finally:
        backend.close()
    assert len(outcomes) == 200
    return outcomes


def _stored(pg: PG) -> dict[str, Any]:
    with Backend(pg.url) as reader:
        metas = {f"store-{i}": reader.get_task_meta(f"store-{i}") for i in range(200)}
    return {task_id: meta.result for task_id, meta in metas.items() if meta.status == "SUCCESS"}


def test_restart_while_stores_run_fails_clearly(pg: PG) -> None:
    outcomes = _store_through_restart(pg, FAST)
    stored = _stored(pg)
    failed = {t: o for t, o in outcomes.items() if isinstance(o, Exception)}
    assert failed, "the server was down and the policy is short: some store must have failed"
    for task_id, outcome in outcomes.items():
        i = int(task_id.split("-")[1])
        if outcome is True:  # acknowledged: stored, with its exact value
            assert stored.get(task_id) == {"i": i, "s": "x" * (i % 7)}, task_id
        else:  # never a silent drop: a clear error instead
            assert not isinstance(outcome, bool), f"{task_id}: mark_as_done returned {outcome}"
            assert_clear(outcome, pg.masked)


def test_restart_while_stores_run_with_a_spanning_policy(pg: PG) -> None:
    outcomes = _store_through_restart(pg, SPANNING)
    assert outcomes == {f"store-{i}": True for i in range(200)}
    assert _stored(pg) == {f"store-{i}": {"i": i, "s": "x" * (i % 7)} for i in range(200)}


def test_a_store_after_a_restart_is_not_lost_to_the_pools_dead_connections(pg: PG) -> None:
    # More pooled connections than the policy has attempts, all dead after the restart:
    # the first disconnect must discard them all, not one per attempt.
    with Backend(pg.url, options={"database_retry_policy": FAST}) as backend:
        plugin = backend.plugin
        assert isinstance(plugin, DatabaseBackend)
        pooled = FAST["max_retries"] + 3
        held = [plugin.fast_engine.raw_connection() for _ in range(pooled)]
        for connection in held:
            connection.close()  # back to the pool
        assert plugin.fast_engine.pool.checkedin() == pooled  # type: ignore[attr-defined]
        pg.stop()
        pg.start()
        assert backend.mark_as_done("after-restart", 1) is True
        assert backend.get_result("after-restart") == 1


def test_server_down_for_good(pg: PG) -> None:
    options = {"database_retry_policy": FAST}
    with Backend(pg.url, options=options) as backend:
        timeout = 2.0
        waiter = waiting(backend, "never", timeout)
        wait_until(lambda: backend.waiting_ids() == {"never"}, "the waiter is subscribed")
        pg.stop()
        with pytest.raises(resultstore.TimeoutError):
            waiter.finish(timeout + DEADLINE)
        assert timeout <= waiter.elapsed <= timeout + 1.0
        assert backend.waiting_ids() == frozenset()

        # Each attempt is refused at once; the bound is the policy's sleeps plus slack.
        bound = retry_sleeps(FAST) + 1.0
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as raised:
            backend.mark_as_done("down", 1)
        assert time.monotonic() - started <= bound
        assert_clear(raised.value, pg.masked)
        attempts = FAST["max_retries"] + 1
        assert f"after {attempts} attempts in " in str(raised.value)
        assert f"no retries left (max_retries={FAST['max_retries']})" in str(raised.value)

        # A wait that starts with the server down fails the same clear way, in bounded time.
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as raised_wait:
            AsyncResult("down-wait", backend).get(timeout=5.0)
        assert time.monotonic() - started <= bound
        assert_clear(raised_wait.value, pg.masked)


class StopAfterFirstRead:
    """A wrapper plugin: the server stops right after the wait's first read, before LISTEN."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self.stop = stop
        self.fired = False

    @hookimpl(wrapper=True)
    def get(self, task_id: str) -> Generator[None, Any, Any]:
        meta = yield
        if not self.fired:
            self.fired = True
            self.stop()
        return meta


def test_listen_channel_cannot_open(pg: PG) -> None:
    """The server goes away between a wait's first read and its LISTEN: a clear error."""
    with Backend(pg.url, options={"database_retry_policy": FAST}) as backend:
        backend.add_plugin(StopAfterFirstRead(pg.stop))
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as raised:
            AsyncResult("no-channel", backend).get(timeout=5.0)
        assert time.monotonic() - started <= retry_sleeps(FAST) + 1.0
        assert_clear(raised.value, pg.masked)
        assert "LISTEN" in str(raised.value)
        assert backend.waiting_ids() == frozenset()  # nothing left subscribed


# --- MariaDB: the plugin's connections killed server-side --------------------------------------


class Killer:
    """Kills connections of one database through an admin connection (``KILL <id>``)."""

    def __init__(self, admin_url: str, database_url: str) -> None:
        self.database = sa.make_url(database_url.removeprefix("db+")).database
        self.engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.killed: set[int] = set()  # connection ids only grow: a new id is a reconnect

    @property
    def kills(self) -> int:
        return len(self.killed)

    def processes(self, exclude: frozenset[int] = frozenset()) -> list[tuple[int, str | None]]:
        """The database's connections not killed yet (a killed one may linger a moment)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT ID, INFO FROM information_schema.PROCESSLIST "
                    "WHERE DB = :db AND ID <> CONNECTION_ID()"
                ),
                {"db": self.database},
            ).all()
        skip = self.killed | exclude
        return [(int(row.ID), row.INFO) for row in rows if int(row.ID) not in skip]

    def kill_all(self, exclude: frozenset[int] = frozenset()) -> int:
        """Kill every connection of the database (but ``exclude``); how many were killed."""
        killed = 0
        with self.engine.connect() as conn:
            for process_id, _ in self.processes(exclude):
                try:
                    conn.execute(sa.text(f"KILL {process_id}"))
                    killed += 1
                except sa.exc.OperationalError:  # 1094 unknown thread: it ended meanwhile
                    pass
                self.killed.add(process_id)
        return killed

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def killer(mysql_admin: str, mysql_url: str) -> Iterator[Killer]:
    k = Killer(mysql_admin, mysql_url)
    yield k
    k.close()


def test_mariadb_killed_between_operations(mysql_url: str, killer: Killer) -> None:
    with Backend(mysql_url) as backend:
        stored: dict[str, Any] = {}
        for round_ in range(5):
            for i in range(5):
                task_id = f"between-{round_}-{i}"
                assert backend.mark_as_done(task_id, [round_, i])
                stored[task_id] = [round_, i]
            assert killer.kill_all() >= 1, "the plugin's pooled connection was not there"
            # The next call finds its pooled connection dead (the retry policy, or the
            # idle pre-ping) and reconnects.
            assert {t: backend.get_result(t) for t in stored} == stored
            assert killer.kill_all() >= 1
        assert backend.get_many(list(stored)).keys() == stored.keys()


def test_an_idle_connection_is_pinged_and_replaced_before_use(
    mysql_url: str, killer: Killer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No retries allowed: only the idle pre-ping can save the call."""
    from resultstore_db import _engine

    monkeypatch.setattr(_engine, "PING_IDLE_AFTER", 0.0)  # every pooled connection is "idle"
    no_retry = {"database_retry_policy": {"max_retries": 0}}
    with Backend(mysql_url, options=no_retry) as backend:
        assert backend.mark_as_done("pinged", 1)
        assert killer.kill_all() >= 1
        assert backend.get_result("pinged") == 1
        monkeypatch.setattr(_engine, "PING_IDLE_AFTER", 3600.0)  # no ping: the dead one fails
        assert killer.kill_all() >= 1
        with pytest.raises(BackendUnavailable):
            backend.get_result("pinged")


def test_mariadb_killed_during_a_store(mysql_url: str, mysql_admin: str, killer: Killer) -> None:
    """The store's connection is killed while its statement (INSERT ... ON DUPLICATE KEY
    UPDATE) waits on a row lock: it is retried."""
    with Backend(mysql_url) as backend:
        assert backend.mark_as_started("locked")
        locker = sa.create_engine(sa.make_url(mysql_admin).set(database=killer.database))
        try:
            with locker.connect() as lock_conn:
                lock_id = int(lock_conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar_one())
                lock_conn.execute(
                    sa.text("SELECT * FROM celery_taskmeta WHERE task_id = 'locked' FOR UPDATE")
                )
                storer = start(lambda: backend.mark_as_done("locked", {"after": "kill"}))

                def blocked() -> list[int]:
                    return [
                        pid
                        for pid, info in killer.processes(frozenset({lock_id}))
                        if info and info.upper().startswith("INSERT")
                    ]

                for _ in range(2):  # killed twice: the first retry is killed as well
                    # (a new connection each time: processes() leaves out the killed ones)
                    wait_until(lambda: bool(blocked()), "the store waits on the row lock")
                    assert killer.kill_all(frozenset({lock_id})) >= 1
                assert storer.is_alive(), "the store gave up instead of retrying"
                lock_conn.rollback()  # release the row lock
            assert storer.finish() is True
        finally:
            locker.dispose()
        assert backend.get_result("locked") == {"after": "kill"}


def test_mariadb_killed_during_a_batch_of_stores(mysql_url: str, killer: Killer) -> None:
    """19 rounds of kills among 200 stores. Kill k is made once 10k stores are done, and
    store 10k + 5 waits for it: it lands within those five stores (mid-statement) or
    while the storer waits (on its pooled connection), however the two threads run."""
    outcomes: dict[str, Any] = {}
    rounds = [threading.Event() for _ in range(19)]
    options = {"database_retry_policy": {"max_retries": 5, "interval_start": 0.01}}
    with Backend(mysql_url, options=options) as backend:

        def store_all() -> None:
            for i in range(200):
                task_id = f"batch-{i}"
                try:
                    outcomes[task_id] = backend.mark_as_done(task_id, {"i": i})
                except Exception as exc:
                    outcomes[task_id] = exc
                tens, units = divmod(i + 1, 10)
                if units == 5 and 1 <= tens <= len(rounds):
                    assert rounds[tens - 1].wait(DEADLINE), f"kill {tens} was not made"

        storer = start(store_all)
        for k, made in enumerate(rounds, 1):
            wait_until(lambda k=k: len(outcomes) >= 10 * k, f"{10 * k} stores are done")
            killer.kill_all()
            made.set()
        storer.finish()
        # Each round finds the connection that the five stores since the last one used.
        assert killer.kills >= len(rounds)
        assert outcomes == {f"batch-{i}": True for i in range(200)}
        found = backend.get_many([f"batch-{i}" for i in range(200)])
        assert {t: m.result for t, m in found.items()} == {
            f"batch-{i}": {"i": i} for i in range(200)
        }


def test_mariadb_poll_wait_survives_kills(mysql_url: str, killer: Killer) -> None:
    """MariaDB has no push: the core polls, and each poll's connection may be killed."""
    with Backend(mysql_url) as waits, Backend(mysql_url) as stores:
        timeout = 10.0
        waiter = waiting(waits, "polled", timeout)
        for _ in range(3):
            # The poller has a (pooled) connection: kill it, and see a new one come back.
            wait_until(lambda: bool(killer.processes()), "the poller is connected (again)")
            assert killer.kill_all() >= 1
        assert waiter.is_alive()
        stored_at = time.monotonic()
        assert stores.mark_as_done("polled", "still here")
        assert waiter.finish(timeout) == "still here"
        assert waiter.elapsed < timeout
        assert waiter.returned_at - stored_at < 1.0  # the poll interval, not the deadline


# --- SQLite: another writer holds the lock ---------------------------------------------------


def _sqlite_path(url: str) -> str:
    return url.removeprefix("db+sqlite:///")


class LockHolder(threading.Thread):
    """Holds SQLite's write lock (``BEGIN IMMEDIATE`` on a raw connection) until released."""

    def __init__(self, path: str, hold: float) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.hold = hold
        self.locked = threading.Event()
        self.release = threading.Event()
        self.released_at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                self.locked.set()
                self.release.wait(self.hold)  # the fault's duration, not a synchronisation
                conn.execute("COMMIT")
                self.released_at = time.monotonic()
            finally:
                conn.close()
        except BaseException as exc:
            self.error = exc
            self.locked.set()

    def __enter__(self) -> LockHolder:
        self.start()
        assert self.locked.wait(DEADLINE), "the lock holder did not start"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.join(DEADLINE)
        assert not self.is_alive()
        assert self.error is None, self.error


def sqlite_options(policy: dict[str, Any]) -> dict[str, Any]:
    # The engine's default busy wait is 30 s; 0.1 s makes the busy case show fast.
    return {
        "database_engine_options": {"connect_args": {"timeout": 0.1}},
        "database_retry_policy": policy,
    }


def test_sqlite_busy_store_waits_and_succeeds(sqlite_url: str) -> None:
    with Backend(sqlite_url, options=sqlite_options(SPANNING)) as backend:  # tables made here
        assert backend.mark_as_done("before", 0)
        with LockHolder(_sqlite_path(sqlite_url), hold=0.5) as holder:
            locked_at = time.monotonic()
            assert backend.get_result("before") == 0  # WAL: reads go on under the write lock
            assert backend.mark_as_done("busy", {"v": 1})
            stored_at = time.monotonic()
        assert holder.released_at, "the lock was never held"
        assert stored_at >= holder.released_at, "the store went through the held lock"
        assert stored_at - locked_at <= 0.5 + retry_sleeps(SPANNING)
        assert backend.get_result("busy") == {"v": 1}


def test_sqlite_busy_for_too_long_fails_clearly(sqlite_url: str) -> None:
    tiny = {"max_retries": 1, "interval_start": 0.05, "interval_max": 0.05}
    with Backend(sqlite_url, options=sqlite_options(tiny)) as backend:
        with LockHolder(_sqlite_path(sqlite_url), hold=DEADLINE):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as raised:
                backend.mark_as_done("busy", 1)
            elapsed = time.monotonic() - started
        # Two attempts of a 0.1 s busy wait each, and the policy's sleep.
        assert elapsed <= 2 * 0.1 + retry_sleeps(tiny) + 1.0
        message = str(raised.value)
        assert "database is locked" in message
        assert resultstore.URL.parse(sqlite_url).masked in message
        # Released: the same backend stores again.
        assert backend.mark_as_done("busy", 2)
        assert backend.get_result("busy") == 2


# --- a store whose commit went through but whose reply was lost ------------------------------


# Task ids whose next INSERT loses its reply (see LosingReplies).
_LOSE_REPLY: set[str] = set()


class _LosingCursor(sqlite3.Cursor):
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        result = super().execute(sql, parameters)
        hit = [t for t in _LOSE_REPLY if sql.startswith("INSERT") and t in parameters]
        if hit:
            _LOSE_REPLY.discard(hit[0])
            self.connection.commit()
            raise sqlite3.OperationalError("simulated: connection lost after COMMIT")
        return result


class LosingReplies(sqlite3.Connection):
    """A driver connection that commits an armed task's INSERT and then fails, as a
    connection killed right after the server committed does."""

    def cursor(self, factory: Any = None) -> sqlite3.Cursor:
        return super().cursor(_LosingCursor)


def test_store_whose_reply_is_lost_reports_true(sqlite_url: str) -> None:
    """The connection dies right after the server committed (seen for real under ``KILL``):
    the retry finds the ready row it wrote itself, and the store reports True, not False."""
    options = sqlite_options(FAST)
    options["database_engine_options"]["connect_args"]["factory"] = LosingReplies
    with Backend(sqlite_url, options=options) as backend:
        assert backend.mark_as_done("other", "first")
        _LOSE_REPLY.update({"lost", "other"})
        try:
            assert backend.mark_as_done("lost", {"v": 1}) is True
            # A true duplicate still reads False, reply lost or not.
            assert backend.mark_as_done("other", "second") is False
            assert not _LOSE_REPLY, "the fault was not injected"
        finally:
            _LOSE_REPLY.clear()
        assert backend.get_result("lost") == {"v": 1}
        assert backend.get_result("other") == "first"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"max_retries": True}, "max_retries must be an int >= 0, got True"),
        ({"interval_start": "1"}, "interval_start must be a number of seconds >= 0, got '1'"),
        ({"timeout": -1}, "timeout must be a number of seconds >= 0, got -1"),
        (
            {"interval_start": 2, "interval_max": 1},
            "needs interval_start <= interval_max, got 2 and 1",
        ),
        ({"retries": 1}, "must be a dict with keys among "),
    ],
)
def test_retry_policy_is_validated(sqlite_url: str, policy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^database_retry_policy {re.escape(message)}"):
        Backend(sqlite_url, options={"database_retry_policy": policy})


def test_retry_policy_takes_celerys_keys_and_a_time_cap(sqlite_url: str) -> None:
    policy = {"max_retries": 5, "interval_start": 0, "interval_step": 0.2, "timeout": 3}
    with Backend(sqlite_url, options={"database_retry_policy": policy}) as backend:
        assert backend.plugin.retry == resultstore.RetryPolicy(  # type: ignore[attr-defined]
            max_retries=5, interval_start=0, interval_step=0.2, timeout=3
        )
