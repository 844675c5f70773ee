"""Engines: one pooled engine per URL, options and process, disposed with its last user.

Every connection an engine opens bounds its waits on the server (see _psycopg,
_pymysql): the connect by ``database_connect_timeout``, each exchange by
``database_read_timeout``, both by the deadline of the call in progress.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import math
import os
import threading
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

PING_IDLE_AFTER = 10.0  # seconds in the pool after which a connection is pinged before use

_engines: dict[tuple[int, str, str], Engine] = {}
_users: dict[Engine, int] = {}  # how many backends hold each engine of _engines
_lock = threading.Lock()

# A plain dialect name picks the driver the plugin's extras install ([postgresql]:
# psycopg 3, [mysql]: PyMySQL): their waits on the server can be bounded per call
# (see the module doc). The C drivers, when only they are there, get their own
# timeouts per connection, in whole seconds, and reads that cannot follow a wait's
# deadline.
_DRIVERS = {
    "postgresql": (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")),
    "mysql": (("pymysql", "mysql+pymysql"), ("MySQLdb", "mysql+mysqldb")),
    "mariadb": (("pymysql", "mariadb+pymysql"), ("MySQLdb", "mariadb+mysqldb")),
}


T = TypeVar("T")


async def uncut(step: Awaitable[T]) -> T:
    """Await ``step``; cancelled meanwhile, let its round trip end before being cancelled.

    Cancelled mid-query, SQLAlchemy's async pool cannot check the connection back in:
    it drops it and warns from the garbage collector. The round trip is short (and
    bounded like any other by the call's deadline or the read timeout), so the
    cancellation waits for it, then goes on.
    """
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])  # a second cancellation ends this wait, not the task
        if not task.cancelled():
            task.exception()  # retrieved: its outcome has nobody to go to
        raise


# The extra of resultstore-db that installs a dialect's driver.
_EXTRAS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}


def missing_driver(url: sa.URL, exc: ModuleNotFoundError) -> ModuleNotFoundError:
    """The error for a driver that is not installed, naming the command that installs it
    (a bare "No module named 'MySQLdb'" does not say that the extra installs PyMySQL)."""
    extra = _EXTRAS.get(url.get_backend_name())
    install = f'pip install "resultstore-db[{extra}]"' if extra else f"pip install {exc.name}"
    return ModuleNotFoundError(
        f"the {url.drivername} driver is not installed ({exc}); install it with: {install}",
        name=exc.name,
    )


@dataclass(frozen=True)
class Bounds:
    """The longest a connection waits on the server: to connect, and per exchange after."""

    connect: float
    read: float


def normalize(url: str) -> sa.URL:
    parsed = make_url(url)
    for module, replacement in _DRIVERS.get(parsed.drivername, ()):
        if importlib.util.find_spec(module) is not None:
            return parsed.set(drivername=replacement)
    return parsed


def acquire(
    url: sa.URL, options: Mapping[str, Any], bounds: Bounds, *, autocommit: bool = False
) -> Engine:
    """The process's engine for ``url``, counted as used until :func:`release`; a forked
    child gets its own, never the parent's pool. ``autocommit``: an engine for single
    statements, each committed by itself (the fast statements of _fast)."""
    key = (
        os.getpid(),
        url.render_as_string(hide_password=False),
        repr((sorted(options.items()), bounds, autocommit)),
    )
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(url, options, bounds, autocommit)
        _users[engine] = _users.get(engine, 0) + 1
        return engine


def release(engine: Engine) -> None:
    """One user fewer: the last one closes the engine's pooled connections."""
    with _lock:
        users = _users.pop(engine, 1) - 1
        if users:
            _users[engine] = users
            return
        for key, cached in list(_engines.items()):
            if cached is engine:
                del _engines[key]
    engine.dispose()


@atexit.register
def _dispose_all() -> None:
    """Close this process's pooled connections at exit, before the drivers' finalizers
    complain of connections deleted while still open."""
    with _lock:
        mine = [e for (pid, _, _), e in _engines.items() if pid == os.getpid()]
    for engine in mine:
        engine.dispose()


def _create(url: sa.URL, options: Mapping[str, Any], bounds: Bounds, autocommit: bool) -> Engine:
    kwargs: dict[str, Any] = dict(options)
    if autocommit:
        kwargs["isolation_level"] = "AUTOCOMMIT"
    if url.get_backend_name() == "sqlite":
        # Busy wait, seconds: each retry of the policy waits this long again, so
        # keep it short enough that a locked file fails within seconds, not minutes.
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 5)
        if url.database in (None, "", ":memory:"):
            # One in-memory database shared by every thread, instead of one per connection.
            kwargs.setdefault("poolclass", StaticPool)
            kwargs["connect_args"].setdefault("check_same_thread", False)
    elif url.get_backend_name() in ("mysql", "mariadb"):
        # No gap locks on reads of missing rows: concurrent first stores must not deadlock.
        kwargs.setdefault("isolation_level", "READ COMMITTED")
        if autocommit:
            # Single statements, each its own transaction: nothing to reset when a
            # connection goes back to the pool, where PyMySQL's rollback was a round
            # trip that made every read two.
            kwargs["pool_reset_on_return"] = None
    engine = sa.create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if autocommit and url.get_backend_name() in ("mysql", "mariadb"):
        # Listeners run in order: this one edits the arguments before a connect is made.
        event.listen(engine, "do_connect", _changed_rows_only, insert=True)
        event.listen(engine, "connect", _read_committed)
    bound_waits(engine, bounds)
    if not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine)
    return engine


def _changed_rows_only(_dialect: Any, _record: Any, _cargs: Any, cparams: Any) -> None:
    """SQLAlchemy asks for FOUND_ROWS on every MySQL connection. Without it the store's
    INSERT ... ON DUPLICATE KEY UPDATE reports 1 for an insert, 2 for an update and 0
    for a row it left as it was (a ready state kept): with it, 1 for both (see _store)."""
    cparams["client_flag"] = cparams.get("client_flag", 0) & ~_FOUND_ROWS


_FOUND_ROWS = 2  # CLIENT_FOUND_ROWS of the MySQL protocol (PyMySQL's and MySQLdb's constant)


def _read_committed(dbapi_connection: Any, _record: Any) -> None:
    # As the main engine's sessions: no gap locks (isolation_level took AUTOCOMMIT here).
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    cursor.close()


def bound_waits(engine: Engine, bounds: Bounds) -> None:
    """Have ``engine`` (a sync one, or an async one's ``sync_engine``) open connections
    whose waits on the server are bounded."""
    driver = engine.dialect.driver
    if driver in ("psycopg", "psycopg_async"):
        from ._psycopg import connection_classes

        sync, asynchronous = connection_classes(bounds.connect, bounds.read)

        def connect_psycopg(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            if dialect.is_async:
                cparams["async_creator_fn"] = asynchronous.connect
                return None  # SQLAlchemy's own connect, through that function
            return sync.connect(*cargs, **cparams)

        event.listen(engine, "do_connect", connect_psycopg)
    elif driver == "pymysql":
        from ._pymysql import BoundedPyMySQL

        def connect_pymysql(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            # Timeouts given to the driver in connect_args replace the settings.
            connect = cparams.pop("connect_timeout", bounds.connect)
            read = cparams.pop("read_timeout", bounds.read)
            cparams.pop("write_timeout", None)
            return BoundedPyMySQL(*cargs, connect_bound=connect, read_bound=read, **cparams)

        event.listen(engine, "do_connect", connect_pymysql)
    elif driver == "psycopg2":
        # libpq's connect_timeout: whole seconds, at least 2; reads stay unbounded.
        seconds = max(2, math.ceil(bounds.connect))
        event.listen(engine, "do_connect", _default_args(connect_timeout=seconds))
    elif driver == "mysqldb":
        read = math.ceil(bounds.read)
        event.listen(
            engine,
            "do_connect",
            _default_args(
                connect_timeout=math.ceil(bounds.connect), read_timeout=read, write_timeout=read
            ),
        )


def _default_args(**defaults: int) -> Any:
    def connect(_dialect: Any, _record: Any, _cargs: Any, cparams: Any) -> None:
        for name, value in defaults.items():
            cparams.setdefault(name, value)

    return connect


def ping_when_idle(engine: Engine) -> None:
    """Pre-ping, but only connections that sat in the pool longer than PING_IDLE_AFTER.

    SQLAlchemy's pool_pre_ping pings on every checkout: one more round trip on
    every read and store. A connection used moments ago is alive but for a
    crash in between, which the retry policy covers (SQLAlchemy invalidates the
    pool on a disconnect error); one that idled is what servers time out and
    restarts leave behind. ``pool_pre_ping=True`` in database_engine_options
    restores the ping on every checkout.
    """
    dialect = engine.dialect

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is not None and time.monotonic() - since > PING_IDLE_AFTER:
            try:
                alive = dialect.do_ping(dbapi_connection)
            except Exception:
                alive = False
            if not alive:
                raise sa.exc.DisconnectionError()  # the pool replaces it and checks out again

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.close()


def transient(exc: Exception) -> bool:
    """What the retry policy retries: a lost connection, a server gone, a deadlock, a busy
    SQLite (OperationalError), a connection closed under the driver (InterfaceError)."""
    return isinstance(exc, sa.exc.DBAPIError) and (
        exc.connection_invalidated
        or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))
    )


def describe(exc: Exception) -> str:
    """The driver's error, without SQLAlchemy's echo of the statement."""
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    return f"{type(cause).__name__}: {str(cause).strip()}"
