"""Engines: one pooled engine per URL, options and process; bounded retries of transient errors."""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

from resultstore import BackendUnavailable

T = TypeVar("T")

PING_IDLE_AFTER = 10.0  # seconds in the pool after which a connection is pinged before use

_engines: dict[tuple[int, str, str], Engine] = {}
_lock = threading.Lock()

# A plain dialect name picks the driver this project installs when SQLAlchemy's
# default driver is not there (psycopg2, mysqlclient are C extensions).
_DRIVERS = {
    "postgresql": (("psycopg2", None), ("psycopg", "postgresql+psycopg")),
    "mysql": (("MySQLdb", None), ("pymysql", "mysql+pymysql")),
    "mariadb": (("MySQLdb", None), ("pymysql", "mariadb+pymysql")),
}


def normalize(url: str) -> sa.URL:
    parsed = make_url(url)
    for module, replacement in _DRIVERS.get(parsed.drivername, ()):
        if importlib.util.find_spec(module) is not None:
            if replacement is not None:
                parsed = parsed.set(drivername=replacement)
            break
    return parsed


def engine_for(url: sa.URL, options: Mapping[str, Any]) -> Engine:
    """The process's engine for ``url``; a forked child gets its own, never the parent's pool."""
    key = (os.getpid(), url.render_as_string(hide_password=False), repr(sorted(options.items())))
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(url, options)
        return engine


@atexit.register
def _dispose_all() -> None:
    """Close this process's pooled connections at exit, before the drivers' finalizers
    complain of connections deleted while still open."""
    with _lock:
        mine = [e for (pid, _, _), e in _engines.items() if pid == os.getpid()]
    for engine in mine:
        engine.dispose()


def _create(url: sa.URL, options: Mapping[str, Any]) -> Engine:
    kwargs: dict[str, Any] = dict(options)
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
    engine = sa.create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine)
    return engine


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


@dataclass(frozen=True)
class RetryPolicy:
    """Transient errors (lost connection, server gone, deadlock, SQLite busy) are retried."""

    max_retries: int = 3
    interval_start: float = 0.05
    interval_max: float = 1.0

    @classmethod
    def from_option(cls, raw: object) -> RetryPolicy:
        if raw is None:
            return cls()
        keys = {"max_retries", "interval_start", "interval_max"}
        if not isinstance(raw, Mapping) or set(raw) - keys:
            raise ValueError(
                f"database_retry_policy must be a dict with keys among {sorted(keys)}, got {raw!r}"
            )
        policy = cls(**raw)
        retries = policy.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"database_retry_policy max_retries must be an int >= 0, got {raw!r}")
        for value in (policy.interval_start, policy.interval_max):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"database_retry_policy intervals must be seconds, got {raw!r}")
        if not 0 <= policy.interval_start <= policy.interval_max:
            raise ValueError(
                f"database_retry_policy needs 0 <= interval_start <= interval_max, got {raw!r}"
            )
        return policy

    def run(self, what: str, where: str, fn: Callable[[], T]) -> T:
        for delay in self._delays():
            try:
                return fn()
            except sa.exc.DBAPIError as exc:
                time.sleep(self._backoff(exc, what, where, delay))
        raise AssertionError("unreachable")

    async def arun(self, what: str, where: str, fn: Callable[[], Awaitable[T]]) -> T:
        """:meth:`run` for coroutines: the waits between attempts do not block the loop."""
        for delay in self._delays():
            try:
                return await fn()
            except sa.exc.DBAPIError as exc:
                await asyncio.sleep(self._backoff(exc, what, where, delay))
        raise AssertionError("unreachable")

    def _delays(self) -> Iterator[float | None]:
        """The wait after each failed attempt; ``None`` after the last."""
        delay = self.interval_start
        for _ in range(self.max_retries):
            yield delay
            delay = min(delay * 2, self.interval_max)
        yield None

    def _backoff(self, exc: sa.exc.DBAPIError, what: str, where: str, delay: float | None) -> float:
        """How long to wait before retrying ``exc``; raises it when it is not to be retried."""
        if not _transient(exc):
            raise exc
        if delay is None:
            raise BackendUnavailable(
                f"{what} failed on {where} after {self.max_retries} retries: "
                f"{type(exc.orig).__name__}: {str(exc.orig).strip()}"
            ) from exc
        return delay


def _transient(exc: sa.exc.DBAPIError) -> bool:
    return exc.connection_invalidated or isinstance(
        exc, (sa.exc.OperationalError, sa.exc.InterfaceError)
    )
