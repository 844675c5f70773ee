"""ResultStoreBackend's keys and extended fields, and the counter barrier, in process on
memory:// (the worker tests cover the real path)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from dramatiq import Message
from dramatiq.rate_limits import Barrier

from dramatiq_resultstore import CounterBarrierBackend, ResultStoreBackend
from resultstore import Backend

from ..doubles import bytes_plugin


@pytest.fixture
def url() -> Iterator[str]:
    from resultstore_memory import drop_store

    name = f"dramatiq-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    drop_store(name)


MESSAGE = Message("jobs", "add", (1, 2), {"z": 3}, {"retries": 2}, message_id="m-1")


def test_keys_are_message_ids_or_dramatiqs_readable_keys(url: str) -> None:
    plain = ResultStoreBackend(url)
    assert plain.build_message_key(MESSAGE) == "m-1"
    named = ResultStoreBackend(url, namespace="app", use_namespace_prefix_keys=True)
    assert named.build_message_key(MESSAGE) == "app:jobs:add:m-1"
    named.store_result(MESSAGE, 3, 60_000)
    assert named.backend.get_result("app:jobs:add:m-1") == 3
    assert named.get_result(MESSAGE) == 3


def test_extended_fields_record_the_message(url: str) -> None:
    results = ResultStoreBackend(url, extended=True)
    results.store_result(MESSAGE, 3, 60_000)
    meta = results.backend.get_task_meta("m-1")
    got = (meta.name, meta.args, meta.kwargs, meta.queue, meta.retries)
    assert got == ("add", [1, 2], {"z": 3}, "jobs", 2)


def test_a_barrier_clears_once_and_a_second_create_is_refused(url: str) -> None:
    with Backend(url) as backend:
        barriers = CounterBarrierBackend(backend)
        barrier = Barrier(barriers, "b-1", ttl=60_000)
        assert barrier.create(3) is True
        assert barrier.create(3) is False  # it exists: left as it was
        assert [barrier.wait(block=False) for _ in range(3)] == [False, False, True]
        assert backend.incr("b-1", 0) == 1
        # A blocking wait (not cleared by this party) needs events a counter has not.
        blocking = Barrier(barriers, "b-2", ttl=60_000)
        assert blocking.create(2) is True
        message = r"^a resultstore counter serves group completion callbacks \(non-blocking"
        with pytest.raises(NotImplementedError, match=message):
            blocking.wait(block=True, timeout=10)


def test_a_store_without_counters_is_refused() -> None:
    message = r"^group completion callbacks need a plugin with capability 'counter'; "
    with bytes_plugin() as backend, pytest.raises(ValueError, match=message):
        CounterBarrierBackend(backend)
