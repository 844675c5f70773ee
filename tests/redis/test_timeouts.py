"""Timeouts hold when the Redis server stops answering (issue 13, item 1).

The server is the test's own ``redis-server``, frozen with SIGSTOP (tests/silent.py's
``frozen``): its sockets stay open and the kernel still accepts connections, but
nothing answers. Or a socket that accepts and never answers (SilentServer), or a
``rediss://`` URL at a plain Redis port. A wait raises ``resultstore.TimeoutError``
within its timeout and the documented grace (0.25 s; asserted with room for a loaded
machine), whether the server froze before it began or while it waited. Calls without
a timeout of their own are bounded by ``redis_socket_timeout`` /
``redis_socket_connect_timeout`` within the retry policy. Every call runs in a thread
joined with a deadline: a regression fails, never hangs.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

import resultstore
from resultstore import Backend, BackendUnavailable
from resultstore_redis import RedisBackend

from ..frozen_waits import (
    BEFORE,
    BOUND,
    CALL_ROOM,
    DURING,
    GRACE,
    ROOM,
    WAITS,
    Waiting,
    assert_timed_out,
    ids_for,
)
from ..silent import SilentServer, frozen
from ..threads import DEADLINE, Worker, wait_until
from .servers import RedisServer

NO_RETRY = {"result_backend_transport_options": {"retry_policy": {"max_retries": 0}}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server_ = RedisServer(tmp_path / "redis").start()
    yield server_
    server_.stop()


def pid(server: RedisServer) -> int:
    assert server.process is not None
    return server.process.pid


def subscribed(backend: Backend, server: RedisServer, ids: list[str]) -> bool:
    if backend.waiting_ids() != set(ids):
        return False
    with server.client() as admin:
        counts = admin.pubsub_numsub(*(f"celery-task-meta-{t}" for t in ids))
    return [int(n) for _, n in counts] == [1] * len(ids)


# --- waits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("wait", WAITS)
def test_a_wait_on_a_frozen_server_ends_on_time(server: RedisServer, wait: str) -> None:
    ids = ids_for(wait)
    with Backend(server.url) as backend:
        for task_id in ids:  # the pool holds a connection now: the frozen server keeps it
            assert backend.mark_as_started(task_id)
        with frozen(pid(server)):
            waiter = Waiting(wait, backend, ids, BEFORE, warm=False)
            assert_timed_out(waiter, ids, BEFORE, "PENDING")  # not even the first read came


@pytest.mark.parametrize("wait", WAITS)
def test_a_wait_ends_on_time_when_the_server_freezes_during_it(
    server: RedisServer, wait: str
) -> None:
    ids = ids_for(wait)
    with Backend(server.url) as backend:
        for task_id in ids:
            assert backend.mark_as_started(task_id)
        waiter = Waiting(wait, backend, ids, DURING, warm=True)
        wait_until(
            lambda: subscribed(backend, server, ids) or not waiter.is_alive(), "the wait subscribes"
        )
        assert waiter.is_alive(), "the wait ended before it was seen subscribed"
        with frozen(pid(server)):
            assert time.monotonic() < waiter.began + DURING, "froze after the deadline"
            assert_timed_out(waiter, ids, DURING, "STARTED")


@pytest.mark.parametrize("wait", ["get", "aget"])
def test_closing_a_backend_on_a_frozen_server_is_quick(server: RedisServer, wait: str) -> None:
    """After a wait timed out on it: the listener, the pools and the event loop's client
    are let go without a word from the server."""
    backend = Backend(server.url)
    try:
        assert backend.mark_as_started("Task-1")
        waiter = Waiting(wait, backend, ["Task-1"], DURING, warm=True)
        wait_until(lambda: subscribed(backend, server, ["Task-1"]), "the wait subscribes")
        with frozen(pid(server)):
            assert_timed_out(waiter, ["Task-1"], DURING, "STARTED")
            closing = Worker(backend.close)
            closing.start()
            closing.finish(DEADLINE)
            print(f"close() on a frozen server: {closing.elapsed:.3f} s")
            assert closing.elapsed < 0.5, closing.elapsed
    finally:
        backend.close()


def test_a_wait_for_a_free_pooled_connection_ends_on_time(server: RedisServer) -> None:
    """All of the pool's connections busy: a wait with a deadline waits for one until
    then, not for the pool's own 30 s."""
    with Backend(server.url, options={"redis_max_connections": 1}) as backend:
        assert backend.mark_as_started("Task-1")
        pool = backend.plugin.client.connection_pool  # type: ignore[attr-defined]
        held = pool.get_connection()
        try:
            waiter = Waiting("get", backend, ["Task-1"], BEFORE, warm=False)
            assert_timed_out(waiter, ["Task-1"], BEFORE, "PENDING")
        finally:
            pool.release(held)


class FreezeAfterRead:
    """A wrapper plugin: the server freezes as the first read of a task ends, so the
    subscriber connection that the wait opens next meets a frozen server."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.frozen = False

    @resultstore.hookimpl(wrapper=True)
    def get(self, task_id: str) -> Generator[None, Any, Any]:
        meta = yield
        if not self.frozen:
            self.frozen = True
            os.kill(self.pid, signal.SIGSTOP)
        return meta


def test_closing_while_the_listener_connects_to_a_frozen_server_is_quick(
    server: RedisServer,
) -> None:
    backend = Backend(server.url)
    freeze = FreezeAfterRead(pid(server))
    try:
        assert backend.mark_as_started("Task-1")
        backend.add_plugin(freeze)
        waiter = Waiting("get", backend, ["Task-1"], BEFORE, warm=False)
        assert_timed_out(waiter, ["Task-1"], BEFORE, "STARTED")
        plugin = backend.plugin
        assert isinstance(plugin, RedisBackend)
        (channel,) = plugin._channels
        wait_until(lambda: channel._connecting is not None, "the listener is connecting")
        closing = Worker(backend.close)
        closing.start()
        closing.finish(DEADLINE)
        print(f"close() while the listener connects to a frozen server: {closing.elapsed:.3f} s")
        assert closing.elapsed < 0.5, closing.elapsed
    finally:
        if freeze.frozen:
            os.kill(pid(server), signal.SIGCONT)
        backend.close()


def test_a_get_on_a_socket_that_never_answers_ends_on_time() -> None:
    """A fresh connection: the handshake after the TCP connect gets no reply."""
    with SilentServer() as silent:
        opened = time.monotonic()
        backend = Backend(f"redis://127.0.0.1:{silent.port}/0")  # connects to nothing yet
        assert time.monotonic() - opened < 0.5
        waiter = Waiting("get", backend, ["Task-1"], 1.0, warm=False)
        assert_timed_out(waiter, ["Task-1"], 1.0, "PENDING")
        assert backend.cleanup() == 0  # Redis expires keys itself: nothing to wait on
        closing = Worker(backend.close)
        closing.start()
        closing.finish(DEADLINE)
        assert closing.elapsed < 0.5, closing.elapsed


@pytest.mark.parametrize("wait", ["get", "aget"])
def test_rediss_at_a_plain_port_ends_on_time(server: RedisServer, wait: str) -> None:
    with Backend(f"rediss://127.0.0.1:{server.port}/0", options=NO_RETRY) as backend:
        waiter = Waiting(wait, backend, ["Task-1"], 1.0, warm=False)
        with pytest.raises((resultstore.TimeoutError, BackendUnavailable)):
            waiter.finish(DEADLINE)
        assert waiter.spent < 1.0 + GRACE + ROOM, waiter.spent


# --- calls without a timeout of their own ---------------------------------------------------

BOUNDED = {
    "redis_socket_timeout": BOUND,
    "redis_socket_connect_timeout": BOUND,
    **NO_RETRY,
}
CALLS: dict[str, tuple[str, Callable[[Backend], Any]]] = {
    "store": ("storing celery-task-meta-Task-1", lambda b: b.mark_as_done("Task-1", 1)),
    "get_task_meta": ("GET celery-task-meta-Task-1", lambda b: b.get_task_meta("Task-1")),
    "forget": ("DEL celery-task-meta-Task-1", lambda b: b.forget("Task-1")),
    "incr": ("INCRBY resultstore-counter-Task-1", lambda b: b.incr("Task-1")),
    "astore": (
        "storing celery-task-meta-Task-1",
        lambda b: asyncio.run(b.astore_result("Task-1", 1, "SUCCESS")),
    ),
    "aget_task_meta": (
        "GET celery-task-meta-Task-1",
        lambda b: asyncio.run(b.aget_task_meta("Task-1")),
    ),
}


def no_reply(port: int) -> str:
    """redis-py's words for a read that timed out (the asyncio client names the server)."""
    return "TimeoutError: Timeout reading from " + (
        re.escape("socket") + "|" + re.escape(f"127.0.0.1:{port}")
    ).join("()")


@pytest.mark.parametrize("call", list(CALLS))
def test_a_call_on_a_frozen_server_is_bounded_by_the_socket_timeout(
    server: RedisServer, call: str
) -> None:
    what, fn = CALLS[call]
    with Backend(server.url, options=BOUNDED) as backend:
        assert backend.mark_as_started("Task-1")
        with frozen(pid(server)):
            caller = Worker(lambda: fn(backend))
            caller.start()
            with pytest.raises(BackendUnavailable) as raised:
                caller.finish(DEADLINE)
        assert re.fullmatch(
            re.escape(f"{what} failed on {server.url} after ")
            + r"0\.\d\d s, not retried \(a timeout; redis_retry_on_timeout is off\): "
            + no_reply(server.port),
            str(raised.value),
        ), str(raised.value)
        print(f"\n{call} on a frozen server, redis_socket_timeout={BOUND}: {caller.elapsed:.3f} s")
        assert BOUND <= caller.elapsed < BOUND + CALL_ROOM
        assert backend.mark_as_done("Task-2", 2)  # the dead connection was replaced


def test_a_store_on_a_socket_that_never_answers_is_bounded_by_the_connect_timeout() -> None:
    with (
        SilentServer() as silent,
        Backend(f"redis://127.0.0.1:{silent.port}/0", options=BOUNDED) as backend,
    ):
        caller = Worker(lambda: backend.mark_as_done("Task-1", 1))
        caller.start()
        with pytest.raises(BackendUnavailable) as raised:
            caller.finish(DEADLINE)
        assert re.fullmatch(
            re.escape(
                f"storing celery-task-meta-Task-1 failed on redis://127.0.0.1:{silent.port}/0"
            )
            + r" after 0\.\d\d s, not retried \(a timeout; redis_retry_on_timeout is off\): "
            + no_reply(silent.port),
            str(raised.value),
        ), str(raised.value)
        assert BOUND <= caller.elapsed < BOUND + CALL_ROOM


def test_timeouts_default_to_five_seconds_to_connect_and_two_minutes_to_read() -> None:
    with Backend("redis://127.0.0.1:1/0") as backend:
        pool = backend.plugin.client.connection_pool  # type: ignore[attr-defined]
        conn = pool.make_connection()
        assert (conn.socket_connect_timeout, conn.socket_timeout) == (5.0, 120.0)
        with resultstore._deadline.scope(time.monotonic() + 1.0):
            assert 0.9 < conn.socket_timeout <= 1.0  # a call with a deadline: what is left
            assert 0.9 < conn.socket_connect_timeout <= 1.0
        pool.release(conn)
