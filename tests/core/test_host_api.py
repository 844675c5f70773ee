"""The core API task systems build on: watches, raw groups, counters, and a Backend that a
host drops without closing (Celery never closes its backends).

The conformance suite proves each capability per plugin; these tests pin the core's side:
argument checks, the non-blocking discard, and what a dropped Backend leaves behind.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

import resultstore
from resultstore import (
    AsyncResult,
    Backend,
    GroupMeta,
    TaskMeta,
    UnsupportedOperation,
)
from resultstore_memory import MemoryBackend

from ..doubles import DictPlugin, bytes_plugin
from ..threads import DEADLINE, wait_until


def channel_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("resultstore-poll")}


# --- watches ---------------------------------------------------------------------------


def test_a_watch_validates_its_ids_and_callback(backend: Backend) -> None:
    with pytest.raises(TypeError, match=r"^callback must be callable, got 3$"):
        backend.watch(3)  # type: ignore[arg-type]
    with backend.watch(lambda t, m: None) as watch:
        with pytest.raises(ValueError, match=r"^task id must not be empty$"):
            watch.add(["ok", ""])
        assert watch.watched == frozenset()  # nothing added when one id is bad
        watch.add(["a", "b", "a"])
        assert watch.watched == {"a", "b"}
        assert backend.waiting_ids() == {"a", "b"}
        assert repr(watch) == "<Watch of 2 ids>"
    assert repr(watch) == "<Watch of 0 ids (closed)>"
    assert backend.waiting_ids() == frozenset()


def test_discard_never_waits_for_the_hub(backend: Backend) -> None:
    """From __del__ or a GC callback the hub's lock may be held by the same or another
    thread: discard queues the removal, and the lock's holder makes it."""
    watch = backend.watch(lambda t, m: None)
    watch.add(["a", "b"])
    hub = backend._hub
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with hub._lock:
            entered.set()
            release.wait(DEADLINE)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(DEADLINE)
    watch.discard(["a"])  # returns at once although the lock is held
    assert watch.watched == {"b"}
    assert set(hub._waiters) == {"a", "b"}  # not yet: the holder has the lock
    release.set()
    holder.join(DEADLINE)
    # The holder let go without looking: the next user of the hub makes the removal.
    watch.add(["c"])
    assert backend.waiting_ids() == {"b", "c"}
    watch.close()


def test_news_of_a_discarded_id_is_not_passed_on(backend: Backend) -> None:
    heard: list[tuple[str, TaskMeta | None]] = []
    watch = backend.watch(lambda t, m: heard.append((t, m)))
    watch.add(["a"])
    watch.discard(["a"])
    watch.wake("a", None)  # news already on its way when the id was discarded
    assert heard == []
    watch.close()


# --- raw groups and counters: the core's checks ----------------------------------------------


def test_group_meta_is_checked(backend: Backend) -> None:
    with pytest.raises(TypeError, match=r"^meta must be a GroupMeta, got tuple$"):
        backend.save_group_meta(("g", []))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^group id must not be empty$"):
        backend.save_group_meta(GroupMeta("", []))
    with pytest.raises(resultstore.EncodeError, match=r"group 'g' cannot be serialized"):
        backend.save_group_meta(GroupMeta("g", [object()]))
    assert backend.get_group_meta("g") is None


def test_counter_arguments_are_checked(backend: Backend) -> None:
    with pytest.raises(TypeError, match=r"^amount must be an int, got True$"):
        backend.incr("c", True)
    with pytest.raises(TypeError, match=r"^amount must be an int, got 1.5$"):
        backend.incr("c", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^counter name must not be empty$"):
        backend.incr("")
    with pytest.raises(ValueError, match=r"^expires must be positive"):
        backend.incr("c", expires=0)
    assert backend.incr("c") == 1


@pytest.fixture
def no_counter() -> Iterator[Backend]:
    resultstore.register_backend("nocounter", DictPlugin)
    try:
        with Backend("nocounter://") as b:
            yield b
    finally:
        resultstore.unregister_backend("nocounter")


def test_a_plugin_without_the_capability_says_so(no_counter: Backend) -> None:
    name = f"{DictPlugin.__module__}.{DictPlugin.__qualname__}"
    with pytest.raises(UnsupportedOperation) as caught:
        no_counter.incr("c")
    assert str(caught.value) == (
        f"incr needs capability 'counter', which plugin {name} for 'nocounter://' does not declare"
    )
    with pytest.raises(UnsupportedOperation, match=r"^get_group_meta needs capability 'groups'"):
        no_counter.get_group_meta("g")


# --- a Backend dropped without close() --------------------------------------------------------


def test_a_dropped_backend_that_waited_is_collected_and_its_channel_closed(
    store_url: str,
) -> None:
    backend = Backend(store_url)
    with pytest.raises(resultstore.TimeoutError):
        AsyncResult("t", backend).get(timeout=0.01)  # opens the push channel
    plugin = backend.plugin
    assert isinstance(plugin, MemoryBackend)
    assert len(plugin._store.open_channels()) == 1
    gone = weakref.ref(backend)
    del backend
    gc.collect()
    assert gone() is None
    wait_until(lambda: plugin._store.open_channels() == [], "the channel is closed")


def test_a_dropped_backend_that_polled_is_collected_and_its_poller_ends() -> None:
    with bytes_plugin() as kept:
        backend = Backend(str(kept.url))
        with pytest.raises(resultstore.TimeoutError):
            AsyncResult("t", backend).get(timeout=0.01)
        assert channel_threads()
        gone = weakref.ref(backend)
        del backend
        gc.collect()
        assert gone() is None
        wait_until(lambda: not channel_threads(), "the poller thread ends")


def test_close_then_drop_closes_nothing_twice(store_url: str) -> None:
    backend = Backend(store_url)
    AsyncResult("t", backend).ready()
    backend.close()
    assert not backend._dropped.alive  # close() took the finalizer's place


def test_extra_fields_sit_top_level_on_the_wire_and_come_back() -> None:
    meta = TaskMeta("t1", "SUCCESS", 3, extra={"labels": {"a": 1}, "execution_time": 0.5})
    wire = meta.to_wire()
    assert list(wire) == [
        "status", "result", "traceback", "children", "date_done",
        "labels", "execution_time", "task_id",
    ]  # fmt: skip
    assert TaskMeta.from_wire("t1", wire).extra == {"labels": {"a": 1}, "execution_time": 0.5}
    # Celery's own metas (no unknown keys) read with no extra fields.
    assert TaskMeta.from_wire("t1", TaskMeta("t1", "SUCCESS", 3).to_wire()).extra is None


def test_extra_fields_are_checked(backend: Backend) -> None:
    with pytest.raises(TypeError, match=r"^extra must be a mapping, got list$"):
        backend.store_result("t1", 1, "SUCCESS", extra=[("a", 1)])  # type: ignore[arg-type]
    for key in ("status", "task_id", "queue", 3):
        message = rf"^extra field {key!r} is not a str or names a field of the meta$"
        with pytest.raises(ValueError, match=message):
            backend.store_result("t1", 1, "SUCCESS", extra={key: 1})
    assert backend.exists("t1") is False
    assert backend.store_result("t1", 1, "SUCCESS", extra={}) is True
    assert backend.get_task_meta("t1").extra is None
