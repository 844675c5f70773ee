"""psycopg 3 connections that never wait on the server longer than the call may block.

A server that stops answering keeps its sockets open: nothing but the client's
own clock ends a read. psycopg runs every network exchange of a connection
through :meth:`Connection.wait`, which takes a timeout, and connects through a
generator it resumes every 0.1 s even when nothing arrives. These subclasses
pass :func:`resultstore.time_left` (the plugin's own bound, or less when the
call has a deadline) to both. A read that runs out closes the connection (it is
mid-statement, its state unknown) and raises ``OperationalError``, which
SQLAlchemy takes for a disconnect (``is_disconnect``: the connection is closed)
and the retry policy for a transient error.

libpq's ``connect_timeout`` cannot do this: whole seconds, at least 2.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from functools import cache
from typing import Any, TypeVar

import psycopg
from psycopg import waiting
from psycopg.errors import ConnectionTimeout

from resultstore import time_left

RV = TypeVar("RV")
_INTERVAL = 0.1  # psycopg's own: how often a wait wakes up to look at its deadline


def _connect_until(gen: Generator[Any, Any, RV], bound: float | None) -> Generator[Any, Any, RV]:
    """psycopg's connect generator, given up ``bound`` seconds from now."""
    if bound is None:
        return (yield from gen)
    until = time.monotonic() + bound
    try:
        step = next(gen)
        while True:
            ready = yield step
            if time.monotonic() >= until:
                raise ConnectionTimeout(
                    f"the server did not answer within {bound:.2f} s while connecting"
                )
            step = gen.send(ready)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        gen.close()  # frees the half-open connection now


def _no_answer(bound: float) -> psycopg.OperationalError:
    return psycopg.OperationalError(f"the server did not answer within {bound:.2f} s")


class _Bounded:
    """What the sync and async connections share: their bounds, and the bounded connect."""

    connect_timeout: float | None = None  # set on the subclass of each engine's bounds
    read_timeout: float | None = None

    @classmethod
    def _connect_gen(cls, conninfo: str = "", **kwargs: Any) -> Any:
        # Once per host psycopg tries, as libpq applies its connect_timeout to each.
        gen = super()._connect_gen(conninfo, **kwargs)  # type: ignore[misc]
        return _connect_until(gen, time_left(cls.connect_timeout))


class BoundedConnection(_Bounded, psycopg.Connection[Any]):
    """A psycopg connection whose connect and every exchange are bounded (see module doc)."""

    def wait(self, gen: Any, interval: float = _INTERVAL, timeout: float | None = None) -> Any:
        if timeout is not None:  # psycopg's own bounded waits (notifies, cancel)
            return super().wait(gen, interval, timeout)
        bound = time_left(self.read_timeout)
        started = time.monotonic()
        try:
            return super().wait(gen, interval, bound)
        except psycopg.OperationalError:
            if bound is None or time.monotonic() - started < bound:
                raise  # the server's own error
            self.close()
            raise _no_answer(bound) from None


class BoundedAsyncConnection(_Bounded, psycopg.AsyncConnection[Any]):
    """:class:`BoundedConnection` for asyncio (SQLAlchemy's async engine)."""

    async def wait(
        self, gen: Any, interval: float = _INTERVAL, timeout: float | None = None
    ) -> Any:
        if timeout is not None:
            return await super().wait(gen, interval, timeout)
        bound = time_left(self.read_timeout)
        started = time.monotonic()
        try:
            # psycopg's own wait, but for what it does when cancelled: it asks the
            # server to cancel the statement and waits for that, up to 5 + 5 s on a
            # server that stopped answering, when the cancel is a wait's deadline.
            return await waiting.wait_async(gen, self.pgconn.socket, interval, bound)
        except asyncio.CancelledError:
            await self.close()  # mid-statement: SQLAlchemy discards it anyway
            raise
        except psycopg.OperationalError:
            if bound is None or time.monotonic() - started < bound:
                raise
            await self.close()
            raise _no_answer(bound) from None


@cache
def connection_classes(
    connect_timeout: float, read_timeout: float
) -> tuple[type[BoundedConnection], type[BoundedAsyncConnection]]:
    """The sync and async connection classes of one engine's bounds (one pair per bounds)."""
    bounds = {"connect_timeout": connect_timeout, "read_timeout": read_timeout}
    return (
        type("BoundedConnection", (BoundedConnection,), bounds),
        type("BoundedAsyncConnection", (BoundedAsyncConnection,), bounds),
    )
