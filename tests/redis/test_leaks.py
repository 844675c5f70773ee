"""Push waits on the machine's Redis leave nothing behind, and thousands of them share one socket.

Every test has its own key prefix (so its own channel names), which keeps the
server-side checks exact while other tests use the same server. A waiter is
known to be blocked when the server reports its subscription (polled with a
deadline); no test sleeps to let another thread "get there". Figures are
printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

import pytest
import redis

import resultstore
from resultstore import AsyncResult, Backend, ResultSet
from resultstore._waiting import Waiter
from resultstore_redis import RedisBackend
from resultstore_redis._channel import RedisChannel

from ..threads import DEADLINE, Worker, wait_until
from .conftest import transport

# --- the server's view -------------------------------------------------------------------


def channel_name(prefix: str, task_id: str) -> str:
    return f"{prefix}celery-task-meta-{task_id}"


def numsub(client: redis.Redis, prefix: str, ids: Sequence[str], batch: int = 1000) -> list[int]:
    """``PUBSUB NUMSUB`` of every id's channel, asked in batches."""
    counts: list[int] = []
    for start in range(0, len(ids), batch):
        names = [channel_name(prefix, t) for t in ids[start : start + batch]]
        counts.extend(int(n) for _, n in client.pubsub_numsub(*names))
    return counts


def active_channels(client: redis.Redis, prefix: str) -> list[bytes | str]:
    return list(client.pubsub_channels(f"{prefix}*"))


def assert_no_subscriptions_left(client: redis.Redis, prefix: str, ids: Sequence[str]) -> None:
    """UNSUBSCRIBE is sent without waiting for its reply: poll until the server agrees."""
    wait_until(
        lambda: not active_channels(client, prefix), f"no channel under {prefix!r} is subscribed"
    )
    counts = numsub(client, prefix, ids)
    assert sum(counts) == 0, [t for t, n in zip(ids, counts, strict=True) if n]


def own_tcp_ports() -> set[int]:
    """Local ports of this process's TCP sockets (Linux /proc), to pick our clients out of
    ``CLIENT LIST`` while other processes use the same server."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def own_subscriber_clients(client: redis.Redis) -> list[dict[str, Any]]:
    """This process's connections that the server sees in pub/sub mode."""
    ours = own_tcp_ports()
    return [
        c
        for c in client.client_list(_type="pubsub")
        if int(str(c["addr"]).rsplit(":", 1)[1]) in ours
    ]


# --- the client's view -------------------------------------------------------------------


def the_channel(backend: Backend) -> RedisChannel:
    plugin = backend.plugin
    assert isinstance(plugin, RedisBackend)
    assert len(plugin._channels) == 1, plugin._channels
    return plugin._channels[0]


def assert_nothing_left_in(backend: Backend) -> None:
    plugin = backend.plugin
    assert isinstance(plugin, RedisBackend)
    assert backend.waiting_ids() == frozenset()
    assert plugin.subscribed_ids() == frozenset()
    channel = the_channel(backend)
    with channel._lock:
        assert channel._ids == {}
        assert channel._confirm == {}
        assert channel._recheck == set()
    assert backend._hub._deferred == []
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, Waiter)] == []


# --- the tests ---------------------------------------------------------------------------

TIMED_OUT_WAITS = 10_000


def test_ten_thousand_timed_out_waits_leave_nothing(
    backend: Backend, server: redis.Redis, keyprefix: str
) -> None:
    with pytest.raises(resultstore.TimeoutError):
        backend.wait_for("warm-up", timeout=0.0005)  # opens the channel and its listener
    threads = threading.active_count()
    ids = [f"leak-{i}" for i in range(TIMED_OUT_WAITS)]
    started = time.monotonic()
    for task_id in ids:
        with pytest.raises(resultstore.TimeoutError):
            AsyncResult(task_id, backend).get(timeout=0.0005)
    elapsed = time.monotonic() - started
    print(
        f"\n{TIMED_OUT_WAITS} timed-out waits in {elapsed:.2f} s "
        f"({elapsed / TIMED_OUT_WAITS * 1e6:.0f} us each)"
    )
    assert_no_subscriptions_left(server, keyprefix, ["warm-up", *ids])
    assert_nothing_left_in(backend)
    assert threading.active_count() == threads
    assert own_subscriber_clients(server) == []  # open but subscribed to nothing
    # ...and it still works.
    waiter = Worker(lambda: backend.wait_for("after", timeout=DEADLINE).result)
    waiter.start()
    wait_until(lambda: numsub(server, keyprefix, ["after"]) == [1], "the waiter is subscribed")
    with Backend(backend.url, options=transport(keyprefix)) as provider:
        provider.mark_as_done("after", "still pushed")
    assert waiter.finish() == "still pushed"


THREADS = 1_000


def test_a_thousand_threads_share_one_subscriber_and_all_wake(
    backend: Backend, provider: Backend, server: redis.Redis, keyprefix: str
) -> None:
    assert own_subscriber_clients(server) == []
    ids = [f"many-{i}" for i in range(THREADS)]
    stored_at: dict[str, float] = {}
    old_stack_size = threading.stack_size(256 * 1024)
    try:
        workers = [Worker(partial(AsyncResult(t, backend).get, timeout=DEADLINE * 2)) for t in ids]
        for worker in workers:
            worker.start()
    finally:
        threading.stack_size(old_stack_size)
    wait_until(
        lambda: sum(numsub(server, keyprefix, ids)) == THREADS,
        f"all {THREADS} waiters are subscribed",
    )
    subscribers = own_subscriber_clients(server)
    assert len(subscribers) == 1, subscribers
    assert int(subscribers[0]["sub"]) == THREADS
    assert len(the_channel(backend).subscribed_ids()) == THREADS
    assert not any(w.returned_at for w in workers), "a waiter returned before its result"

    started = time.monotonic()
    for i, task_id in enumerate(ids):
        provider.mark_as_done(task_id, i)
        stored_at[task_id] = time.monotonic()
    stored = time.monotonic()
    values = [w.finish() for w in workers]
    assert values == list(range(THREADS))
    last = max(w.returned_at for w in workers)
    latencies = sorted(w.returned_at - stored_at[t] for w, t in zip(workers, ids, strict=True))
    print(
        f"\n{THREADS} threads on one subscriber: stores took {stored - started:.3f} s, "
        f"all awake {last - started:.3f} s after the first store "
        f"({(last - stored) * 1000:.1f} ms after the last); per-waiter store->return "
        f"median {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.2f} ms, "
        f"max {latencies[-1] * 1000:.2f} ms"
    )
    assert_no_subscriptions_left(server, keyprefix, ids)
    assert_nothing_left_in(backend)
    assert own_subscriber_clients(server) == []


def test_a_forgotten_wait_leaves_nothing(
    backend: Backend, provider: Backend, server: redis.Redis, keyprefix: str
) -> None:
    provider.mark_as_started("f")  # something stored to forget
    waiter = Worker(lambda: AsyncResult("f", backend).get(timeout=1.0))
    waiter.start()
    wait_until(lambda: numsub(server, keyprefix, ["f"]) == [1], "the waiter is subscribed")
    AsyncResult("f", provider).forget()
    assert not provider.exists("f")
    with pytest.raises(resultstore.TimeoutError):
        waiter.finish()
    assert_no_subscriptions_left(server, keyprefix, ["f"])
    assert_nothing_left_in(backend)


def test_an_abandoned_as_completed_leaves_nothing(
    backend: Backend, provider: Backend, server: redis.Redis, keyprefix: str
) -> None:
    ids = ["a", "b", "c"]

    def store_a_once_all_are_waited_for() -> None:
        wait_until(lambda: numsub(server, keyprefix, ids) == [1, 1, 1], "all are subscribed")
        provider.mark_as_done("a", 1)

    storer = Worker(store_a_once_all_are_waited_for)
    storer.start()
    completed = ResultSet([AsyncResult(t, backend) for t in ids]).as_completed(timeout=DEADLINE)
    assert next(completed).id == "a"
    storer.finish()
    assert backend.waiting_ids() == {"b", "c"}
    del completed  # abandoned, not closed: the generator's finalizer must clean up
    assert backend.waiting_ids() == frozenset()
    assert_no_subscriptions_left(server, keyprefix, ids)
    assert_nothing_left_in(backend)


# Exit codes of the forked child, one per check (0: all held).
_CHILD_CHECKS = (
    "the child inherited the parent's waiters",
    "the child's wait did not subscribe on a connection of its own",
    "the child reused the parent's subscriber connection",
    "the child's wait did not get the result the parent stored",
    "the child's wait did not get the result it stored itself",
    "the child left a subscription or a waiter behind",
)


def _in_child(backend: Backend, server_url: str, keyprefix: str, parent_channel: Any) -> int:
    """Returns 0 or the 1-based number of the first failed check in ``_CHILD_CHECKS``."""
    if backend.waiting_ids():
        return 1
    client = redis.Redis.from_url(server_url)  # a connection of the child's own
    from_parent = Worker(lambda: AsyncResult("from-parent", backend).get(timeout=DEADLINE))
    from_parent.start()
    deadline = time.monotonic() + DEADLINE
    # The parent stores as soon as it sees the subscription, and the woken wait then
    # unsubscribes: on a loaded machine that can all happen between two looks here.
    while from_parent.is_alive() and numsub(client, keyprefix, ["from-parent"]) != [1]:
        if time.monotonic() > deadline:
            return 2
        time.sleep(0.001)
    plugin = backend.plugin
    assert isinstance(plugin, RedisBackend)
    mine = plugin._channels[-1]
    if mine is parent_channel or mine._conn is None or mine._conn is parent_channel._conn:
        return 3
    if from_parent.finish() != "from the parent":  # the parent stores it once it sees NUMSUB 1
        return 4
    by_itself = Worker(lambda: AsyncResult("by-itself", backend).get(timeout=DEADLINE))
    by_itself.start()
    while backend.waiting_ids() != {"by-itself"}:
        if time.monotonic() > deadline:
            return 5
        time.sleep(0.001)
    backend.mark_as_done("by-itself", "from the child")
    if by_itself.finish() != "from the child":
        return 5
    while active_channels(client, keyprefix) != [channel_name(keyprefix, "parent").encode()]:
        if time.monotonic() > deadline:
            return 6
        time.sleep(0.001)
    return 0 if backend.waiting_ids() == frozenset() else 6


def test_a_forked_child_gets_its_own_subscriber_connection(
    backend: Backend, provider: Backend, server: redis.Redis, redis_url: str, keyprefix: str
) -> None:
    parent_wait = Worker(lambda: AsyncResult("parent", backend).get(timeout=DEADLINE * 2))
    parent_wait.start()
    wait_until(lambda: numsub(server, keyprefix, ["parent"]) == [1], "the parent is subscribed")
    parent_channel = the_channel(backend)
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads: that is the test
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 99
        try:
            code = _in_child(backend, redis_url, keyprefix, parent_channel)
        finally:
            os._exit(code)
    try:
        wait_until(
            lambda: numsub(server, keyprefix, ["from-parent"]) == [1], "the child is subscribed"
        )
        provider.mark_as_done("from-parent", "from the parent")
        deadline = time.monotonic() + DEADLINE * 2
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "the forked child did not exit"
            time.sleep(0.005)
        pid = 0
        code = os.waitstatus_to_exitcode(done[1])
        assert code == 0, _CHILD_CHECKS[code - 1] if 0 < code <= len(_CHILD_CHECKS) else code
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    # The parent's channel is untouched by the child's life and exit.
    assert the_channel(backend) is parent_channel
    provider.mark_as_done("parent", "for the parent")
    assert parent_wait.finish() == "for the parent"
    assert_no_subscriptions_left(server, keyprefix, ["parent", "from-parent", "by-itself"])
    assert_nothing_left_in(backend)
