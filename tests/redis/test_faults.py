"""Faults on servers the tests own: killed (SIGKILL) while waiters block and while stores run.

Each test starts its own ``redis-server`` in ``tmp_path`` and kills / restarts
it on the same port. Every wait has a deadline and every step is polled with
one; nothing sleeps to let another thread "get there".
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import resultstore
from resultstore import AsyncResult, Backend, TaskMeta
from resultstore._waiting import Waiter
from resultstore_redis import RedisBackend
from resultstore_redis._channel import RedisChannel

from ..threads import DEADLINE, Worker, wait_until
from .servers import RedisServer

WAIT_TIMEOUT = 15.0  # the waiters' own timeout in the restart tests
# Small and bounded, so that a store or read against a dead server gives up quickly.
FAST_RETRIES = {"max_retries": 2, "interval_start": 0.05, "interval_max": 0.1}


def waiting(backend: Backend, task_id: str, timeout: float) -> Worker:
    worker = Worker(lambda: AsyncResult(task_id, backend).get(timeout=timeout))
    worker.start()
    return worker


def parked(*workers: Worker) -> bool:
    """Whether every worker's thread is blocked in the core's ``Waiter.wait``.

    A subscription the server reports is not enough before a kill: the waiter reads
    once more after subscribing, and that read would meet the dead server.
    """
    frames = sys._current_frames()
    for worker in workers:
        frame = frames.get(worker.ident) if worker.ident is not None else None
        while frame is not None and frame.f_code is not Waiter.wait.__code__:
            frame = frame.f_back
        if frame is None:
            return False
    return True


def options(**transport: Any) -> dict[str, Any]:
    return {"result_backend_transport_options": transport} if transport else {}


def numsub(server: RedisServer, ids: Sequence[str]) -> list[int]:
    client = server.client()
    try:
        pairs = client.pubsub_numsub(*(f"celery-task-meta-{t}" for t in ids))
        return [int(n) for _, n in pairs]
    finally:
        client.close()


def channel_of(backend: Backend) -> RedisChannel:
    plugin = backend.plugin
    assert isinstance(plugin, RedisBackend)
    assert len(plugin._channels) == 1
    return plugin._channels[0]


def assert_nothing_left(backend: Backend, server: RedisServer, ids: Sequence[str]) -> None:
    wait_until(lambda: sum(numsub(server, ids)) == 0, "the server holds no subscription")
    assert backend.waiting_ids() == frozenset()
    plugin = backend.plugin
    assert isinstance(plugin, RedisBackend)
    assert plugin.subscribed_ids() == frozenset()
    assert channel_of(backend)._confirm == {}


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``make_server(*extra_args)``: a started server of this test's own, killed at the end."""
    servers: list[RedisServer] = []

    def make(*extra: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", *extra)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


# --- waits across a kill --------------------------------------------------------------------

WAITERS = 20


def test_waiters_blocked_across_a_kill_and_restart_get_their_results(
    make_server: Callable[..., RedisServer],
) -> None:
    server = make_server()
    ids = [f"w{i}" for i in range(WAITERS)]
    with Backend(server.url) as consumer:
        workers = [waiting(consumer, t, WAIT_TIMEOUT) for t in ids]
        wait_until(lambda: numsub(server, ids) == [1] * WAITERS, "every waiter is subscribed")
        wait_until(lambda: parked(*workers), "every waiter is blocked")
        channel = channel_of(consumer)
        first_conn = channel._conn

        server.stop()
        wait_until(lambda: not channel.connected, "the listener saw the connection drop")
        server.start()
        # Half the results land at once, most likely before the listener is back:
        # those are found by the re-check that follows its resubscribe.
        early, late = ids[: WAITERS // 2], ids[WAITERS // 2 :]
        with Backend(server.url) as provider:
            back = "back" if channel.connected else "still reconnecting"
            print(f"\n{len(early)} results stored after the restart, the listener {back}")
            for i, task_id in enumerate(early):
                assert provider.mark_as_done(task_id, i) is True
            for i, worker in enumerate(workers[: len(early)]):
                assert worker.finish(WAIT_TIMEOUT) == i
            # The channel reconnected: the new server holds exactly the ids still waited for.
            wait_until(
                lambda: numsub(server, ids) == [0] * len(early) + [1] * len(late),
                "the listener resubscribed what is still waited for",
            )
            assert channel._conn is not None
            assert channel._conn is not first_conn
            for i, task_id in enumerate(late, start=len(early)):
                assert provider.mark_as_done(task_id, i) is True
            assert [w.finish(WAIT_TIMEOUT) for w in workers] == list(range(WAITERS))
        assert max(w.elapsed for w in workers) < WAIT_TIMEOUT
        assert_nothing_left(consumer, server, ids)


def test_with_the_server_gone_for_good_waiters_time_out_at_their_deadline(
    make_server: Callable[..., RedisServer],
) -> None:
    server = make_server()
    ids = [f"gone{i}" for i in range(5)]
    timeout = 1.0
    # The read at the deadline meets the dead server and gives up after FAST_RETRIES
    # (~0.2 s; ~0.7 s under the default policy): the timeout error then follows at once.
    with Backend(server.url, options=options(retry_policy=FAST_RETRIES)) as consumer:
        workers = [waiting(consumer, t, timeout) for t in ids]
        wait_until(lambda: numsub(server, ids) == [1] * len(ids), "every waiter is subscribed")
        wait_until(lambda: parked(*workers), "every waiter is blocked")
        server.stop()
        for worker in workers:
            worker.join(timeout + DEADLINE)
            assert not worker.is_alive(), "a waiter hung past its deadline"
            assert isinstance(worker.error, resultstore.TimeoutError), worker.error
            # The last read at the deadline could not reach the server: that is the cause.
            assert isinstance(worker.error.__cause__, resultstore.BackendUnavailable)
            assert timeout <= worker.elapsed <= timeout + 0.5, worker.elapsed
        assert consumer.waiting_ids() == frozenset()
        plugin = consumer.plugin
        assert isinstance(plugin, RedisBackend)
        assert plugin.subscribed_ids() == frozenset()


def test_a_wake_up_that_meets_a_dead_server_does_not_end_the_wait(
    make_server: Callable[..., RedisServer],
) -> None:
    # The listener's re-check after a reconnect wakes the waiter to read; if the server
    # dies again before that read, the wait goes on (to the next re-check or its deadline).
    server = make_server()
    options_ = options(retry_policy=FAST_RETRIES)
    with Backend(server.url, options=options_) as consumer:
        worker = waiting(consumer, "flap", WAIT_TIMEOUT)
        wait_until(lambda: numsub(server, ["flap"]) == [1], "the waiter is subscribed")
        wait_until(lambda: parked(worker), "the waiter is blocked")
        (waiter,) = consumer._hub._waiters["flap"]
        server.stop()
        consumer._hub._on_change("flap", None)  # a re-check landing as the server dies
        wait_until(
            lambda: not waiter._changed and (parked(worker) or not worker.is_alive()),
            "the waiter tried its read",
        )
        assert worker.is_alive(), worker.error
        server.start()
        with Backend(server.url) as provider:
            assert provider.mark_as_done("flap", "after the flap") is True
        assert worker.finish(WAIT_TIMEOUT) == "after the flap"
        assert_nothing_left(consumer, server, ["flap"])


# --- stores across a kill ---------------------------------------------------------------------


def test_a_store_to_a_dead_server_raises_a_clear_error_quickly_without_the_password(
    make_server: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()
    password = "s3cret"
    with server.client() as admin:
        admin.config_set("requirepass", password)
    url = f"redis://:{password}@127.0.0.1:{server.port}/0"
    caplog.set_level(logging.DEBUG)
    with Backend(url, options=options(retry_policy=FAST_RETRIES)) as backend:
        assert backend.mark_as_done("before", 1) is True  # the password is right
        waiter = waiting(backend, "never", 1.0)  # a listener that sees the kill, and logs it
        wait_until(lambda: parked(waiter), "the waiter is blocked")
        wait_until(lambda: channel_of(backend).connected, "the listener is connected")
        server.stop()
        started = time.monotonic()
        with pytest.raises(resultstore.BackendUnavailable) as raised:
            backend.mark_as_done("during", 2)
        elapsed = time.monotonic() - started
        with pytest.raises(resultstore.TimeoutError):
            waiter.finish()
    message = str(raised.value)
    print(f"\nstore to a dead server gave up after {elapsed * 1000:.0f} ms: {message}")
    assert elapsed < 5.0
    assert f"redis://:****@127.0.0.1:{server.port}/0" in message
    everything = "".join(traceback.format_exception(raised.value)) + caplog.text
    assert password not in everything
    assert password not in repr(backend)


def test_every_store_reported_as_written_survives_a_kill_in_the_middle(
    make_server: Callable[..., RedisServer],
) -> None:
    # The server fsyncs every write before it replies, so a SIGKILL loses nothing it
    # acknowledged: whatever the client was told was stored must be there after restart.
    server = make_server("--appendonly", "yes", "--appendfsync", "always")
    with server.client() as admin:
        assert admin.config_get("appendonly") == {"appendonly": "yes"}
    outcomes: dict[str, bool | BaseException] = {}
    durations: list[float] = []
    stop = threading.Event()

    def store_until_stopped(backend: Backend) -> None:
        for i in range(5000):
            if stop.is_set():
                return
            started = time.monotonic()
            try:
                outcomes[f"s{i}"] = backend.mark_as_done(f"s{i}", i)
            except Exception as exc:
                outcomes[f"s{i}"] = exc
            durations.append(time.monotonic() - started)

    def failures() -> int:
        return sum(isinstance(o, BaseException) for o in list(outcomes.values()))

    def written_after_restart() -> int:
        values = list(outcomes.values())
        last_failure = max(i for i, o in enumerate(values) if isinstance(o, BaseException))
        return sum(o is True for o in values[last_failure + 1 :])

    with Backend(server.url, options=options(retry_policy=FAST_RETRIES)) as backend:
        storer = Worker(lambda: store_until_stopped(backend))
        storer.start()
        wait_until(lambda: len(outcomes) >= 50, "50 stores were made")
        server.stop()
        wait_until(lambda: failures() >= 3, "stores failed while the server was down")
        server.start()
        wait_until(lambda: written_after_restart() >= 50, "50 stores were made after the restart")
        stop.set()
        storer.finish()

    written = [t for t, o in outcomes.items() if o is True]
    failed = {t: o for t, o in outcomes.items() if o is not True}
    print(
        f"\n{len(outcomes)} stores across a kill: {len(written)} written, "
        f"{len(failed)} raised; slowest call {max(durations) * 1000:.0f} ms"
    )
    assert max(durations) < 5.0
    # No silent drop: a store that did not say "written" raised a clear error.
    for task_id, outcome in failed.items():
        assert isinstance(outcome, resultstore.BackendUnavailable), (task_id, outcome)
    with Backend(server.url) as reader:
        found = reader.get_many(written)
    lost = [t for t in written if found[t].status != "SUCCESS" or found[t].result != int(t[1:])]
    assert lost == [], f"{len(lost)} acknowledged stores are gone: {lost[:10]}"


def test_a_store_retried_across_a_restart_succeeds_and_reaches_a_waiter_blocked_across_it(
    make_server: Callable[..., RedisServer],
) -> None:
    server = make_server()
    patient = {"max_retries": 40, "interval_start": 0.05, "interval_max": 0.1}
    store_began = threading.Event()

    class StoreBegan:
        @resultstore.hookimpl(wrapper=True)
        def store_result(
            self, meta: TaskMeta, ttl: float | None, overwrite: bool
        ) -> Generator[None, bool, bool]:
            store_began.set()
            return (yield)

    with (
        Backend(server.url) as consumer,
        Backend(server.url, options=options(retry_policy=patient)) as provider,
    ):
        assert provider.mark_as_done("first", 1) is True
        waiter = waiting(consumer, "second", WAIT_TIMEOUT)
        wait_until(lambda: numsub(server, ["second"]) == [1], "the waiter is subscribed")
        wait_until(lambda: parked(waiter), "the waiter is blocked")
        provider.add_plugin(StoreBegan())
        server.stop()
        storer = Worker(lambda: provider.mark_as_done("second", 2))
        storer.start()
        assert store_began.wait(DEADLINE)  # it began while the server was down...
        server.start()  # ...and is still retrying when it comes back
        assert storer.finish() is True
        assert waiter.finish(WAIT_TIMEOUT) == 2
        assert waiter.elapsed < WAIT_TIMEOUT
        assert_nothing_left(consumer, server, ["second"])
        print(f"\nstore retried across the restart took {storer.elapsed * 1000:.0f} ms")


# --- an idle subscriber ------------------------------------------------------------------


def test_a_wait_idle_past_the_health_check_interval_is_still_woken_by_push(
    make_server: Callable[..., RedisServer],
) -> None:
    # The listener PINGs an idle connection every health_check_interval. That PING
    # must not go through redis-py's own health check, which reads "PONG" in the
    # sending thread, gets the subscribed form ["pong", ""], and reconnects the socket
    # without its subscriptions: push would then stop, and only deadlines would end waits.
    server = make_server()
    idle = {"redis_backend_health_check_interval": 0.2}
    with Backend(server.url, options=idle) as consumer, Backend(server.url) as provider:
        waiter = waiting(consumer, "idle", WAIT_TIMEOUT)
        wait_until(lambda: numsub(server, ["idle"]) == [1], "the waiter is subscribed")

        def pinged_while_idle() -> bool:
            with server.client() as admin:
                return any(c["cmd"] == "ping" for c in admin.client_list())

        wait_until(pinged_while_idle, "the listener pinged its idle connection")
        assert numsub(server, ["idle"]) == [1]  # still subscribed after the ping
        stored_at = time.monotonic()
        provider.mark_as_done("idle", "woken")
        assert waiter.finish(WAIT_TIMEOUT) == "woken"
        assert waiter.returned_at - stored_at < 1.0  # by push, not by its deadline read
        assert_nothing_left(consumer, server, ["idle"])
