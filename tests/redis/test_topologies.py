"""resultstore-redis on Sentinel and on a real 3-master Redis Cluster, both started here.

Each topology is started by a module-scoped fixture on free ports in temporary
directories, waited for with deadlines (never bare sleeps), and killed at the end.
The conformance suite runs on each; a few tests cover what only that topology has.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from resultstore import AsyncResult, Backend, GroupResult
from resultstore.testing import BackendTests

from .conftest import transport
from .servers import REDIS_SERVER, RedisServer, free_port

REDIS_CLI = str(Path(REDIS_SERVER).with_name("redis-cli"))
MASTER_NAME = "mymaster"
STARTUP_TIMEOUT = 15.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; raise with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.02)


def new_prefix() -> str:
    return f"topo-{uuid.uuid4().hex[:12]}:"


# --- Sentinel --------------------------------------------------------------------------------


class SentinelProcess:
    """``redis-server <conf> --sentinel`` monitoring one master as ``mymaster``."""

    def __init__(self, directory: Path, master_port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.config = directory / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"logfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def master_address(self) -> tuple[str, int] | None:
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=0.5)
        try:
            reply = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        finally:
            client.close()
        if not reply:
            return None
        host, port = reply
        return (host.decode() if isinstance(host, bytes) else host), int(port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelProcess]:
    """One master and one sentinel monitoring it; both killed at the end of the module."""
    root = tmp_path_factory.mktemp("sentinel")
    master = RedisServer(root / "master")
    watcher = SentinelProcess(root / "sentinel", master.port)
    try:
        master.start()
        watcher.start()
        wait_for(
            lambda: watcher.master_address() == ("127.0.0.1", master.port),
            STARTUP_TIMEOUT,
            f"the sentinel on port {watcher.port} reports the master on port {master.port}",
        )
        yield watcher
    finally:
        watcher.stop()
        master.stop()


def sentinel_url(*ports: int) -> str:
    return ";".join(f"sentinel://127.0.0.1:{port}" for port in ports) + "/0"


def sentinel_options(prefix: str) -> dict[str, Any]:
    return transport(prefix, master_name=MASTER_NAME)


class TestSentinelConformance(BackendTests):
    short_ttl = 0.2

    @pytest.fixture(autouse=True)
    def _server(self, sentinel: SentinelProcess) -> None:
        # Celery's form: the same sentinel twice, ';'-joined.
        self.url = sentinel_url(sentinel.port, sentinel.port)  # type: ignore[misc]
        self.prefix = new_prefix()

    def make_backend(self, **overrides: Any) -> Backend:
        return Backend(self.url, options=sentinel_options(self.prefix), **overrides)


@pytest.mark.parametrize("order", ["dead-second", "dead-first"])
def test_sentinel_list_with_a_dead_host(sentinel: SentinelProcess, order: str) -> None:
    dead = free_port()  # nothing listens there
    ports = (sentinel.port, dead) if order == "dead-second" else (dead, sentinel.port)
    task_id = f"dead-host-{uuid.uuid4().hex}"
    options = sentinel_options(new_prefix())
    with Backend(sentinel_url(*ports), options=options) as backend:
        started = time.monotonic()
        assert backend.mark_as_done(task_id, "via a live sentinel") is True
        # A refused sentinel is skipped at once (redis-py's own retries took ~4 s).
        assert time.monotonic() - started < 1.0
        with Backend(sentinel_url(sentinel.port), options=options) as other:
            assert AsyncResult(task_id, other).get(timeout=5) == "via a live sentinel"
        waiter = AsyncResult(f"{task_id}-pushed", backend)
        got: list[object] = []
        thread = threading.Thread(target=lambda: got.append(waiter.get(timeout=10)))
        thread.start()
        wait_for(lambda: waiter.id in backend.waiting_ids(), 5, "the waiter is blocked")
        with Backend(sentinel_url(sentinel.port), options=options) as other:
            other.mark_as_done(waiter.id, "pushed")
        thread.join(10)
        assert got == ["pushed"]


def test_sentinel_closed_backends_leave_no_sentinel_connections(
    sentinel: SentinelProcess,
) -> None:
    probe = redis.Redis(port=sentinel.port)
    try:
        before = len(probe.client_list())
        for _ in range(3):
            backend = Backend(sentinel_url(sentinel.port), options=sentinel_options(new_prefix()))
            backend.mark_as_done(f"closed-{uuid.uuid4().hex}", 1)
            backend.close()  # still referenced: closing alone must free the connections
        assert len(probe.client_list()) == before
    finally:
        probe.close()


def test_sentinel_writes_go_to_the_master(sentinel: SentinelProcess) -> None:
    prefix = new_prefix()
    task_id = f"on-master-{uuid.uuid4().hex}"
    with Backend(sentinel_url(sentinel.port), options=sentinel_options(prefix)) as backend:
        backend.mark_as_done(task_id, 1)
    address = sentinel.master_address()
    assert address is not None
    master = redis.Redis(host=address[0], port=address[1])
    try:
        assert master.exists(f"{prefix}celery-task-meta-{task_id}") == 1
    finally:
        master.close()


def test_sentinel_needs_master_name() -> None:
    url = "sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380/0"
    message = f"{url!r}: sentinel:// needs result_backend_transport_options={{'master_name': ...}}"
    for options in ({}, transport("p:"), transport("p:", master_name="")):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            Backend(url, options=options)


# --- Redis Cluster ---------------------------------------------------------------------------


class Cluster:
    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes
        self.url = f"redis+cluster://127.0.0.1:{nodes[0].port}/0"

    def client(self) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port)


def _cluster_ok(nodes: list[RedisServer]) -> bool:
    """Every node serves all slots and knows the others (pub/sub travels on the bus)."""
    for node in nodes:
        client = node.client()
        try:
            # Split form: redis-py parses "CLUSTER INFO" into a dict, this keeps the text.
            info = client.execute_command("CLUSTER", "INFO").decode().split()
        finally:
            client.close()
        if not {"cluster_state:ok", f"cluster_known_nodes:{len(nodes)}"} <= set(info):
            return False
    return True


def cluster_node(directory: Path) -> RedisServer:
    args = [
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", "2000",
        # The bus port defaults to port + 10000, which may be taken or above 65535.
        "--cluster-port", str(free_port()),
    ]  # fmt: skip
    return RedisServer(directory, *args)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three masters (no replicas) joined with ``redis-cli --cluster create``; all killed after."""
    root = tmp_path_factory.mktemp("cluster")
    nodes = [cluster_node(root / f"node{i}") for i in range(3)]
    try:
        for node in nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        create = subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{create.stdout}{create.stderr}"
            )
        wait_for(lambda: _cluster_ok(nodes), STARTUP_TIMEOUT, "every node says cluster_state:ok")
        yield Cluster(nodes)
    finally:
        for node in nodes:
            node.stop()


class TestClusterConformance(BackendTests):
    short_ttl = 0.2

    @pytest.fixture(autouse=True)
    def _server(self, cluster: Cluster) -> None:
        self.url = cluster.url  # type: ignore[misc]
        self.prefix = new_prefix()

    def make_backend(self, **overrides: Any) -> Backend:
        return Backend(self.url, options=transport(self.prefix), **overrides)

    def test_pickle_is_refused_unless_accepted(self, backend: Backend, task_id: str) -> None:
        # The suite stores with pickle; on Cluster the plugin refuses pickle outright
        # (its ready-state check runs in a server-side script that cannot read pickle).
        with pytest.raises(ValueError, match="result_serializer must be one of"):
            self.make_backend(serializer="pickle", accept_content=["pickle"])


def ids_on_every_master(cluster: Cluster, prefix: str, per_node: int) -> list[str]:
    """Task ids whose keys hash to each of the three masters, ``per_node`` of each."""
    client = cluster.client()
    try:
        by_node: dict[str, list[str]] = {}
        while len(by_node) < 3 or min(len(ids) for ids in by_node.values()) < per_node:
            task_id = f"spread-{uuid.uuid4().hex}"
            node = client.get_node_from_key(f"{prefix}celery-task-meta-{task_id}")
            ids = by_node.setdefault(node.name, [])
            if len(ids) < per_node:
                ids.append(task_id)
        return [task_id for ids in by_node.values() for task_id in ids]
    finally:
        client.close()


def test_cluster_get_many_across_slots(cluster: Cluster) -> None:
    prefix = new_prefix()
    ids = ids_on_every_master(cluster, prefix, per_node=5)
    slots = {key_slot(f"{prefix}celery-task-meta-{t}".encode()) for t in ids}
    assert len(slots) > 3
    with Backend(cluster.url, options=transport(prefix)) as backend:
        for i, task_id in enumerate(ids[::2]):
            backend.mark_as_done(task_id, i)
        metas = backend.get_many(ids)
    assert list(metas) == ids
    assert [metas[t].result for t in ids[::2]] == list(range(len(ids[::2])))
    assert {metas[t].status for t in ids[1::2]} == {"PENDING"}


def test_cluster_push_waits_across_masters(cluster: Cluster) -> None:
    prefix = new_prefix()
    ids = ids_on_every_master(cluster, prefix, per_node=3)
    options = transport(prefix)
    with (
        Backend(cluster.url, options=options) as backend,
        Backend(cluster.url, options=options) as other,
    ):
        group = GroupResult(f"g-{uuid.uuid4().hex}", [AsyncResult(t, backend) for t in ids])
        single = AsyncResult(ids[-1], backend)
        got: dict[str, object] = {}

        def join() -> None:
            got["join"] = group.join(timeout=10)

        def get() -> None:
            got["get"] = single.get(timeout=10)

        threads = [threading.Thread(target=join), threading.Thread(target=get)]
        for thread in threads:
            thread.start()
        wait_for(lambda: set(ids) <= backend.waiting_ids(), 5, "the waiters are blocked")
        stored = time.monotonic()
        for task_id in ids:
            other.mark_as_done(task_id, task_id.upper())
        for thread in threads:
            thread.join(10)
        assert time.monotonic() - stored < 2.0
        assert got == {"join": [t.upper() for t in ids], "get": ids[-1].upper()}
        assert backend.waiting_ids() == frozenset()


def test_cluster_refuses_pickle(cluster: Cluster) -> None:
    message = (
        f"{cluster.url!r}: on Redis Cluster the result_serializer must be one of "
        "['json', 'msgpack'] (the ready-state check runs in a server-side script)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Backend(cluster.url, serializer="pickle", accept_content=["pickle"])
