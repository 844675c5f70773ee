"""dramatiq-resultstore with a real dramatiq worker (dramatiq's RedisBroker on the machine's
Redis) in a subprocess, over Redis, PostgreSQL, SQLite and the example file:// plugin:
results, failures, timeouts, TTLs, a group whose completion callback runs exactly once,
and reads from other processes."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Message, group
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import ResultFailure, ResultMissing, ResultTimeout

from dramatiq_resultstore import ResultStoreBackend

from ..hostenv import REDIS_URL
from ..hosts import START_DEADLINE, Store, WorkerProcess, celery_reader, python
from .app import make_broker

pytestmark = pytest.mark.timeout(120)
DEADLINE_MS = 30_000  # a wait that must succeed; never reached when green


class App:
    """The test process's side: the broker (to send) and the worker process."""

    def __init__(self, store: Store, tmp: Path) -> None:
        self.store = store
        self.namespace = f"test-hosts-dramatiq-{uuid.uuid4().hex[:12]}"
        self.broker: RedisBroker = make_broker(self.namespace, store.url, store.options)
        # As an app does: messages and groups find their results through the global broker.
        dramatiq.set_broker(self.broker)
        argv = [sys.executable, "-m", "dramatiq", "tests.dramatiq.app:broker"]
        argv += ["--processes", "1", "--threads", "4"]
        env = {**store.env, "DQ_NAMESPACE": self.namespace}
        self.worker = WorkerProcess(argv, env, tmp / "worker.log")
        try:
            self._wait_until_serving()
        except BaseException:
            self.close()
            raise

    @property
    def results(self) -> ResultStoreBackend:
        backend = self.broker.get_results_backend()
        assert isinstance(backend, ResultStoreBackend)
        return backend

    def send(self, name: str, *args: Any) -> Message[Any]:
        return self.broker.get_actor(name).send(*args)

    def _wait_until_serving(self) -> None:
        """Ready when a message sent to the queue comes back (the worker reads the queue)."""
        message = self.send("add", 20, 22)
        deadline = time.monotonic() + START_DEADLINE
        while True:
            self.worker.check_alive()
            try:
                assert message.get_result(block=True, timeout=1_000) == 42
                return
            except ResultTimeout:
                if time.monotonic() > deadline:
                    output = self.worker.output()
                    pytest.fail(f"the worker served nothing in {START_DEADLINE} s:\n{output}")

    def close(self) -> None:
        self.worker.stop()
        self.results.close()
        self.broker.close()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{self.namespace}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module")
def app(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    app = App(store, tmp_path_factory.mktemp("dramatiq"))
    yield app
    app.close()


def test_a_result_comes_back_by_push(app: App) -> None:
    message = app.send("add", 2, 3)
    assert message.get_result(block=True, timeout=DEADLINE_MS) == 5
    assert message.get_result() == 5  # stored: a read without blocking finds it
    meta = app.results.backend.get_task_meta(message.message_id)
    assert (meta.status, meta.result, meta.traceback) == ("SUCCESS", 5, None)


def test_a_failure_raises_result_failure_with_the_original_type_and_message(app: App) -> None:
    message = app.send("fail", "no way")
    with pytest.raises(ResultFailure, match=r"^actor raised Refused: no way$") as raised:
        message.get_result(block=True, timeout=DEADLINE_MS)
    assert (raised.value.orig_exc_type, raised.value.orig_exc_msg) == ("Refused", "no way")
    meta = app.results.backend.get_task_meta(message.message_id)
    assert meta.status == "FAILURE"
    assert meta.result == {
        "exc_type": "Refused",
        "exc_message": ["no way"],
        "exc_module": "tests.dramatiq.app",
    }
    assert meta.traceback is not None
    assert meta.traceback.rstrip().endswith("tests.dramatiq.app.Refused: no way")


def test_missing_and_timed_out_results(app: App) -> None:
    never = app.broker.get_actor("add").message(1, 1)  # built, never sent
    with pytest.raises(ResultMissing):
        never.get_result()
    started = time.monotonic()
    with pytest.raises(ResultTimeout):
        never.get_result(block=True, timeout=300)
    took = time.monotonic() - started
    assert 0.3 <= took < 0.3 + 0.5  # milliseconds, exact: no rounding to whole seconds
    assert app.results.backend.waiting_ids() == frozenset()


def test_result_ttl_is_milliseconds(app: App) -> None:
    message = app.send("kept")
    assert message.get_result(block=True, timeout=DEADLINE_MS) == "kept a minute"
    if app.store.name != "redis":
        pytest.skip("only Redis shows a record's TTL (SQL and file:// expire by cleanup)")
    prefix = app.store.options["result_backend_transport_options"]["global_keyprefix"]
    client = redis.Redis.from_url(REDIS_URL)
    ttl = client.pttl(f"{prefix}celery-task-meta-{message.message_id}")
    client.close()
    assert 50_000 < ttl <= 60_000


def test_a_groups_completion_callback_runs_exactly_once(app: App) -> None:
    counter = f"callback-ran-{uuid.uuid4()}"
    callback = app.broker.get_actor("completed").message(counter)
    members = group([app.broker.get_actor("add").message(i, i) for i in range(8)])
    members.add_completion_callback(callback)
    members.run()
    assert list(members.get_results(block=True, timeout=DEADLINE_MS)) == [
        0, 2, 4, 6, 8, 10, 12, 14
    ]  # fmt: skip
    # The callback counted its run in the store and returned the count: 1. The member
    # that enqueued it made the last of the eight decrements, so no other can follow.
    assert callback.get_result(block=True, timeout=DEADLINE_MS) == 1
    assert app.results.backend.incr(counter, 0) == 1


READER = """
import json, os
from dramatiq import Message
from dramatiq.results import ResultFailure
from resultstore import AsyncResult, Backend
from dramatiq_resultstore import ResultStoreBackend
from tests.hostenv import store_from_env

url, options = store_from_env()
ok, failed = json.loads(os.environ["RS_IDS"])
results = ResultStoreBackend(url, options=options)
message = lambda i, name: Message("default", name, (), {}, {}, message_id=i)
out = {"value": results.get_result(message(ok, "add"), block=True, timeout=30_000)}
try:
    results.get_result(message(failed, "fail"))
except ResultFailure as exc:
    out["failure"] = [str(exc), exc.orig_exc_type, exc.orig_exc_msg]
with Backend(url, options=options) as backend:
    out["plain"] = AsyncResult(ok, backend).get(timeout=30)
    error = AsyncResult(failed, backend).get(timeout=30, propagate=False)
    out["plain_error"] = [error.exc_type, list(error.args)]
results.close()
print(json.dumps(out))
"""


def test_results_read_from_another_process(app: App) -> None:
    ok, failed = app.send("add", 40, 2), app.send("fail", "nope")
    assert ok.get_result(block=True, timeout=DEADLINE_MS) == 42
    with pytest.raises(ResultFailure):
        failed.get_result(block=True, timeout=DEADLINE_MS)
    ids = json.dumps([ok.message_id, failed.message_id])
    assert json.loads(python(READER, {**app.store.env, "RS_IDS": ids})) == {
        "value": 42,
        "failure": ["actor raised Refused: nope", "Refused", "nope"],
        "plain": 42,
        "plain_error": ["Refused", ["nope"]],
    }


def test_celery_reads_a_dramatiq_result(app: App) -> None:
    ok, failed = app.send("add", 5, 5), app.send("fail", "celery sees it")
    assert ok.get_result(block=True, timeout=DEADLINE_MS) == 10
    with pytest.raises(ResultFailure):
        failed.get_result(block=True, timeout=DEADLINE_MS)
    with celery_reader(app.store) as celery_app:
        assert celery_app.AsyncResult(ok.message_id).get(timeout=DEADLINE_MS / 1000) == 10
        result = celery_app.AsyncResult(failed.message_id)
        assert result.state == "FAILURE"
        # Celery does not import the app's class named in the record: its own stand-in.
        assert type(result.result).__name__ == "Refused"
        assert result.result.args == ("celery sees it",)
