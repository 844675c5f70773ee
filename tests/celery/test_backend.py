"""The bridge without a worker: URL, settings, pickling, fork, expiry, and refusing memory://."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from celery.app.task import Context
from celery.exceptions import ImproperlyConfigured
from celery.utils.functional import regen

import celery_resultstore
from celery_resultstore._chords import GENERATOR_HEADER
from resultstore import Capability, GroupMeta

from .conftest import BROKER, start_worker


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"resultstore+db+sqlite:///{tmp_path / 'r.db'}"


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Celery]:
    app = Celery("unit", broker="memory://", backend=sqlite_url, set_as_current=False)
    yield app
    app.close()


def tid() -> str:
    return str(uuid.uuid4())


def test_the_entry_point_selects_the_bridge(app: Celery, sqlite_url: str) -> None:
    assert type(app.backend) is celery_resultstore.ResultStoreBackend
    assert app.backend.url == sqlite_url.removeprefix("resultstore+")
    assert app.backend.as_uri() == sqlite_url


def test_as_uri_masks_the_password() -> None:
    app = Celery("uri", backend=f"resultstore+redis://:secret@{BROKER.split('//')[1]}")
    try:
        assert app.backend.as_uri() == "resultstore+redis://:****@127.0.0.1:6379/12"
        assert app.backend.as_uri(include_password=True) == (
            "resultstore+redis://:secret@127.0.0.1:6379/12"
        )
    finally:
        app.close()


def test_a_url_is_required() -> None:
    app = Celery("nourl", backend="resultstore")
    with pytest.raises(ImproperlyConfigured, match="needs a resultstore URL after the prefix"):
        app.backend  # noqa: B018


def test_plugin_settings_are_forwarded_and_misspelt_ones_refused(sqlite_url: str) -> None:
    app = Celery("opts", backend=sqlite_url, set_as_current=False)
    app.conf.database_table_names = {"task": "bridge_tasks", "group": "bridge_groups"}
    app.conf.redis_max_connections = 3  # another plugin's setting: not forwarded
    assert app.backend.store.config.options == {
        "database_table_names": {"task": "bridge_tasks", "group": "bridge_groups"}
    }
    typo = Celery("typo", backend=sqlite_url, set_as_current=False)
    typo.conf.database_table_name = {"task": "x"}
    with pytest.raises(ValueError, match="does not take option 'database_table_name'; did you"):
        typo.backend  # noqa: B018


def test_threads_and_unpickled_copies_share_one_store(app: Celery) -> None:
    stores = []
    thread = threading.Thread(target=lambda: stores.append(app.backend.store))
    thread.start()
    thread.join(10)
    assert app.backend is not None
    assert stores == [app.backend.store]
    copy = pickle.loads(pickle.dumps(app.backend))
    assert type(copy) is celery_resultstore.ResultStoreBackend
    assert copy.as_uri() == app.backend.as_uri()


def _store_in_child(app: Celery, task_id: str) -> None:
    app.backend.mark_as_done(task_id, "from the child")


def test_survives_fork(app: Celery) -> None:
    before = tid()
    app.backend.mark_as_done(before, "parent")  # the parent's plugin is in use at fork time
    task_id = tid()
    child = multiprocessing.get_context("fork").Process(target=_store_in_child, args=(app, task_id))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert app.AsyncResult(task_id).get(timeout=10) == "from the child"
    assert app.AsyncResult(before).get(timeout=10) == "parent"


def test_ignore_result_stores_nothing(app: Celery) -> None:
    task_id = tid()
    app.backend.mark_as_done(task_id, 1, request=Context(id=task_id, ignore_result=True))
    assert app.backend.task_result_exists(task_id) is False


def test_autoexpire_and_cleanup(app: Celery) -> None:
    assert app.backend.supports_autoexpire is False  # SQL: Celery's backend_cleanup sweeps
    redis_app = Celery("ttl", backend=f"resultstore+{BROKER}", set_as_current=False)
    try:
        assert redis_app.backend.supports_autoexpire is True
        assert Capability.TTL in redis_app.backend.store.capabilities
    finally:
        redis_app.close()
    app.conf.result_expires = 0.05
    short = Celery("short", backend=app.conf.result_backend, set_as_current=False)
    short.conf.result_expires = 0.05
    task_id = tid()
    short.backend.mark_as_done(task_id, 1)
    aged = time.monotonic() + 0.1
    while time.monotonic() < aged:  # the result must be older than result_expires
        time.sleep(0.01)
    short.tasks["celery.backend_cleanup"]()
    assert short.backend.task_result_exists(task_id) is False


def test_a_worker_refuses_memory() -> None:
    worker = start_worker("resultstore+memory://private", "rs-memory-refused", wait_ready=False)
    try:
        assert worker.proc.wait(60) != 0
    finally:
        worker.stop()
    assert (
        "result_backend 'resultstore+memory://private' keeps results inside one process: "
        "a worker's pool processes and its clients could never read them."
    ) in worker.output


def test_without_a_counter_exactly_one_part_claims_the_callback(app: Celery) -> None:
    """The chord path of plugins without the counter capability (every first-party plugin
    has it now, so the worker tests take the counter path): parts that find the header
    complete race for a claim record, which only the first store wins."""
    backend = app.backend
    members = [tid() for _ in range(40)]
    header = app.GroupResult(tid(), [app.AsyncResult(t) for t in members])
    backend.store.save_group_meta(GroupMeta(header.id, header.as_tuple()))
    for task_id in members[:-1]:
        backend.mark_as_done(task_id, 1)
    assert backend._claimed(header.id) is False  # the last member has not stored yet
    backend.mark_as_done(members[-1], 1)
    outcomes: list[bool] = []
    racers = [
        threading.Thread(target=lambda: outcomes.append(backend._claimed(header.id)))
        for _ in range(8)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(10)
    assert sorted(outcomes) == [False] * 7 + [True]


@pytest.mark.parametrize("generator", [False, True], ids=["list", "generator"])
def test_exactly_one_calls_back_wherever_the_size_arrives(
    app: Celery, monkeypatch: pytest.MonkeyPatch, generator: bool
) -> None:
    """The counter path, in process: Celery gives the size (set_chord_size) before it
    sends the last part, but however the size and the parts interleave, and with a
    part added by one of them, exactly one of them calls back, with every part."""
    backend = app.backend
    joined: list[list[str]] = []
    monkeypatch.setattr(
        backend, "_finish_chord", lambda header, callback: joined.append(header.results)
    )
    for position in range(5):  # set_chord_size before the first part returns, ..., after all
        group_id, members, extra = tid(), [tid() for _ in range(3)], tid()
        results = [app.AsyncResult(t) for t in members]
        body = app.signature("t.body")
        backend.apply_chord((group_id, regen(iter(results)) if generator else results), body)
        assert body.get(GENERATOR_HEADER, False) is generator
        parts = [
            Context(id=t, group=group_id, group_index=i, chord=dict(body))
            for i, t in enumerate(members)
        ]
        # The first part adds one (with its index, as Task.add_to_chord does).
        backend.add_to_chord(group_id, app.AsyncResult(extra))
        events: list[Context | None] = [
            parts[0],
            Context(id=extra, group=group_id, group_index=0, chord=dict(body)),
            *parts[1:],
        ]
        events.insert(position, None)  # None: Celery gives the size
        for request in events:
            if request is None:
                backend.set_chord_size(group_id, 3)
            else:
                backend.store_result(request.id, 1, "SUCCESS")
                backend.on_chord_part_return(request, "SUCCESS", 1)
        # A generator header's parts come in Celery's order (by index); otherwise the
        # header's, then the added ones.
        order = [members[0], extra, *members[1:]] if generator else [*members, extra]
        assert [[r.id for r in results] for results in joined] == [order]
        joined.clear()
