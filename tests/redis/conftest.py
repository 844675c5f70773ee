"""Redis fixtures: the machine's server on 127.0.0.1:6379, started if it is down."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from resultstore import Backend

REDIS_URL = "redis://127.0.0.1:6379/0"
# The machine's own start command (see the env notes); used only when nothing answers.
START_REDIS = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def _ping() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if _ping():
        return REDIS_URL
    if shutil.which("redis-server"):
        subprocess.run(START_REDIS, check=False, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _ping():
                return REDIS_URL
            time.sleep(0.1)
    pytest.fail(
        f"Redis is not answering on {REDIS_URL} and could not be started with "
        f"{' '.join(START_REDIS)!r}; start it and rerun"
    )


@pytest.fixture
def keyprefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def transport(prefix: str, **more: Any) -> dict[str, Any]:
    return {"result_backend_transport_options": {"global_keyprefix": prefix, **more}}


@pytest.fixture
def backend(redis_url: str, keyprefix: str) -> Iterator[Backend]:
    with Backend(redis_url, options=transport(keyprefix)) as b:
        yield b


@pytest.fixture
def provider(redis_url: str, keyprefix: str) -> Iterator[Backend]:
    """The worker's side: another Backend (its own connections) on the same server."""
    with Backend(redis_url, options=transport(keyprefix)) as b:
        yield b


@pytest.fixture
def server(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
