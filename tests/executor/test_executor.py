"""The executor: .delay() on thread and process pools, talking to the client only through
the backend, and what a dead or interrupted worker leaves behind."""

from __future__ import annotations

import os
import pickle
import signal
import threading

import pytest

from resultstore import (
    FAILURE,
    REVOKED,
    SUCCESS,
    AsyncResult,
    Backend,
    Capability,
    Executor,
    GroupResult,
    RemoteTraceback,
    TaskMeta,
    TaskRevokedError,
    WorkerLostError,
)

from ..threads import DEADLINE, wait_until
from . import tasks
from .conftest import new_id


def test_delay_on_threads(any_backend: Backend) -> None:
    with Executor(any_backend, max_workers=2) as executor:
        add = executor.task(tasks.add)
        result = add.delay(2, b=3)
        assert isinstance(result, AsyncResult)
        assert result.backend is any_backend
        assert result.get(timeout=DEADLINE) == 5
        assert result.state == SUCCESS
        assert result.name == "tests.executor.tasks.add"
        assert (result.args, result.kwargs) == ([2], {"b": 3})
        assert result.worker == f"{os.getpid()}@{os.uname().nodename}"


def test_delay_on_processes(shared_backend: Backend) -> None:
    with Executor(shared_backend, pool="process", max_workers=2) as executor:
        pid = executor.task(tasks.pid)
        result = pid.delay()
        worker_pid = result.get(timeout=DEADLINE)
        assert worker_pid != os.getpid()
        assert result.worker == f"{worker_pid}@{os.uname().nodename}"
        assert executor.task(tasks.add).apply_async((1,), {"b": 2}).get(timeout=DEADLINE) == 3


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_failure_is_re_raised_with_the_remote_traceback(
    shared_backend: Backend, pool: str
) -> None:
    with Executor(shared_backend, pool=pool) as executor:  # type: ignore[arg-type]
        result = executor.task(tasks.divide).delay(1, 0)
        with pytest.raises(ZeroDivisionError) as info:
            result.get(timeout=DEADLINE)
    assert str(info.value) == "division by zero"
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in divide\n    return a / b" in cause.traceback
    assert result.state == FAILURE


def test_apply_async_takes_the_task_id(any_backend: Backend) -> None:
    task_id = new_id()
    with Executor(any_backend) as executor:
        result = executor.task(tasks.add).apply_async((4, 5), task_id=task_id)
        assert result.id == task_id
        assert AsyncResult(task_id, any_backend).get(timeout=DEADLINE) == 9


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_group_joins_in_order_and_is_saved(shared_backend: Backend, pool: str) -> None:
    with Executor(shared_backend, pool=pool, max_workers=2) as executor:  # type: ignore[arg-type]
        add = executor.task(tasks.add)
        group = executor.group([add.s(n, b=n) for n in range(6)])
        assert isinstance(group, GroupResult)
        assert group.join(timeout=DEADLINE) == [0, 2, 4, 6, 8, 10]
    assert Capability.GROUPS in shared_backend.capabilities
    restored = GroupResult.restore(group.id, shared_backend)
    assert restored == group
    assert {AsyncResult(r.id, shared_backend).get(timeout=1) for r in restored} == {
        0,
        2,
        4,
        6,
        8,
        10,
    }
    # Celery's SQL table has no group_id column; Redis keeps it in the record.
    expected = {group.id} if shared_backend.url.scheme == "redis" else {None}
    assert {shared_backend.get_task_meta(r.id).group_id for r in group} == expected


def test_progress_is_seen_by_the_client(any_backend: Backend) -> None:
    seen: list[TaskMeta] = []
    with Executor(any_backend) as executor:
        result = executor.task(tasks.progress).delay(3)
        assert result.get(timeout=DEADLINE, on_message=seen.append) == 3
    # Polling plugins may miss intermediate states; what was seen is in order.
    steps = [m.result["step"] for m in seen if m.status == "PROGRESS"]
    assert steps == sorted(steps)
    assert set(steps) <= {1, 2, 3}
    assert seen[-1].status == SUCCESS


def test_revoking_a_running_task_ends_it_as_revoked(any_backend: Backend) -> None:
    with Executor(any_backend) as executor:
        result = executor.task(tasks.until_revoked).delay(DEADLINE)
        wait_until(lambda: result.state == "STARTED", "the task started")
        assert result.revoke() is True
        with pytest.raises(TaskRevokedError) as info:
            result.get(timeout=DEADLINE)
    assert str(info.value) == "revoked"  # the client's reason: the task's own raise came later
    assert any_backend.get_state(result.id) == REVOKED


def test_a_task_revoked_before_it_runs_does_not_run(any_backend: Backend) -> None:
    task_id = new_id()
    AsyncResult(task_id, any_backend).revoke()
    calls = []
    with Executor(any_backend) as executor:
        result = executor.task(calls.append).apply_async((1,), task_id=task_id)
    assert calls == []
    assert result.state == REVOKED


def test_a_killed_worker_process_leaves_worker_lost_not_started(sqlite_url: str) -> None:
    with Backend(sqlite_url) as backend, Executor(backend, pool="process") as executor:
        result = executor.task(tasks.kill_self).delay(signal.SIGKILL)
        with pytest.raises(WorkerLostError) as info:
            result.get(timeout=DEADLINE)
        assert str(info.value) == (f"the worker process running task {result.id!r} exited abruptly")
        assert result.state == FAILURE
        # The broken pool is replaced: the next task runs.
        assert executor.task(tasks.add).delay(1, 1).get(timeout=DEADLINE) == 2


def test_tasks_queued_behind_a_killed_worker_run_on_a_fresh_pool(sqlite_url: str) -> None:
    with (
        Backend(sqlite_url) as backend,
        Executor(backend, pool="process", max_workers=1) as executor,
    ):
        killed = executor.task(tasks.kill_self).delay(signal.SIGKILL)
        queued = [executor.task(tasks.add).delay(i, 1) for i in range(3)]
        with pytest.raises(WorkerLostError):
            killed.get(timeout=DEADLINE)
        # They never started (no STARTED was stored), so they were sent again, not failed.
        assert [r.get(timeout=DEADLINE) for r in queued] == [1, 2, 3]


def test_sigterm_ends_the_run_as_worker_lost(sqlite_url: str) -> None:
    with Backend(sqlite_url) as backend, Executor(backend, pool="process") as executor:
        result = executor.task(tasks.kill_self).delay(signal.SIGTERM)
        with pytest.raises(WorkerLostError) as info:
            result.get(timeout=DEADLINE)
    assert str(info.value) == f"task {result.id!r} was interrupted by SystemExit"
    traceback = backend.get_traceback(result.id)
    assert traceback is not None
    assert traceback.rstrip().endswith("received SIGTERM")


def test_a_local_function_is_refused_for_processes(sqlite_url: str) -> None:
    with Backend(sqlite_url) as backend, Executor(backend, pool="process") as executor:
        task = executor.task(lambda: 1, name="inline")
        with pytest.raises(TypeError) as info:
            task.delay()
    assert str(info.value) == (
        "task 'inline' cannot be sent to a worker process (Can't pickle local object "
        "'test_a_local_function_is_refused_for_processes.<locals>.<lambda>'); define its "
        "function at module level, or use pool='thread'"
    )


def test_arguments_that_cannot_reach_a_process_are_a_stored_failure(sqlite_url: str) -> None:
    with Backend(sqlite_url) as backend, Executor(backend, pool="process") as executor:
        result = executor.task(tasks.add).delay(threading.Lock())  # type: ignore[arg-type]
        with pytest.raises(TypeError) as info:
            result.get(timeout=DEADLINE)
    assert str(info.value) == "cannot pickle '_thread.lock' object"
    assert result.state == FAILURE


def test_calling_a_task_runs_it_inline(backend: Backend) -> None:
    with Executor(backend) as executor:
        add = executor.task(tasks.add)
        assert add(1, b=2) == 3
        assert add.__wrapped__ is tasks.add
        assert (add.__name__, add.__module__) == ("add", "tests.executor.tasks")


@pytest.mark.parametrize(
    "url",
    ["memory://", "db+sqlite://", "db+sqlite:///:memory:", "db+sqlite+pysqlite:///:memory:"],
    ids=["memory", "sqlite", "sqlite-mem", "sqlite-driver-mem"],
)
def test_a_process_pool_refuses_a_process_local_backend(url: str) -> None:
    with Backend(url, expires=None) as backend, pytest.raises(ValueError, match="process") as info:
        Executor(backend, pool="process")
    assert str(info.value) == (
        f"{url!r} keeps results inside one process, so process workers could not share "
        "them; use pool='thread', or a backend that processes share (redis://, "
        "db+sqlite:///FILE, db+postgresql://...)"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"pool": "fork"}, ValueError, "pool must be 'thread' or 'process', got 'fork'"),
        ({"max_workers": 0}, ValueError, "max_workers must be a positive int or None, got 0"),
        ({"max_workers": True}, ValueError, "max_workers must be a positive int or None, got True"),
    ],
)
def test_bad_arguments_are_named(
    backend: Backend, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        Executor(backend, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_a_backend_is_required() -> None:
    with pytest.raises(TypeError) as info:
        Executor("memory://")  # type: ignore[arg-type]
    assert str(info.value) == "backend must be a resultstore.Backend, got str"


def test_a_shut_down_executor_refuses_tasks(backend: Backend) -> None:
    executor = Executor(backend)
    add = executor.task(tasks.add)
    executor.shutdown()
    with pytest.raises(RuntimeError) as info:
        add.delay(1)
    assert str(info.value) == f"{executor!r} is shut down"


def test_tasks_pickle_by_reference() -> None:
    executor = Executor(Backend("memory://"))
    unbound = pickle.loads(pickle.dumps(executor.task(tasks.add)))
    assert unbound.fn is tasks.add
    assert unbound.executor is None
    with pytest.raises(RuntimeError) as info:
        unbound.delay(1)
    assert str(info.value) == "task 'tests.executor.tasks.add' is not bound to an executor here"


def test_threads_finish_before_shutdown_returns(backend: Backend) -> None:
    release = threading.Event()
    with Executor(backend) as executor:
        result = executor.task(release.wait).delay(DEADLINE)
        release.set()
    assert result.state == SUCCESS
    assert result.get(timeout=1) is True


def test_a_worker_that_died_idle_is_replaced(sqlite_url: str) -> None:
    with Backend(sqlite_url) as backend, Executor(backend, pool="process") as executor:
        pid = executor.task(tasks.pid)
        first = pid.delay().get(timeout=DEADLINE)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not _alive(first), "the idle worker is dead")
        # The pool is broken now; the next task gets a fresh one.
        assert executor.task(tasks.add).delay(2, 2).get(timeout=DEADLINE) == 4


def test_sigterm_ends_the_worker_process_too(sqlite_url: str) -> None:
    with Backend(sqlite_url) as backend, Executor(backend, pool="process") as executor:
        pid = executor.task(tasks.pid)
        first = pid.delay().get(timeout=DEADLINE)
        result = executor.task(tasks.kill_self).delay(signal.SIGTERM)
        with pytest.raises(WorkerLostError):
            result.get(timeout=DEADLINE)
        wait_until(lambda: not _alive(first), "the worker that got SIGTERM exits")
        assert pid.delay().get(timeout=DEADLINE) != first


def test_tasks_cancelled_by_shutdown_read_revoked(backend: Backend) -> None:
    release = threading.Event()
    executor = Executor(backend, max_workers=1)
    blocker = executor.task(release.wait).delay(DEADLINE)
    queued = [executor.task(tasks.add).delay(i) for i in range(3)]
    wait_until(lambda: blocker.state == "STARTED", "the first task runs")
    executor.shutdown(wait=False)
    release.set()
    for result in queued:
        with pytest.raises(TaskRevokedError) as info:
            result.get(timeout=DEADLINE)
        assert str(info.value) == "the executor shut down before the task ran"
    assert blocker.get(timeout=DEADLINE) is True


def test_arguments_that_do_not_encode_are_stored_as_their_repr(store_url: str) -> None:
    with Backend(store_url, extended=True) as backend, Executor(backend) as executor:
        result = executor.task(tasks.add).delay({1, 2}, b={3})  # type: ignore[arg-type]
        with pytest.raises(TypeError):  # the task itself fails: a set + a set
            result.get(timeout=DEADLINE)
        assert (result.args, result.kwargs) == (["{1, 2}"], {"b": "{3}"})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A dead child not yet reaped by its parent still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:  # reaped between the two looks (/proc answers ESRCH or ENOENT)
        return False
