"""Byte-level Celery compatibility on the machine's Redis, and real interop with Celery.

What resultstore writes is compared byte for byte with the documented encoding
(``json.dumps`` with default separators, Celery's key order) and with what
Celery itself writes for the same task under its own key prefix. Then Celery
and resultstore read each other's results through the same keys, and a Celery
client blocked in ``AsyncResult.get()`` is woken by a resultstore store.
"""

from __future__ import annotations

import gc
import json
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import celery
import celery.exceptions
import pytest
import redis
from celery.app.task import Context

import resultstore
from resultstore import AsyncResult, Backend, GroupResult, TaskInfo

from ..doubles import fail_with, traceback_text
from .conftest import transport

pytestmark = [
    # Celery 5.7's Redis backend stores with SETEX, which redis-py 8 marks deprecated.
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

DEADLINE = 5.0
DATE_DONE = re.compile(rb'"date_done": "([^"]*)"')


# --- helpers -------------------------------------------------------------------------


def celery_bytes(record: dict[str, Any]) -> bytes:
    """The documented encoding: ``json.dumps`` with default separators, keys in order."""
    return json.dumps(record).encode()


def date_done(data: bytes, before: datetime, after: datetime) -> str:
    """The stored date_done text: ISO-8601 with ``+00:00``, taken between the two instants."""
    found = DATE_DONE.search(data)
    assert found is not None, data
    text = found.group(1).decode()
    assert text.endswith("+00:00"), text
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(0)
    assert before <= parsed <= after
    return text


def without_date(data: bytes) -> bytes:
    return DATE_DONE.sub(b'"date_done": "<date>"', data)


def now() -> datetime:
    return datetime.now(timezone.utc)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout}s")
        time.sleep(0.005)


def next_message(pubsub: Any, timeout: float = DEADLINE) -> dict[str, Any]:
    """The next pub/sub 'message' (subscribe confirmations skipped), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=remaining)
        if message is not None and message["type"] == "message":
            return dict(message)
    pytest.fail(f"no pub/sub message within {timeout}s")


def numsub(client: redis.Redis, channel: str) -> int:
    return int(dict(client.pubsub_numsub(channel))[channel.encode()])


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def backend(redis_url: str, keyprefix: str) -> Iterator[Backend]:
    with Backend(redis_url, options=transport(keyprefix)) as b:
        yield b


@pytest.fixture
def extended_backend(redis_url: str, keyprefix: str) -> Iterator[Backend]:
    with Backend(redis_url, options=transport(keyprefix), extended=True) as b:
        yield b


class CeleryApps:
    """Celery apps on the test's Redis, each closed (with every backend it made) at the end."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.apps: list[celery.Celery] = []
        self.backends: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, prefix: str, *, extended: bool = True) -> celery.Celery:
        app = celery.Celery(f"wire-{len(self.apps)}", set_as_current=False)
        app.conf.update(
            result_backend=self.redis_url,
            result_backend_transport_options={"global_keyprefix": prefix},
            result_extended=extended,
        )
        self.apps.append(app)
        self.backend_of(app)
        return app

    def backend_of(self, app: celery.Celery) -> Any:
        """``app.backend`` of the calling thread (Celery keeps one per thread)."""
        backend = app.backend
        with self._lock:
            if all(b is not backend for b in self.backends):
                self.backends.append(backend)
        return backend

    def close(self) -> None:
        for backend in self.backends:
            backend.result_consumer.stop()
            backend.client.connection_pool.disconnect()
        for app in self.apps:
            app.close()
        # Celery's result consumer can drop a pub/sub connection without closing it
        # (seen: one allocated in celery/backends/redis.py's subscribe); collect it
        # here, quietly, rather than in whichever later test the collector runs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


@pytest.fixture
def make_celery(redis_url: str) -> Iterator[CeleryApps]:
    apps = CeleryApps(redis_url)
    yield apps
    apps.close()


@pytest.fixture
def capp(make_celery: CeleryApps, keyprefix: str) -> celery.Celery:
    """A Celery app on the same keys as ``backend`` (same global_keyprefix)."""
    return make_celery(keyprefix)


# --- what we write, byte for byte --------------------------------------------------------


class TestBytes:
    """Our bytes equal the documented encoding and Celery's own bytes for the same task.

    Celery writes each task under ``<keyprefix>celery:`` with a worker-like request
    (``Context``), as a worker does; resultstore writes under ``<keyprefix>``.
    """

    @pytest.fixture
    def celery_plain(self, make_celery: CeleryApps, keyprefix: str) -> celery.Celery:
        return make_celery(f"{keyprefix}celery:", extended=False)

    @pytest.fixture
    def celery_extended(self, make_celery: CeleryApps, keyprefix: str) -> celery.Celery:
        return make_celery(f"{keyprefix}celery:", extended=True)

    @staticmethod
    def ours(raw: redis.Redis, keyprefix: str, task_id: str) -> bytes:
        key = f"{keyprefix}celery-task-meta-{task_id}"
        data = raw.get(key)
        assert isinstance(data, bytes), f"nothing stored under {key}"
        return data

    @staticmethod
    def theirs(raw: redis.Redis, keyprefix: str, task_id: str) -> bytes:
        data = raw.get(f"{keyprefix}celery:celery-task-meta-{task_id}")
        assert isinstance(data, bytes)
        return data

    def test_success(
        self, backend: Backend, celery_plain: celery.Celery, raw: redis.Redis, keyprefix: str
    ) -> None:
        value = {"numbers": [1, 2.5, None], "text": "é ü 漢", "nested": {"ok": True}}
        before = now()
        assert backend.mark_as_done("t-success", value, request=TaskInfo())
        celery_plain.backend.store_result(
            "t-success", value, "SUCCESS", request=Context(id="t-success")
        )
        after = now()
        ours = self.ours(raw, keyprefix, "t-success")
        expected = {
            "status": "SUCCESS",
            "result": value,
            "traceback": None,
            "children": [],
            "date_done": date_done(ours, before, after),
            "task_id": "t-success",
        }
        assert ours == celery_bytes(expected)
        theirs = self.theirs(raw, keyprefix, "t-success")
        date_done(theirs, before, after)
        assert without_date(ours) == without_date(theirs)

    def test_failure_with_traceback(
        self, backend: Backend, celery_plain: celery.Celery, raw: redis.Redis, keyprefix: str
    ) -> None:
        exc = fail_with(ValueError("boom", 3, ["x"]))
        text = traceback_text(exc)
        before = now()
        assert backend.mark_as_failure("t-fail", exc, traceback=text, request=TaskInfo())
        celery_plain.backend.mark_as_failure(
            "t-fail", exc, traceback=text, request=Context(id="t-fail")
        )
        after = now()
        ours = self.ours(raw, keyprefix, "t-fail")
        expected = {
            "status": "FAILURE",
            "result": {
                "exc_type": "ValueError",
                "exc_message": ["boom", 3, ["x"]],
                "exc_module": "builtins",
            },
            "traceback": text,
            "children": [],
            "date_done": date_done(ours, before, after),
            "task_id": "t-fail",
        }
        assert ours == celery_bytes(expected)
        assert without_date(ours) == without_date(self.theirs(raw, keyprefix, "t-fail"))

    def test_failure_traceback_taken_from_the_exception(
        self, backend: Backend, raw: redis.Redis, keyprefix: str
    ) -> None:
        exc = fail_with(KeyError("missing"))
        assert backend.mark_as_failure("t-tb", exc)
        stored = json.loads(self.ours(raw, keyprefix, "t-tb"))
        assert stored["traceback"] == traceback_text(exc)
        assert stored["traceback"].startswith("Traceback (most recent call last):\n")
        assert stored["result"] == {
            "exc_type": "KeyError",
            "exc_message": ["missing"],
            "exc_module": "builtins",
        }

    def test_custom_state_with_progress_meta(
        self, backend: Backend, celery_plain: celery.Celery, raw: redis.Redis, keyprefix: str
    ) -> None:
        progress = {"current": 3, "total": 10}
        assert backend.store_result("t-progress", progress, "PROGRESS", request=TaskInfo())
        celery_plain.backend.store_result(
            "t-progress", progress, "PROGRESS", request=Context(id="t-progress")
        )
        ours = self.ours(raw, keyprefix, "t-progress")
        expected = {
            "status": "PROGRESS",
            "result": progress,
            "traceback": None,
            "children": [],
            "date_done": None,
            "task_id": "t-progress",
        }
        assert ours == celery_bytes(expected)
        assert ours == self.theirs(raw, keyprefix, "t-progress")

    def test_started(
        self, backend: Backend, celery_plain: celery.Celery, raw: redis.Redis, keyprefix: str
    ) -> None:
        meta = {"pid": 4242, "hostname": "worker1@host"}
        assert backend.mark_as_started("t-started", meta, request=TaskInfo())
        celery_plain.backend.store_result(
            "t-started", meta, "STARTED", request=Context(id="t-started")
        )
        ours = self.ours(raw, keyprefix, "t-started")
        assert ours == (
            b'{"status": "STARTED", "result": {"pid": 4242, "hostname": "worker1@host"}, '
            b'"traceback": null, "children": [], "date_done": null, "task_id": "t-started"}'
        )
        assert ours == self.theirs(raw, keyprefix, "t-started")

    def test_retry(
        self, backend: Backend, celery_plain: celery.Celery, raw: redis.Redis, keyprefix: str
    ) -> None:
        exc = fail_with(ConnectionError("try again"))
        text = traceback_text(exc)
        assert backend.mark_as_retry("t-retry", exc, traceback=text, request=TaskInfo())
        celery_plain.backend.mark_as_retry(
            "t-retry", exc, traceback=text, request=Context(id="t-retry")
        )
        ours = self.ours(raw, keyprefix, "t-retry")
        assert ours == celery_bytes(
            {
                "status": "RETRY",
                "result": {
                    "exc_type": "ConnectionError",
                    "exc_message": ["try again"],
                    "exc_module": "builtins",
                },
                "traceback": text,
                "children": [],
                "date_done": None,
                "task_id": "t-retry",
            }
        )
        assert ours == self.theirs(raw, keyprefix, "t-retry")

    def test_revoked(
        self, backend: Backend, celery_plain: celery.Celery, raw: redis.Redis, keyprefix: str
    ) -> None:
        before = now()
        assert backend.mark_as_revoked("t-revoked", "terminated", request=TaskInfo())
        celery_plain.backend.mark_as_revoked(
            "t-revoked", "terminated", request=Context(id="t-revoked")
        )
        after = now()
        ours = self.ours(raw, keyprefix, "t-revoked")
        expected = {
            "status": "REVOKED",
            "result": {
                "exc_type": "TaskRevokedError",
                "exc_message": ["terminated"],
                "exc_module": "celery.exceptions",
            },
            "traceback": None,
            "children": [],
            "date_done": date_done(ours, before, after),
            "task_id": "t-revoked",
        }
        assert ours == celery_bytes(expected)
        assert without_date(ours) == without_date(self.theirs(raw, keyprefix, "t-revoked"))

    def test_revoke_writes_celerys_revoked_record(
        self, backend: Backend, raw: redis.Redis, keyprefix: str
    ) -> None:
        assert backend.revoke("t-revoke")
        stored = json.loads(self.ours(raw, keyprefix, "t-revoke"))
        assert list(stored) == [
            "status",
            "result",
            "traceback",
            "children",
            "date_done",
            "task_id",
        ]
        assert stored["status"] == "REVOKED"
        assert stored["result"] == {
            "exc_type": "TaskRevokedError",
            "exc_message": ["revoked"],
            "exc_module": "celery.exceptions",
        }

    def test_extended_metadata(
        self,
        extended_backend: Backend,
        celery_extended: celery.Celery,
        raw: redis.Redis,
        keyprefix: str,
    ) -> None:
        info = TaskInfo(
            name="proj.tasks.add",
            args=[2, "two"],
            kwargs={"z": None, "a": [1]},
            worker="celery@worker1",
            retries=2,
            queue="priority",
            group_id="g-1",
            parent_id="p-1",
        )
        request = Context(
            id="t-ext",
            task="proj.tasks.add",
            args=[2, "two"],
            kwargs={"z": None, "a": [1]},
            hostname="celery@worker1",
            retries=2,
            delivery_info={"routing_key": "priority"},
            group="g-1",
            parent_id="p-1",
        )
        before = now()
        assert extended_backend.mark_as_done("t-ext", 4, request=info)
        celery_extended.backend.store_result("t-ext", 4, "SUCCESS", request=request)
        after = now()
        ours = self.ours(raw, keyprefix, "t-ext")
        expected = {
            "status": "SUCCESS",
            "result": 4,
            "traceback": None,
            "children": [],
            "date_done": date_done(ours, before, after),
            "group_id": "g-1",
            "parent_id": "p-1",
            "name": "proj.tasks.add",
            "args": [2, "two"],
            "kwargs": {"z": None, "a": [1]},
            "worker": "celery@worker1",
            "retries": 2,
            "queue": "priority",
            "task_id": "t-ext",
        }
        assert ours == celery_bytes(expected)
        assert without_date(ours) == without_date(self.theirs(raw, keyprefix, "t-ext"))

    def test_group_and_parent_without_extended(
        self, backend: Backend, celery_plain: celery.Celery, raw: redis.Redis, keyprefix: str
    ) -> None:
        info = TaskInfo(name="ignored", worker="ignored", group_id="g-2", parent_id="p-2")
        assert backend.store_result("t-member", None, "STARTED", request=info)
        request = Context(id="t-member", task="ignored", group="g-2", parent_id="p-2")
        celery_plain.backend.store_result("t-member", None, "STARTED", request=request)
        ours = self.ours(raw, keyprefix, "t-member")
        assert ours == (
            b'{"status": "STARTED", "result": null, "traceback": null, "children": [], '
            b'"date_done": null, "group_id": "g-2", "parent_id": "p-2", "task_id": "t-member"}'
        )
        assert ours == self.theirs(raw, keyprefix, "t-member")

    def test_saved_group(
        self, backend: Backend, celery_plain: celery.Celery, raw: redis.Redis, keyprefix: str
    ) -> None:
        members = ["m-1", "m-2", "m-3"]
        GroupResult("g-saved", [AsyncResult(m, backend) for m in members], backend).save()
        celery_plain.GroupResult("g-saved", [celery_plain.AsyncResult(m) for m in members]).save()
        ours = raw.get(f"{keyprefix}celery-taskset-meta-g-saved")
        assert ours == (
            b'{"result": [["g-saved", null], '
            b'[[["m-1", null], null], [["m-2", null], null], [["m-3", null], null]]]}'
        )
        assert ours == raw.get(f"{keyprefix}celery:celery-taskset-meta-g-saved")

    def test_keys_and_expiry(self, backend: Backend, raw: redis.Redis, keyprefix: str) -> None:
        backend.mark_as_done("t-key", 1)
        backend.mark_as_done("t-forever", 1, expires=None)
        GroupResult("g-key", [AsyncResult("t-key", backend)], backend).save()
        assert sorted(raw.scan_iter(match=f"{keyprefix}*")) == [
            f"{keyprefix}celery-task-meta-t-forever".encode(),
            f"{keyprefix}celery-task-meta-t-key".encode(),
            f"{keyprefix}celery-taskset-meta-g-key".encode(),
        ]
        # result_expires: one day by default, as Celery's SETEX.
        assert 86_390 < raw.ttl(f"{keyprefix}celery-task-meta-t-key") <= 86_400
        assert 86_390 < raw.ttl(f"{keyprefix}celery-taskset-meta-g-key") <= 86_400
        assert raw.ttl(f"{keyprefix}celery-task-meta-t-forever") == -1


class TestPublish:
    """Each store PUBLISHes the stored bytes on the channel named after the key."""

    @pytest.fixture
    def pubsub(self, raw: redis.Redis) -> Iterator[Any]:
        pubsub = raw.pubsub()
        yield pubsub
        pubsub.close()

    @staticmethod
    def subscribe(pubsub: Any, channel: str) -> None:
        pubsub.subscribe(channel)
        deadline = time.monotonic() + DEADLINE
        while (remaining := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "subscribe":
                return
        pytest.fail(f"SUBSCRIBE {channel} not confirmed within {DEADLINE}s")

    @pytest.mark.parametrize(
        ("store", "status"),
        [
            (lambda b, t: b.mark_as_done(t, {"v": [1, "é"]}), "SUCCESS"),
            (lambda b, t: b.mark_as_failure(t, fail_with(ValueError("x"))), "FAILURE"),
            (lambda b, t: b.mark_as_started(t, {"pid": 1}), "STARTED"),
            (lambda b, t: b.store_result(t, {"current": 1}, "PROGRESS"), "PROGRESS"),
            (lambda b, t: b.revoke(t), "REVOKED"),
        ],
        ids=["success", "failure", "started", "custom", "revoked"],
    )
    def test_store_publishes_the_stored_bytes(
        self,
        backend: Backend,
        raw: redis.Redis,
        pubsub: Any,
        keyprefix: str,
        store: Callable[[Backend, str], object],
        status: str,
    ) -> None:
        key = f"{keyprefix}celery-task-meta-t-pub"
        self.subscribe(pubsub, key)
        store(backend, "t-pub")
        message = next_message(pubsub)
        assert message["channel"] == key.encode()
        assert message["data"] == raw.get(key)
        assert json.loads(message["data"])["status"] == status

    def test_extended_store_publishes_the_same_bytes(
        self, extended_backend: Backend, raw: redis.Redis, pubsub: Any, keyprefix: str
    ) -> None:
        key = f"{keyprefix}celery-task-meta-t-pub-ext"
        self.subscribe(pubsub, key)
        extended_backend.mark_as_done("t-pub-ext", 1, request=TaskInfo(name="n", queue="q"))
        message = next_message(pubsub)
        assert message["channel"] == key.encode()
        assert message["data"] == raw.get(key)
        assert json.loads(message["data"])["queue"] == "q"

    def test_a_kept_ready_state_is_not_published(
        self, backend: Backend, raw: redis.Redis, pubsub: Any, keyprefix: str
    ) -> None:
        key = f"{keyprefix}celery-task-meta-t-late"
        backend.mark_as_done("t-late", "first")
        self.subscribe(pubsub, key)
        assert not backend.mark_as_started("t-late")  # a late worker: refused, not announced
        assert backend.store_result("t-late", "second", "SUCCESS", overwrite=True)
        message = next_message(pubsub)  # the first message is the overwrite
        assert json.loads(message["data"])["result"] == "second"
        assert message["data"] == raw.get(key)


# --- Celery writes, resultstore reads ------------------------------------------------------


class TestCeleryWritesWeRead:
    def test_success(self, capp: celery.Celery, backend: Backend) -> None:
        value = {"rows": [[1, "a"], [2, "b"]], "text": "é"}
        before = now()
        capp.backend.store_result("c-ok", value, "SUCCESS")
        after = now()
        result = AsyncResult("c-ok", backend)
        assert result.state == "SUCCESS"
        assert result.result == value
        assert result.get(timeout=DEADLINE) == value
        assert result.traceback is None
        assert result.children == []  # Celery wrote "children": null (no request)
        assert result.date_done is not None
        assert before <= result.date_done <= after
        assert result.date_done.tzinfo is not None

    def test_failure(self, capp: celery.Celery, backend: Backend) -> None:
        exc = fail_with(ValueError("boom", 3))
        text = traceback_text(exc)
        capp.backend.mark_as_failure("c-fail", exc, traceback=text)
        result = AsyncResult("c-fail", backend)
        assert result.state == "FAILURE"
        assert result.traceback == text
        error = result.result
        assert type(error) is ValueError
        assert error.args == ("boom", 3)
        with pytest.raises(ValueError, match="boom") as raised:
            result.get(timeout=DEADLINE)
        assert raised.value.args == ("boom", 3)

    def test_started(self, capp: celery.Celery, backend: Backend) -> None:
        capp.backend.mark_as_started("c-started", pid=4242, hostname="w1")
        result = AsyncResult("c-started", backend)
        assert result.state == "STARTED"
        assert result.result == {"pid": 4242, "hostname": "w1"}
        assert not result.ready()

    def test_custom_state(self, capp: celery.Celery, backend: Backend) -> None:
        capp.backend.store_result("c-progress", {"current": 7, "total": 9}, "PROGRESS")
        result = AsyncResult("c-progress", backend)
        assert result.state == "PROGRESS"
        assert result.result == {"current": 7, "total": 9}
        assert result.date_done is None

    def test_extended(self, capp: celery.Celery, backend: Backend) -> None:
        request = Context(
            id="c-ext",
            task="proj.mul",
            args=[3, 4],
            kwargs={"k": "v"},
            hostname="celery@w2",
            retries=1,
            delivery_info={"routing_key": "math"},
            group="g-c",
            parent_id="p-c",
        )
        capp.backend.store_result("c-ext", 12, "SUCCESS", request=request)
        result = AsyncResult("c-ext", backend)
        assert result.get(timeout=DEADLINE) == 12
        assert (result.name, result.args, result.kwargs) == ("proj.mul", [3, 4], {"k": "v"})
        assert (result.worker, result.retries, result.queue) == ("celery@w2", 1, "math")
        meta = backend.get_task_meta("c-ext")
        assert (meta.group_id, meta.parent_id) == ("g-c", "p-c")

    def test_revoked(self, capp: celery.Celery, backend: Backend) -> None:
        capp.backend.mark_as_revoked("c-revoked", "terminated")
        result = AsyncResult("c-revoked", backend)
        assert result.state == "REVOKED"
        assert type(result.result) is resultstore.TaskRevokedError
        with pytest.raises(resultstore.TaskRevokedError, match="terminated"):
            result.get(timeout=DEADLINE)

    def test_group(self, capp: celery.Celery, backend: Backend) -> None:
        members = ["c-m1", "c-m2"]
        capp.GroupResult("c-group", [capp.AsyncResult(m) for m in members]).save()
        capp.backend.store_result("c-m1", 1, "SUCCESS")
        capp.backend.store_result("c-m2", 2, "SUCCESS")
        group = backend.restore_group("c-group")
        assert group is not None
        assert group.id == "c-group"
        assert [r.id for r in group] == members
        assert group.join(timeout=DEADLINE) == [1, 2]

    def test_prefix_without_separator(
        self, make_celery: CeleryApps, redis_url: str, keyprefix: str, raw: redis.Redis
    ) -> None:
        # Celery adds '_' to a global_keyprefix that does not end in ':_-.'; so do we.
        app = make_celery(f"{keyprefix}app")
        app.backend.store_result("c-pfx", "v", "SUCCESS")
        assert raw.exists(f"{keyprefix}app_celery-task-meta-c-pfx")
        with Backend(redis_url, options=transport(f"{keyprefix}app")) as ours:
            assert AsyncResult("c-pfx", ours).get(timeout=DEADLINE) == "v"


# --- resultstore writes, Celery reads -------------------------------------------------------


class TestWeWriteCeleryReads:
    def test_success(self, capp: celery.Celery, backend: Backend) -> None:
        value = {"rows": [[1, "a"]], "text": "é"}
        backend.mark_as_done("r-ok", value)
        result = capp.AsyncResult("r-ok")
        assert result.get(timeout=DEADLINE) == value
        assert result.state == "SUCCESS"
        assert result.result == value
        assert result.date_done is not None

    @pytest.mark.parametrize(
        "exc",
        [ValueError("bad", 1), KeyError("k"), ZeroDivisionError("division by zero")],
        ids=["ValueError", "KeyError", "ZeroDivisionError"],
    )
    def test_failure_reraised_as_the_builtin(
        self, capp: celery.Celery, backend: Backend, exc: Exception
    ) -> None:
        caught = fail_with(exc)
        backend.mark_as_failure("r-fail", caught)
        result = capp.AsyncResult("r-fail")
        with pytest.raises(type(exc)) as raised:
            result.get(timeout=DEADLINE)
        assert type(raised.value) is type(exc)
        assert raised.value.args == exc.args
        assert result.state == "FAILURE"
        assert type(result.result) is type(exc)
        assert result.traceback == traceback_text(caught)

    def test_revoked(self, capp: celery.Celery, backend: Backend) -> None:
        assert backend.revoke("r-revoked", "no longer wanted")
        result = capp.AsyncResult("r-revoked")
        assert result.state == "REVOKED"
        assert type(result.result) is celery.exceptions.TaskRevokedError
        with pytest.raises(celery.exceptions.TaskRevokedError, match="no longer wanted"):
            result.get(timeout=DEADLINE)

    def test_started_and_custom_state(self, capp: celery.Celery, backend: Backend) -> None:
        backend.mark_as_started("r-started", {"pid": 7})
        backend.store_result("r-progress", {"current": 2, "total": 5}, "PROGRESS")
        started = capp.AsyncResult("r-started")
        assert (started.state, started.result) == ("STARTED", {"pid": 7})
        progress = capp.AsyncResult("r-progress")
        assert progress.state == "PROGRESS"
        assert progress.info == {"current": 2, "total": 5}
        assert not progress.ready()

    def test_extended(self, capp: celery.Celery, extended_backend: Backend) -> None:
        info = TaskInfo(
            name="proj.add",
            args=[1, 2],
            kwargs={"x": 1},
            worker="w@h",
            retries=3,
            queue="q",
            group_id="g-r",
            parent_id="p-r",
        )
        extended_backend.mark_as_done("r-ext", 3, request=info)
        result = capp.AsyncResult("r-ext")
        assert result.get(timeout=DEADLINE) == 3
        assert (result.name, result.args, result.kwargs) == ("proj.add", [1, 2], {"x": 1})
        assert (result.worker, result.retries, result.queue) == ("w@h", 3, "q")

    def test_group(self, capp: celery.Celery, backend: Backend) -> None:
        members = ["r-m1", "r-m2", "r-m3"]
        GroupResult("r-group", [AsyncResult(m, backend) for m in members], backend).save()
        for n, member in enumerate(members):
            backend.mark_as_done(member, n * 10)
        group = capp.GroupResult.restore("r-group")
        assert group is not None
        assert group.id == "r-group"
        assert [r.id for r in group.results] == members
        assert group.get(timeout=DEADLINE) == [0, 10, 20]


class TestCeleryWaiterWokenByUs:
    """A Celery client blocked in get() (Redis pub/sub) is woken by a resultstore store."""

    @pytest.mark.parametrize("outcome", ["success", "failure", "revoked"])
    def test_blocked_celery_get_wakes(
        self,
        make_celery: CeleryApps,
        capp: celery.Celery,
        backend: Backend,
        raw: redis.Redis,
        keyprefix: str,
        outcome: str,
    ) -> None:
        task_id = f"wake-{outcome}"
        key = f"{keyprefix}celery-task-meta-{task_id}"
        got: dict[str, Any] = {}

        def celery_get() -> None:
            make_celery.backend_of(capp)  # this thread's backend, closed at teardown
            started = time.monotonic()
            try:
                got["value"] = capp.AsyncResult(task_id).get(timeout=10)
            except BaseException as exc:
                got["error"] = exc
            got["elapsed"] = time.monotonic() - started

        thread = threading.Thread(target=celery_get, daemon=True)
        thread.start()
        try:
            wait_until(lambda: numsub(raw, key) > 0, "Celery's SUBSCRIBE")
            stored_at = time.monotonic()
            if outcome == "success":
                backend.mark_as_done(task_id, {"answer": 42})
            elif outcome == "failure":
                backend.mark_as_failure(task_id, fail_with(ValueError("late")))
            else:
                backend.revoke(task_id, "stop")
            thread.join(DEADLINE)
            woke_after = time.monotonic() - stored_at
        finally:
            thread.join(15)
        assert not thread.is_alive(), "Celery's get() was not woken"
        assert got["elapsed"] < 10  # woken, not timed out
        assert woke_after < DEADLINE
        if outcome == "success":
            assert got == {"value": {"answer": 42}, "elapsed": got["elapsed"]}
        elif outcome == "failure":
            assert type(got["error"]) is ValueError
            assert got["error"].args == ("late",)
        else:
            assert type(got["error"]) is celery.exceptions.TaskRevokedError
