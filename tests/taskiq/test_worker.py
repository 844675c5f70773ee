"""taskiq-resultstore with a real taskiq worker (taskiq-redis's ListQueueBroker on the
machine's Redis) in a subprocess, over Redis, PostgreSQL, SQLite and the example file://
plugin: results, failures, timeouts, progress, and reads from other processes."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from taskiq.exceptions import TaskiqResultTimeoutError
from taskiq.task import AsyncTaskiqTask

from resultstore import SUCCESS, Backend
from taskiq_resultstore import ResultStoreBackend, ResultStoreTask

from ..hosts import START_DEADLINE, Store, WorkerProcess, celery_reader, python
from .app import WHEN, Refused, make_broker

pytestmark = pytest.mark.timeout(120)
DEADLINE = 30.0  # a wait that must succeed; never reached when green


class App:
    """The test process's side: the broker (to send), its loop, and the worker process."""

    def __init__(self, store: Store, tmp: Path) -> None:
        self.store = store
        self.queue = f"test-hosts-taskiq-{uuid.uuid4().hex[:12]}"
        self.loop = asyncio.new_event_loop()
        self.broker = make_broker(self.queue, store.url, store.options)
        self.run(self.broker.startup())
        argv = [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "tests.taskiq.app:broker",
            "--workers",
            "1",
        ]
        self.worker = WorkerProcess(argv, {**store.env, "TQ_QUEUE": self.queue}, tmp / "worker.log")
        try:
            self._wait_until_serving()
        except BaseException:
            self.close()
            raise

    @property
    def results(self) -> ResultStoreBackend[Any]:
        backend = self.broker.result_backend
        assert isinstance(backend, ResultStoreBackend)
        return backend

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def send(self, name: str, *args: Any) -> AsyncTaskiqTask[Any]:
        task = self.broker.find_task(name)
        assert task is not None
        return self.run(task.kiq(*args))

    def _wait_until_serving(self) -> None:
        """Ready when a task sent to the queue comes back (the worker reads the queue)."""
        task = self.send("add", 20, 22)
        deadline = time.monotonic() + START_DEADLINE
        while True:
            self.worker.check_alive()
            try:
                assert self.run(task.wait_result(timeout=1.0)).return_value == 42
                return
            except TaskiqResultTimeoutError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"the worker served nothing in {START_DEADLINE} s:\n{self.worker.output()}"
                    )

    def close(self) -> None:
        self.worker.stop()
        self.run(self.broker.shutdown())
        self.loop.close()


@pytest.fixture(scope="module")
def app(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    app = App(store, tmp_path_factory.mktemp("taskiq"))
    yield app
    app.close()


def test_a_result_comes_back_by_push_with_everything_taskiq_stored(app: App) -> None:
    kicker = app.broker.find_task("add").kicker().with_labels(tenant="t-1")  # type: ignore[union-attr]
    task = app.run(kicker.kiq(2, 3))
    assert type(task) is ResultStoreTask
    result = app.run(task.wait_result(timeout=DEADLINE))
    assert (result.is_err, result.return_value, result.error, result.log) == (False, 5, None, None)
    assert result.labels == {"tenant": "t-1"}
    assert isinstance(result.execution_time, float)
    assert 0 <= result.execution_time < DEADLINE
    assert app.run(task.is_ready()) is True
    # The record is resultstore's, in Celery's format, the taskiq fields beside it.
    meta = app.results.backend.get_task_meta(task.task_id)
    assert (meta.status, meta.result, meta.traceback) == (SUCCESS, 5, None)
    assert meta.extra == {
        "taskiq": {
            "is_err": False,
            "log": None,
            "execution_time": result.execution_time,
            "labels": {"tenant": "t-1"},
            "error": None,
        }
    }


def test_the_task_return_type_is_applied_as_taskiq_does(app: App) -> None:
    task = app.send("when")
    result = app.run(task.wait_result(timeout=DEADLINE))
    assert result.return_value == WHEN  # stored as taskiq's JSON (a string), parsed back
    assert app.results.backend.get_result(task.task_id) == "2026-11-30T12:00:00.250000Z"


def test_a_failure_keeps_its_type_message_and_traceback(app: App) -> None:
    task = app.send("fail", "no way")
    result = app.run(task.wait_result(timeout=DEADLINE))
    assert result.is_err is True
    assert result.return_value is None
    # taskiq's own rebuild: the app's class, known in this process.
    assert type(result.error) is Refused
    assert result.error.args == ("no way", 2)
    with pytest.raises(Refused, match=r"^\('no way', 2\)$"):
        result.raise_for_error()
    meta = app.results.backend.get_task_meta(task.task_id)
    assert meta.status == "FAILURE"
    assert meta.result == {
        "exc_type": "Refused",
        "exc_message": ["no way", 2],
        "exc_module": "tests.taskiq.app",
    }
    assert meta.traceback is not None
    assert meta.traceback.rstrip().endswith("tests.taskiq.app.Refused: ('no way', 2)")


def test_a_wait_times_out_at_its_timeout_and_leaves_nothing_behind(app: App) -> None:
    task = ResultStoreTask(f"never-{uuid.uuid4()}", app.results)
    started = time.monotonic()
    with pytest.raises(TaskiqResultTimeoutError) as raised:
        app.run(task.wait_result(timeout=0.3))
    took = time.monotonic() - started
    assert raised.value.timeout == 0.3
    assert 0.3 <= took < 0.3 + 0.5
    assert app.results.backend.waiting_ids() == frozenset()
    # A result that is not there: taskiq's ResultGetError around the backend's error.
    assert app.run(task.is_ready()) is False


def test_progress_and_the_result_never_overwrite_each_other(app: App) -> None:
    gate = f"gate-{uuid.uuid4()}"
    task = app.send("stepper", gate)
    progress_id = task.task_id + "__progress"
    seen = threading.Event()
    with app.results.backend.watch(lambda task_id, meta: seen.set()) as watch:
        watch.add([progress_id])
        if app.results.backend.get_task_meta(progress_id).status != "PROGRESS":
            assert seen.wait(DEADLINE), "no progress was reported"
    progress = app.run(task.get_progress())
    assert progress is not None
    assert (progress.state, progress.meta) == ("STEP", {"done": 1, "of": 2})
    assert app.run(task.is_ready()) is False
    app.results.backend.mark_as_done(gate, "open")
    result = app.run(task.wait_result(timeout=DEADLINE))
    assert (result.is_err, result.return_value) == (False, f"stepped {task.task_id}")
    # The last progress report is still there after the result, and the result intact.
    progress = app.run(task.get_progress())
    assert progress is not None
    assert (progress.state, progress.meta) == ("STEP", {"done": 1, "of": 2})
    assert app.results.backend.get_task_meta(task.task_id).result == f"stepped {task.task_id}"


READER = """
import asyncio, json, os
from resultstore import AsyncResult, Backend
from taskiq_resultstore import ResultStoreBackend
from tests.hostenv import store_from_env

url, options = store_from_env()
ids = json.loads(os.environ["RS_IDS"])
with Backend(url, options=options) as backend:
    plain = [AsyncResult(i, backend).get(timeout=30, propagate=False) for i in ids]
taskiq = ResultStoreBackend(url, options=options)
results = [asyncio.run(taskiq.get_result(i)) for i in ids]
asyncio.run(taskiq.shutdown())
print(json.dumps({
    "plain": [repr(v) for v in plain],
    "taskiq": [[r.is_err, r.return_value, repr(r.error), r.labels] for r in results],
}))
"""


def test_results_read_from_another_process(app: App) -> None:
    tasks = [app.send("add", 40, 2), app.send("fail_builtin", "nope")]
    for task in tasks:
        app.run(task.wait_result(timeout=DEADLINE))
    ids = json.dumps([task.task_id for task in tasks])
    out = json.loads(python(READER, {**app.store.env, "RS_IDS": ids}))
    assert out == {
        "plain": ["42", "ValueError('nope')"],
        "taskiq": [[False, 42, "None", {}], [True, None, "ValueError('nope')", {}]],
    }


def test_a_result_written_by_resultstore_reads_as_a_taskiq_result(app: App) -> None:
    task_id = f"plain-{uuid.uuid4()}"
    with Backend(app.store.url, options=app.store.options) as other:
        other.mark_as_failure(task_id, KeyError("k"))
    result = app.run(ResultStoreTask(task_id, app.results).wait_result(timeout=DEADLINE))
    assert (result.is_err, result.return_value, result.execution_time) == (True, None, 0.0)
    assert type(result.error) is KeyError
    assert result.error.args == ("k",)


def test_celery_reads_a_taskiq_result(app: App) -> None:
    ok, failed = app.send("add", 5, 5), app.send("fail_builtin", "celery sees it")
    for task in (ok, failed):
        app.run(task.wait_result(timeout=DEADLINE))
    with celery_reader(app.store) as celery_app:
        assert celery_app.AsyncResult(ok.task_id).get(timeout=DEADLINE) == 10
        result = celery_app.AsyncResult(failed.task_id)
        assert result.state == "FAILURE"
        assert type(result.result) is ValueError
        assert result.result.args == ("celery sees it",)
