"""Results too big to publish (issue 13, item 7).

Redis drops a subscriber whose output buffer passes its pub/sub limit (32 MB by
default), and the shared subscriber connection carries every waiter of the process.
Above ``redis_publish_max_bytes`` the store publishes an empty message and the waiter
reads the key. The test's own server has a 64 kB limit and the option is set to 4 kB,
so a 200 kB result shows it without moving 50 MB around.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resultstore import AsyncResult, Backend
from resultstore_redis import RedisBackend

from ..threads import DEADLINE, Worker, wait_until
from .servers import RedisServer

LIMIT = ["--client-output-buffer-limit", "pubsub", "64kb", "32kb", "60"]
OPTIONS = {"redis_publish_max_bytes": 4096}
BIG = "x" * 200_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server_ = RedisServer(tmp_path / "redis", *LIMIT).start()
    yield server_
    server_.stop()


def waiting(backend: Backend, task_id: str) -> Worker:
    worker = Worker(lambda: AsyncResult(task_id, backend).get(timeout=DEADLINE))
    worker.start()
    return worker


def numsub(server: RedisServer, ids: list[str]) -> list[int]:
    with server.client() as admin:
        return [int(n) for _, n in admin.pubsub_numsub(*(f"celery-task-meta-{t}" for t in ids))]


def subscribers(server: RedisServer) -> dict[str, int]:
    """The server's subscribed clients: id -> how many channels."""
    with server.client() as admin:
        return {c["id"]: int(c["sub"]) for c in admin.client_list() if int(c["sub"]) > 0}


def test_a_big_result_reaches_its_waiter_and_the_others_keep_the_connection(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resultstore.redis")
    with (
        Backend(server.url, options=OPTIONS) as consumer,
        Backend(server.url, options=OPTIONS) as provider,
        server.client() as raw,
    ):
        big, small = waiting(consumer, "big"), waiting(consumer, "small")
        wait_until(lambda: numsub(server, ["big", "small"]) == [1, 1], "both waiters subscribe")
        plugin = consumer.plugin
        assert isinstance(plugin, RedisBackend)
        (channel,) = plugin._channels
        conn = channel._conn
        (listener,) = subscribers(server)  # the consumer's one subscriber connection
        watcher = raw.pubsub()
        watcher.subscribe("celery-task-meta-big")
        assert watcher.get_message(timeout=DEADLINE)["type"] == "subscribe"

        assert provider.mark_as_done("big", BIG) is True
        assert big.finish() == BIG
        published = watcher.get_message(timeout=DEADLINE)
        assert published["data"] == b""  # a notification, not the 200 kB value
        watcher.close()

        stored_at = time.monotonic()
        assert provider.mark_as_done("small", "small") is True
        assert small.finish() == "small"
        assert small.returned_at - stored_at < 1.0  # by push, on the same connection
        assert channel._conn is conn
        with server.client() as admin:  # the server never dropped it
            assert listener in {c["id"] for c in admin.client_list()}
        assert "subscriber connection lost" not in caplog.text


def test_a_result_under_the_limit_is_published_whole(server: RedisServer) -> None:
    """What Celery's own waiters read: the meta itself, as Celery publishes it."""
    with Backend(server.url, options=OPTIONS) as backend, server.client() as raw:
        watcher = raw.pubsub()
        watcher.subscribe("celery-task-meta-small")
        assert watcher.get_message(timeout=DEADLINE)["type"] == "subscribe"
        assert backend.mark_as_done("small", "v") is True
        published = watcher.get_message(timeout=DEADLINE)
        assert published["data"] == raw.get("celery-task-meta-small")
        watcher.close()


@pytest.mark.parametrize(("value", "error"), [(-1, TypeError), ("1", TypeError), (True, TypeError)])
def test_the_limit_is_validated(value: object, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        Backend("redis://h/0", options={"redis_publish_max_bytes": value})
    assert str(raised.value) == (
        f"redis_publish_max_bytes must be an int >= 0 or None, got {value!r}"
    )


def test_the_limit_defaults_to_one_mebibyte_and_none_turns_it_off() -> None:
    with Backend("redis://h/0") as backend:
        assert backend.plugin.settings.publish_max_bytes == 1 << 20  # type: ignore[attr-defined]
    with Backend("redis://h/0", options={"redis_publish_max_bytes": None}) as backend:
        assert backend.plugin.settings.publish_max_bytes is None  # type: ignore[attr-defined]
