"""Replies lost on the way back, and connections that die mid-command (issue 13, items 3 and 8).

A TCP proxy (proxy.py) in front of the machine's Redis forwards a command and then
drops the client's connection, after the server's reply (the server ran it) or before
(the connection died mid-command, and the proxy then refuses reconnects). Every call
runs in a thread joined with a deadline.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from resultstore import Backend, BackendUnavailable

from ..threads import DEADLINE, Worker
from .conftest import transport
from .proxy import DroppingProxy

ROUNDS = 20
# The store script runs as EVALSHA; pickle (which the script cannot read) goes through
# WATCH / MULTI / EXEC.
PATHS = {"lua": ("json", b"EVALSHA"), "watch": ("pickle", b"EXEC")}
MARGIN = 0.5  # what a loaded machine may add to the policy's own waits


@pytest.fixture
def proxy(redis_url: str) -> Iterator[DroppingProxy]:
    with DroppingProxy(redis.connection.parse_url(redis_url)["port"]) as proxy_:
        yield proxy_


def in_thread(fn: Any) -> Any:
    worker = Worker(fn)
    worker.start()
    return worker.finish(DEADLINE)


def store(backend: Backend, mode: str, task_id: str, value: int) -> Any:
    if mode == "sync":
        return lambda: backend.mark_as_done(task_id, value)
    return lambda: asyncio.run(backend.astore_result(task_id, value, "SUCCESS"))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("path", list(PATHS))
def test_a_store_whose_reply_was_lost_reports_written(
    proxy: DroppingProxy, keyprefix: str, server: redis.Redis, path: str, mode: str
) -> None:
    serializer, marker = PATHS[path]
    options = transport(keyprefix, retry_policy={"max_retries": 2, "interval_start": 0.01})
    with Backend(
        proxy.url, serializer=serializer, accept_content=[serializer], options=options
    ) as backend:
        assert backend.mark_as_started("warm-up")  # the script is loaded, the pool is up
        outcomes = []
        for i in range(ROUNDS):
            task_id = f"lost-{i}"
            proxy.arm(marker)
            outcomes.append(in_thread(store(backend, mode, task_id, i)))
            assert proxy.dropped.is_set(), f"round {i}: the reply was not lost"
            assert backend.get_task_meta(task_id).result == i
        assert outcomes == [True] * ROUNDS
        # Still a ready state kept against a different write: a duplicate worker's.
        assert backend.mark_as_done("lost-0", "late duplicate") is False
        assert backend.get_task_meta("lost-0").result == 0


def test_an_increment_whose_reply_was_lost_is_not_counted_twice(
    proxy: DroppingProxy, keyprefix: str, server: redis.Redis
) -> None:
    with Backend(proxy.url, options=transport(keyprefix)) as backend:
        assert backend.incr("chord", 1) == 1
        proxy.arm(b"EVALSHA")
        with pytest.raises(BackendUnavailable) as raised:
            in_thread(lambda: backend.incr("chord", 1))
        assert proxy.dropped.is_set()
        assert re.fullmatch(
            re.escape(f"INCRBY {keyprefix}resultstore-counter-chord failed on {proxy.url} after ")
            + r"\d\.\d\d s, not retried \(the command may have reached the server\): "
            + re.escape("ConnectionError: Connection closed by server."),
            str(raised.value),
        ), str(raised.value)
        assert backend.incr("chord", 1) == 3  # the lost one was counted once


POLICY = {"max_retries": 3, "interval_start": 0.05, "interval_max": 1.0}
WAITS = 0.05 + 0.1 + 0.2  # the policy's three waits


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_connection_dying_mid_command_costs_the_policy_budget_and_says_so(
    proxy: DroppingProxy, keyprefix: str, mode: str
) -> None:
    with Backend(proxy.url, options=transport(keyprefix, retry_policy=POLICY)) as backend:
        assert backend.mark_as_started("t")
        proxy.arm(b"GET", after_reply=False, refuse=True)
        started = time.monotonic()
        read = (
            (lambda: backend.get_task_meta("t"))
            if mode == "sync"
            else (lambda: asyncio.run(backend.aget_task_meta("t")))
        )
        with pytest.raises(BackendUnavailable) as raised:
            in_thread(read)
        elapsed = time.monotonic() - started
    found = re.fullmatch(
        re.escape(f"GET {keyprefix}celery-task-meta-t failed on {proxy.url} after 4 attempts in ")
        + r"(\d\.\d\d) s, no retries left \(max_retries=3\): "
        + refused(proxy.port),
        str(raised.value),
    )
    assert found, str(raised.value)
    print(f"\nconnection died mid-command ({mode}): gave up after {elapsed:.3f} s")
    assert WAITS - 0.01 <= float(found.group(1)) <= elapsed + 0.01
    assert elapsed < WAITS + MARGIN


def refused(port: int) -> str:
    """redis-py's words for a refused connect (the asyncio client has asyncio's)."""
    return re.escape(f"ConnectionError: Error 111 connecting to 127.0.0.1:{port}. ") + (
        re.escape("Connection refused.")
        + "|"
        + re.escape(f"Connect call failed ('127.0.0.1', {port}).")
    ).join("()")


def test_the_retry_policy_timeout_caps_the_total(proxy: DroppingProxy, keyprefix: str) -> None:
    policy = {"max_retries": 100, "interval_start": 0.1, "interval_max": 0.1, "timeout": 0.5}
    with Backend(proxy.url, options=transport(keyprefix, retry_policy=policy)) as backend:
        assert backend.mark_as_started("t")
        proxy.arm(b"GET", after_reply=False, refuse=True)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as raised:
            in_thread(lambda: backend.get_task_meta("t"))
        elapsed = time.monotonic() - started
    assert re.fullmatch(
        re.escape(f"GET {keyprefix}celery-task-meta-t failed on {proxy.url} after ")
        + r"\d attempts in 0\.\d\d s, out of time \(retry_policy timeout=0\.5 s\): "
        + refused(proxy.port),
        str(raised.value),
    ), str(raised.value)
    assert elapsed < 0.5 + MARGIN
