"""The provider API: ``backend.run(task_id)`` around one task run, on every path."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

import resultstore
from resultstore import (
    FAILURE,
    PENDING,
    REVOKED,
    STARTED,
    SUCCESS,
    AsyncResult,
    Backend,
    RemoteTraceback,
    ResultStoreError,
    TaskInfo,
    TaskRevokedError,
    WorkerLostError,
)

from ..threads import DEADLINE

WORKER = f"{os.getpid()}@{socket.gethostname()}"


@pytest.fixture
def extended(store_url: str) -> Backend:
    with Backend(store_url, extended=True) as b:
        yield b


def test_a_clean_run_stores_started_then_success(backend: Backend) -> None:
    seen = []
    backend.add_plugin(Recorder(seen))
    with backend.run("t1") as run:
        assert backend.get_task_meta("t1").status == STARTED
        assert backend.get_task_meta("t1").result == {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
        }
        run.result = {"answer": 42}
    assert seen == [STARTED, SUCCESS]
    assert run.state == SUCCESS
    assert AsyncResult("t1", backend).get(timeout=1) == {"answer": 42}


def test_track_started_false_stores_only_the_end(backend: Backend) -> None:
    seen = []
    backend.add_plugin(Recorder(seen))
    with backend.run("t1", track_started=False) as run:
        assert backend.get_state("t1") == PENDING
        run.result = 7
    assert seen == [SUCCESS]
    assert backend.get_result("t1") == 7


def test_call_stores_the_return_value_and_returns_it(backend: Backend) -> None:
    assert backend.run("t1").call(lambda a, b=0: a + b, 2, b=3) == 5
    assert backend.get_task_meta("t1").status == SUCCESS
    assert backend.get_result("t1") == 5


def test_as_a_decorator(backend: Backend) -> None:
    @backend.run("t1")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    assert backend.get_result("t1") == 3


def test_an_exception_is_stored_as_failure_with_its_traceback_and_re_raised(
    backend: Backend,
) -> None:
    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        backend.run("t1").call(fail)
    meta = backend.get_task_meta("t1")
    assert meta.status == FAILURE
    assert meta.result == {
        "exc_type": "KeyError",
        "exc_message": ["missing"],
        "exc_module": "builtins",
    }
    assert meta.traceback is not None
    assert 'raise KeyError("missing")' in meta.traceback
    assert meta.traceback.endswith("KeyError: 'missing'\n")
    with pytest.raises(KeyError) as info:
        AsyncResult("t1", backend).get(timeout=1)
    assert isinstance(info.value.__cause__, RemoteTraceback)


class Unserializable(Exception):
    pass


def test_an_exception_whose_arguments_cannot_be_serialized_is_still_stored(
    backend: Backend,
) -> None:
    lock = threading.Lock()
    with pytest.raises(Unserializable), backend.run("t1"):
        raise Unserializable("bad", lock)
    meta = backend.get_task_meta("t1")
    assert meta.status == FAILURE
    assert meta.result == {
        "exc_type": "Unserializable",
        "exc_message": ["bad", repr(lock)],
        "exc_module": __name__,
    }
    error = backend.get_result("t1")
    assert isinstance(error, resultstore.RemoteError)  # not in exception_allow
    assert error.args == ("bad", repr(lock))


def test_a_return_value_that_cannot_be_serialized_ends_as_failure(backend: Backend) -> None:
    with pytest.raises(resultstore.EncodeError) as info:
        backend.run("t1").call(object)
    meta = backend.get_task_meta("t1")
    assert meta.status == FAILURE
    assert meta.result["exc_type"] == "EncodeError"
    assert meta.result["exc_message"] == [str(info.value)]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_run_ends_as_worker_lost(
    backend: Backend, interrupt: type[BaseException]
) -> None:
    with pytest.raises(interrupt), backend.run("t1"):
        raise interrupt()
    meta = backend.get_task_meta("t1")
    assert meta.status == FAILURE
    assert meta.result == {
        "exc_type": "WorkerLostError",
        "exc_message": [f"task 't1' was interrupted by {interrupt.__name__}"],
        "exc_module": "billiard.exceptions",  # Celery's name: its clients rebuild it too
    }
    assert meta.traceback is not None
    assert meta.traceback.splitlines()[-1] == interrupt.__name__
    error = backend.get_result("t1")
    assert type(error) is WorkerLostError
    assert str(error) == f"task 't1' was interrupted by {interrupt.__name__}"


def test_progress_through_update_state_and_current_run(backend: Backend) -> None:
    states = []

    def work() -> str:
        run = resultstore.current_run()
        assert run is not None
        assert run.task_id == "t1"
        assert resultstore.current_task_id() == "t1"
        run.update_state("PROGRESS", {"done": 1, "of": 2})
        states.append(backend.get_task_meta("t1"))
        return "done"

    assert resultstore.current_run() is None
    backend.run("t1").call(work)
    assert resultstore.current_run() is None
    assert resultstore.current_task_id() is None
    assert states[0].status == "PROGRESS"
    assert states[0].result == {"done": 1, "of": 2}
    assert backend.get_result("t1") == "done"


def test_update_state_refuses_ready_states_and_bad_meta(backend: Backend) -> None:
    with backend.run("t1") as run:
        with pytest.raises(ValueError, match="would end the task") as info:
            run.update_state(SUCCESS, {})
        assert str(info.value) == (
            "update_state('SUCCESS') would end the task; return the value, raise, "
            "or raise TaskRevokedError instead"
        )
        with pytest.raises(TypeError) as type_info:
            run.update_state("PROGRESS", [1, 2])  # type: ignore[arg-type]
        assert str(type_info.value) == "meta must be a mapping, got list"
    assert backend.get_state("t1") == SUCCESS


def test_a_task_checks_revocation_and_ends_as_revoked(backend: Backend) -> None:
    with backend.run("t1") as run:
        assert run.is_revoked() is False
        run.raise_if_revoked()
        AsyncResult("t1", backend).revoke()
        assert run.is_revoked() is True
        with pytest.raises(TaskRevokedError) as info:
            run.raise_if_revoked()
        assert str(info.value) == "task 't1' was revoked"
    # Already REVOKED: the run's exit stores nothing over it, and raises nothing.
    assert backend.get_state("t1") == REVOKED


def test_raising_task_revoked_error_ends_the_run_as_revoked(backend: Backend) -> None:
    with pytest.raises(TaskRevokedError), backend.run("t1"):
        raise TaskRevokedError("stopped by the task")
    assert backend.get_state("t1") == REVOKED
    with pytest.raises(TaskRevokedError) as info:
        AsyncResult("t1", backend).get(timeout=1)
    assert str(info.value) == "stopped by the task"


def test_a_revoked_task_does_not_run(backend: Backend) -> None:
    backend.revoke("t1")
    ran = []
    for track_started in (True, False):
        with pytest.raises(TaskRevokedError) as info:
            backend.run("t1", track_started=track_started).call(ran.append, 1)
        assert str(info.value) == "task 't1' was revoked before it started"
    assert ran == []
    assert backend.get_state("t1") == REVOKED


def test_a_finished_task_is_not_run_again(backend: Backend) -> None:
    backend.mark_as_done("t1", 1)
    ran = []
    for track_started in (True, False):
        with pytest.raises(ResultStoreError) as info:
            backend.run("t1", track_started=track_started).call(ran.append, 1)
        assert str(info.value) == "task 't1' already finished (SUCCESS); a task id is run once"
    assert ran == []
    assert backend.get_result("t1") == 1


def test_get_inside_a_run_refuses_to_block_unless_allowed(backend: Backend) -> None:
    backend.mark_as_done("other", 5)
    other = AsyncResult("other", backend)
    with backend.run("t1") as run:
        with pytest.raises(RuntimeError) as info:
            other.get(timeout=1)
        assert "never wait for a result inside a task (task 't1' is running here)" in str(
            info.value
        )
        with resultstore.allow_join_result():
            run.result = other.get(timeout=1)
    assert backend.get_result("t1") == 5
    assert other.get(timeout=1) == 5  # outside the run again


def test_extended_metadata_is_stored(extended: Backend) -> None:
    info = TaskInfo(name="add", args=(1, 2), kwargs={"c": 3}, retries=0, queue="q1")
    with extended.run("t1", info) as run:
        run.result = 6
    result = AsyncResult("t1", extended)
    assert result.get(timeout=1) == 6
    assert (result.name, result.args, result.kwargs) == ("add", [1, 2], {"c": 3})
    assert (result.worker, result.retries, result.queue) == (WORKER, 0, "q1")


def test_a_given_worker_name_is_kept(extended: Backend) -> None:
    with extended.run("t1", TaskInfo(name="x", worker="w1@host")):
        pass
    assert AsyncResult("t1", extended).worker == "w1@host"


def test_a_run_is_entered_once(backend: Backend) -> None:
    run = backend.run("t1")
    with run:
        pass
    with pytest.raises(RuntimeError) as info, run:
        pass
    assert str(info.value) == "<TaskRun t1 state=SUCCESS> was entered already; a run is used once"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"task_id": ""}, ValueError, "task id must not be empty"),
        ({"task_id": 5}, TypeError, "task id must be a str, got int: 5"),
        ({"task_id": "t", "request": {}}, TypeError, "request must be a TaskInfo, got dict"),
        ({"task_id": "t", "track_started": 1}, TypeError, "track_started must be a bool, got 1"),
    ],
)
def test_bad_arguments_are_named(
    backend: Backend, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        backend.run(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_a_failing_store_surfaces(backend: Backend) -> None:
    """Data is never lost silently: a run whose end cannot be stored raises."""

    class Broken:
        @resultstore.hookimpl(wrapper=True)
        def store_result(self, meta: resultstore.TaskMeta, ttl: object, overwrite: bool):  # type: ignore[no-untyped-def]
            if meta.status == SUCCESS:
                raise resultstore.BackendUnavailable("the store went away")
            return (yield)

    backend.add_plugin(Broken())
    with pytest.raises(resultstore.BackendUnavailable) as info, backend.run("t1"):
        pass
    assert str(info.value) == "the store went away"
    assert backend.get_state("t1") == STARTED


class Recorder:
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    @resultstore.hookimpl
    def result_stored(self, meta: resultstore.TaskMeta, written: bool) -> None:
        if written:
            self.seen.append(meta.status)


# --- coroutines ---------------------------------------------------------------------------


def test_async_with_stores_started_progress_and_success(backend: Backend) -> None:
    seen: list[str] = []
    backend.add_plugin(Recorder(seen))

    async def work() -> int:
        run = resultstore.current_run()
        assert run is not None
        await run.aupdate_state("PROGRESS", {"done": 1})
        assert await run.ais_revoked() is False
        await run.araise_if_revoked()
        return 7

    async def main() -> int:
        return await backend.run("t1").acall(work)

    assert asyncio.run(main()) == 7
    assert seen == [STARTED, "PROGRESS", SUCCESS]
    assert backend.get_result("t1") == 7
    assert resultstore.current_run() is None


def test_async_with_stores_the_failure_and_re_raises(backend: Backend) -> None:
    async def main() -> None:
        async with backend.run("t1"):
            raise KeyError("gone")

    with pytest.raises(KeyError):
        asyncio.run(main())
    meta = backend.get_task_meta("t1")
    assert meta.status == FAILURE
    assert meta.result == {
        "exc_type": "KeyError",
        "exc_message": ["gone"],
        "exc_module": "builtins",
    }
    assert meta.traceback is not None
    assert meta.traceback.endswith("KeyError: 'gone'\n")


def test_a_cancelled_async_run_ends_as_worker_lost(backend: Backend) -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def task() -> None:
            async with backend.run("t1"):
                started.set()
                await asyncio.sleep(60)

        running = asyncio.ensure_future(task())
        await asyncio.wait_for(started.wait(), DEADLINE)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(main())
    error = backend.get_result("t1")
    assert type(error) is WorkerLostError
    assert str(error) == "task 't1' was interrupted by CancelledError"


def test_async_runs_refuse_revoked_and_finished_tasks(backend: Backend) -> None:
    backend.revoke("gone")
    backend.mark_as_done("done", 1)

    async def main(task_id: str, track_started: bool) -> None:
        async with backend.run(task_id, track_started=track_started):
            pytest.fail("the body must not run")

    for track_started in (True, False):
        with pytest.raises(TaskRevokedError) as revoked:
            asyncio.run(main("gone", track_started))
        assert str(revoked.value) == "task 'gone' was revoked before it started"
        with pytest.raises(ResultStoreError) as finished:
            asyncio.run(main("done", track_started))
        assert (
            str(finished.value) == "task 'done' already finished (SUCCESS); a task id is run once"
        )


def test_async_revocation_ends_the_run_as_revoked(backend: Backend) -> None:
    async def main() -> None:
        async with backend.run("t1") as run:
            await asyncio.to_thread(backend.revoke, "t1")
            await run.araise_if_revoked()

    with pytest.raises(TaskRevokedError):
        asyncio.run(main())
    assert backend.get_state("t1") == REVOKED


def test_async_update_state_refuses_ready_states(backend: Backend) -> None:
    async def main() -> None:
        async with backend.run("t1") as run:
            with pytest.raises(ValueError, match="would end the task"):
                await run.aupdate_state(FAILURE)

    asyncio.run(main())
    assert backend.get_state("t1") == SUCCESS
