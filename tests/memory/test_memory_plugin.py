"""What is particular to memory://: store names, URL and option checks, thread safety."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resultstore import (
    STARTED,
    SUCCESS,
    AsyncResult,
    Backend,
    TaskMeta,
)
from resultstore.testing import FakeClock
from resultstore_memory import MemoryBackend

DEADLINE = 10.0


def keys(backend: Backend) -> list[str]:
    plugin = backend.plugin
    assert isinstance(plugin, MemoryBackend)
    return sorted(plugin.keys())


def run_threads(targets: list[Callable[[], Any]]) -> list[Any]:
    """Run each target in its own thread; return their values or re-raise the first error."""
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def run(i: int, target: Callable[[], Any]) -> None:
        try:
            results[i] = target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
        assert not thread.is_alive(), "a thread did not finish"
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def name() -> str:
    return f"m-{uuid.uuid4().hex}"


class TestStores:
    def test_named_stores_are_distinct_from_the_default_store(self, name: str) -> None:
        task_id = f"id-{uuid.uuid4().hex}"
        with Backend(f"memory://{name}") as named, Backend("memory://") as default:
            named.mark_as_done(task_id, "named")
            assert default.exists(task_id) is False
            default.mark_as_done(task_id, "default")
            assert named.get_result(task_id) == "named"
            assert default.get_result(task_id) == "default"
            assert default.forget(task_id) is True
            assert named.get_result(task_id) == "named"

    def test_two_names_are_two_stores(self, name: str) -> None:
        with Backend(f"memory://{name}-a") as a, Backend(f"memory://{name}-b") as b:
            a.mark_as_done("t", 1)
            assert b.exists("t") is False
            assert keys(a) == ["celery-task-meta-t"]
            assert keys(b) == []

    def test_backends_on_one_url_share_the_store(self, name: str) -> None:
        url = f"memory://{name}"
        with Backend(url) as one, Backend(url) as two:
            one.mark_as_done("t", {"v": 1})
            assert two.get_result("t") == {"v": 1}
            two.forget("t")
            assert one.exists("t") is False
        with Backend(url) as later:
            assert later.exists("t") is False

    def test_default_store_spellings(self) -> None:
        task_id = f"id-{uuid.uuid4().hex}"
        with Backend("memory://") as a, Backend("memory:///") as b:
            assert a.plugin.name == ""  # type: ignore[attr-defined]
            a.mark_as_done(task_id, 1)
            assert b.get_result(task_id) == 1
            a.forget(task_id)

    def test_stored_bytes_do_not_change_with_the_value(self, name: str) -> None:
        with Backend(f"memory://{name}") as backend:
            value = {"items": [1, 2]}
            backend.mark_as_done("t", value)
            value["items"].append(3)
            assert backend.get_result("t") == {"items": [1, 2]}
            read = backend.get_result("t")
            read["items"].append(4)
            assert backend.get_result("t") == {"items": [1, 2]}


class TestURLAndOptions:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("memory://user:secret@store", "memory://user:****@store"),
            ("memory://user@store", "memory://user@store"),
            ("memory://store:6379", "memory://store:6379"),
            ("memory://store/0", "memory://store/0"),
            ("memory://store?x=1", "memory://store?x=1"),
        ],
        ids=["password", "user", "port", "path", "query"],
    )
    def test_only_a_store_name(self, url: str, shown: str) -> None:
        with pytest.raises(ValueError, match=r"^memory:// takes only a store name") as raised:
            Backend(url)
        assert type(raised.value) is ValueError
        assert str(raised.value) == (
            f"memory:// takes only a store name (memory://NAME), got {shown!r}"
        )
        assert "secret" not in str(raised.value)

    def test_port_zero_is_refused_too(self) -> None:
        with pytest.raises(ValueError, match=r"^memory:// takes only a store name") as raised:
            Backend("memory://store:0")
        assert str(raised.value) == (
            "memory:// takes only a store name (memory://NAME), got 'memory://store:0'"
        )

    @pytest.mark.parametrize("clock", [5, "time.time", None], ids=["int", "str", "none"])
    def test_clock_must_be_callable(self, name: str, clock: Any) -> None:
        with pytest.raises(TypeError) as raised:
            Backend(f"memory://{name}", options={"clock": clock})
        assert str(raised.value) == f"memory:// option 'clock' must be callable, got {clock!r}"

    def test_unknown_option(self, name: str) -> None:
        with pytest.raises(ValueError, match=r"^memory://") as raised:
            Backend(f"memory://{name}", options={"max_size": 10})
        assert str(raised.value) == (
            f"memory://{name}: plugin resultstore_memory.MemoryBackend does not take option "
            "'max_size' (it takes: clock)"
        )

    def test_each_backend_has_its_own_clock_over_the_shared_store(self, name: str) -> None:
        url = f"memory://{name}"
        early, late = FakeClock(1000.0), FakeClock(1000.0)
        with (
            Backend(url, expires=10, options={"clock": early}) as writer,
            Backend(url, options={"clock": late}) as reader,
        ):
            writer.mark_as_done("t", 1)
            late.advance(10)
            assert reader.exists("t") is False
            assert writer.exists("t") is False


class TestKeyValuePrimitives:
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock(1000.0)

    @pytest.fixture
    def plugin(self, name: str, clock: FakeClock) -> Iterator[MemoryBackend]:
        with Backend(f"memory://{name}", options={"clock": clock}) as backend:
            assert isinstance(backend.plugin, MemoryBackend)
            yield backend.plugin

    def test_get_set_delete(self, plugin: MemoryBackend, clock: FakeClock) -> None:
        assert plugin.kv_get("k") is None
        plugin.kv_set("k", b"v", None)
        assert plugin.kv_get("k") == b"v"
        assert plugin.kv_mget(["k", "missing"]) == [b"v", None]
        assert plugin.kv_delete("k") is True
        assert plugin.kv_delete("k") is False
        assert plugin.keys() == []

    def test_ttl(self, plugin: MemoryBackend, clock: FakeClock) -> None:
        plugin.kv_set("short", b"1", 5)
        plugin.kv_set("forever", b"2", None)
        clock.advance(4.5)
        assert sorted(plugin.keys()) == ["forever", "short"]
        clock.advance(0.5)
        assert plugin.kv_get("short") is None
        assert plugin.keys() == ["forever"]
        assert plugin.cleanup() == 0

    def test_cleanup(self, plugin: MemoryBackend, clock: FakeClock) -> None:
        for i in range(5):
            plugin.kv_set(f"k{i}", b"x", 1 + i)
        clock.advance(3)
        assert plugin.cleanup() == 3
        assert sorted(plugin.keys()) == ["k3", "k4"]


class TestChannels:
    def test_close_closes_the_channel(self, name: str) -> None:
        url = f"memory://{name}"
        with Backend(url) as provider:
            consumer = Backend(url)
            plugin = consumer.plugin
            assert isinstance(plugin, MemoryBackend)
            with pytest.raises(TimeoutError):  # a wait that subscribed (builtin base class)
                AsyncResult("t", consumer).get(timeout=0.01)
            assert len(plugin._channels) == 1
            channel = plugin._channels[0]
            assert channel in plugin._store.open_channels()
            consumer.close()
            assert plugin._channels == []
            assert channel not in plugin._store.open_channels()
            assert channel.subscribed() == frozenset()
            assert provider.mark_as_done("u", 2) is True


# --- thread safety ----------------------------------------------------------------------


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads every microsecond, so that races really interleave."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class TestThreadSafety:
    @pytest.mark.usefixtures("fast_switching")
    def test_concurrent_stores_and_reads_lose_nothing(self, name: str) -> None:
        url = f"memory://{name}"
        threads, per_thread, step = 8, 200, 100
        # Thread n stores ids n*100 .. n*100+199: each id but the first and last 100 is
        # stored by two threads.
        distinct = step * (threads - 1) + per_thread
        barrier = threading.Barrier(threads, timeout=DEADLINE)

        def work(n: int) -> tuple[int, int]:
            with Backend(url) as backend:
                barrier.wait()
                written = 0
                for i in range(n * step, n * step + per_thread):
                    written += backend.mark_as_done(f"k{i}", i)
                    meta = backend.get_task_meta(f"k{i}")
                    assert (meta.status, meta.result) == (SUCCESS, i)
                    assert backend.get_task_meta(f"k{(i + 37) % distinct}").status in (
                        "PENDING",
                        SUCCESS,
                    )
                found = backend.get_many([f"k{i}" for i in range(n * step, n * step + per_thread)])
                return written, sum(m.status == SUCCESS for m in found.values())

        results = run_threads([lambda n=n: work(n) for n in range(threads)])
        assert [found for _, found in results] == [per_thread] * threads
        # Every id was written exactly once: the second store of an id finds SUCCESS.
        assert sum(written for written, _ in results) == distinct
        with Backend(url) as backend:
            assert keys(backend) == sorted(f"celery-task-meta-k{i}" for i in range(distinct))
            assert backend.get_many([f"k{i}" for i in range(distinct)]) == {
                f"k{i}": TaskMeta(
                    f"k{i}",
                    SUCCESS,
                    result=i,
                    date_done=backend.get_task_meta(f"k{i}").date_done,
                )
                for i in range(distinct)
            }

    @pytest.mark.usefixtures("fast_switching")
    def test_started_never_replaces_success_in_a_race(self, name: str) -> None:
        url = f"memory://{name}"
        rounds = 200
        barrier = threading.Barrier(2, timeout=DEADLINE)

        def finish() -> list[bool]:
            with Backend(url) as backend:
                out = []
                for i in range(rounds):
                    barrier.wait()
                    out.append(backend.mark_as_done(f"r{i}", i))
                return out

        def start() -> list[bool]:
            with Backend(url) as backend:
                out = []
                for i in range(rounds):
                    barrier.wait()
                    out.append(backend.mark_as_started(f"r{i}", {"pid": 1}))
                return out

        done, started = run_threads([finish, start])
        assert done == [True] * rounds
        with Backend(url) as backend:
            states = [backend.get_state(f"r{i}") for i in range(rounds)]
            assert states == [SUCCESS] * rounds
            assert [backend.get_result(f"r{i}") for i in range(rounds)] == list(range(rounds))
        # A start that lost the race was refused (False); one that won was replaced.
        assert STARTED not in states
        print(
            f"\nrace done vs started: {started.count(True)} starts landed first, "
            f"{started.count(False)} were refused"
        )


def test_drop_store_forgets_a_named_store() -> None:
    from resultstore_memory import drop_store

    with Backend("memory://to-drop") as backend:
        backend.mark_as_done("t", 1)
    assert drop_store("to-drop") is True
    assert drop_store("to-drop") is False
    with Backend("memory://to-drop") as backend:
        assert backend.exists("t") is False


def test_a_stored_meta_reads_back_as_from_wire_reads_its_bytes() -> None:
    """get() skips TaskMeta.from_wire's checks for the bytes store_result wrote: what it
    builds must be exactly what from_wire builds from the same bytes, for every field."""
    from resultstore import TaskInfo

    info = TaskInfo(
        name="n", args=[1, "é"], kwargs={"k": [2]}, worker="w", retries=3, queue="q",
        group_id="g", parent_id="p", children=[["c", None]],
    )  # fmt: skip
    with Backend(f"memory://{uuid.uuid4().hex}", extended=True) as backend:
        plugin = backend.plugin
        assert isinstance(plugin, MemoryBackend)
        backend.mark_as_started("started")
        backend.mark_as_done("plain", {"v": [1, 2]})
        backend.mark_as_done("extended", "x", request=info)
        backend.mark_as_failure("failed", ValueError("boom"), request=info)
        backend.store_result("extra", 1, "SUCCESS", extra={"host": {"labels": ["a"]}})
        for task_id in ("started", "plain", "extended", "failed", "extra"):
            data = plugin.kv_get(plugin.task_key(task_id))
            assert data is not None
            expected = TaskMeta.from_wire(task_id, plugin.codec.loads(data, "test"))
            got = backend.get_task_meta(task_id)
            assert got == expected
            assert vars(got) == vars(expected)
        # A caller mutating what it read changes nothing stored.
        backend.get_task_meta("plain").result["v"].append(3)
        assert backend.get_result("plain") == {"v": [1, 2]}
