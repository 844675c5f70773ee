"""A Celery app on the bridge, with a real prefork worker, over every backend (see conftest)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, chain, chord, group
from celery.exceptions import ChordError, TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult, GroupResult, ResultSet

from ..threads import Worker, wait_until
from .app import CustomError
from .conftest import Setup, wait_started

TIMEOUT = 30


def key() -> str:
    return f"rs-test:{uuid.uuid4().hex}"


def test_delay_get(app: Celery) -> None:
    result = app.tasks["t.add"].delay(2, 3)
    assert result.get(timeout=TIMEOUT) == 5
    assert result.state == "SUCCESS"
    assert result.successful() is True
    assert app.backend.task_result_exists(result.id) is True


def test_failure_is_raised_with_its_traceback(app: Celery) -> None:
    result = app.tasks["t.fail"].delay("boom")
    with pytest.raises(ValueError, match=r"^boom$") as raised:
        result.get(timeout=TIMEOUT)
    assert type(raised.value) is ValueError
    assert result.state == "FAILURE"
    assert result.traceback.startswith("Traceback (most recent call last):\n")
    assert "raise ValueError(message)" in result.traceback
    assert result.traceback.endswith("ValueError: boom\n")


def test_failure_of_an_application_class(app: Celery) -> None:
    result = app.tasks["t.fail_custom"].delay("bad input")
    with pytest.raises(CustomError, match=r"^bad input$"):
        result.get(timeout=TIMEOUT)


def test_propagate_false_returns_the_exception(app: Celery) -> None:
    result = app.tasks["t.fail"].delay("quiet")
    error = result.get(timeout=TIMEOUT, propagate=False)
    assert type(error) is ValueError
    assert error.args == ("quiet",)
    assert result.failed() is True


def test_timeout(app: Celery, redis_client: redis.Redis) -> None:
    release = key()
    result = app.tasks["t.block"].delay(release)
    began = time.monotonic()
    with pytest.raises(CeleryTimeoutError, match=r"^The operation timed out.$"):
        result.get(timeout=0.5)
    assert 0.5 <= time.monotonic() - began < 2.5
    redis_client.rpush(release, 1)
    assert result.get(timeout=TIMEOUT) == release


def test_group_join(app: Celery) -> None:
    add = app.tasks["t.add"]
    result = group(add.s(i, i) for i in range(20)).delay()
    assert result.get(timeout=TIMEOUT) == [2 * i for i in range(20)]
    result.save()
    restored = GroupResult.restore(result.id, app=app)
    assert [r.id for r in restored.results] == [r.id for r in result.results]
    assert restored.join_native(timeout=TIMEOUT) == [2 * i for i in range(20)]
    result.delete()
    assert GroupResult.restore(result.id, app=app) is None


def test_chord(app: Celery) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    assert chord(add.s(i, i) for i in range(10))(tsum.s()).get(timeout=TIMEOUT) == 90


@pytest.mark.timeout(300)
def test_chord_of_200_parts(app: Celery) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    result = chord(add.s(i, 1) for i in range(200))(tsum.s())
    assert result.get(timeout=60) == sum(range(200)) + 200


def test_chord_with_a_failing_header(app: Celery) -> None:
    add, fail, tsum = app.tasks["t.add"], app.tasks["t.fail"], app.tasks["t.tsum"]
    header = [add.s(1, 1), fail.s("header broke"), add.s(2, 2)]
    result = chord(header)(tsum.s())
    failed = result.parent.results[1].id
    # result.get() raises the header's own ValueError first (Celery checks the parents);
    # the callback itself ends in ChordError.
    with pytest.raises(ValueError, match=r"^header broke$"):
        result.get(timeout=TIMEOUT)
    with pytest.raises(ChordError) as raised:
        AsyncResult(result.id, app=app).get(timeout=TIMEOUT)
    assert str(raised.value) == f"Dependency {failed} raised ValueError('header broke')"
    assert result.state == "FAILURE"


def test_chain_holding_a_chord(app: Celery) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    workflow = chain(add.s(1, 1), chord([add.s(1), add.s(2)], tsum.s()), add.s(10))
    assert workflow.delay().get(timeout=TIMEOUT) == (2 + 1) + (2 + 2) + 10


def test_chord_whose_header_holds_a_chain(app: Celery) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    workflow = chord([chain(add.s(1, 1), add.s(1)), add.s(5, 5)], tsum.s())
    assert workflow.delay().get(timeout=TIMEOUT) == 3 + 10


def test_chord_whose_header_is_a_generator(app: Celery, redis_client: redis.Redis) -> None:
    """Celery sends a generator header part by part, producing parts a few ahead of the
    one it sends (and the size only once the generator is exhausted). Here the fourth
    part is produced only once the first has run: a bridge that unrolled the header
    before sending any part would wait for nothing."""
    push, collect = app.tasks["t.push"], app.tasks["t.collect"]
    done = key()

    def header() -> Iterator[Any]:
        for i in range(6):
            if i == 3:
                ran = redis_client.blpop([f"{done}:0"], timeout=TIMEOUT)
                assert ran is not None, "the first part never ran: the header was unrolled early"
            yield push.s(f"{done}:{i}", i)

    assert chord(header(), collect.s())().get(timeout=TIMEOUT) == [0, 1, 2, 3, 4, 5]
    redis_client.delete(*(f"{done}:{i}" for i in range(1, 6)))  # those nobody waited for


def test_add_to_chord(app: Celery) -> None:
    """Parts added by a header part (Task.add_to_chord) join the callback's values after
    the header's, in the order they were added."""
    extend, add, collect = app.tasks["t.extend_chord"], app.tasks["t.add"], app.tasks["t.collect"]
    result = chord([extend.s([1, 2, 3], 4), add.s(10, 10)], collect.s())()
    assert result.get(timeout=TIMEOUT) == [0, 20, 5, 6, 7]


def test_add_a_chord_to_a_chord(app: Celery) -> None:
    extend, collect = app.tasks["t.extend_chord_by_chord"], app.tasks["t.collect"]
    result = chord([extend.s([1, 2, 3], 4)], collect.s())()
    assert result.get(timeout=TIMEOUT) == [0, 5 + 6 + 7]


# 300 on Redis and PostgreSQL, 100 on the others (the same counter path), to keep the
# run within minutes on a 2-core machine. The path without a counter: test_backend.py.
CONCURRENT_CHORDS = {"redis": 300, "postgresql": 300, "sqlite": 100, "file": 100}


@pytest.mark.timeout(400)
def test_concurrent_chords_call_back_once_each(
    celery_setup: Setup, redis_client: redis.Redis
) -> None:
    app = celery_setup.app
    count = CONCURRENT_CHORDS[celery_setup.case.name]
    add, count_call = app.tasks["t.add"], app.tasks["t.count_call"]
    counts = key()
    results = [
        chord([add.s(n, 0), add.s(n, 1), add.s(n, 2)])(count_call.s(counts, str(n)))
        for n in range(count)
    ]
    assert ResultSet(results, app=app).join_native(timeout=180) == [3 * n + 3 for n in range(count)]
    # Behind every callback (and any duplicate a double "last part" would have sent):
    # two tasks, one per pool process, so that both processes are past what came before.
    release = key()
    blockers = [app.tasks["t.block"].delay(release) for _ in range(2)]
    wait_started(redis_client, release, 2)
    redis_client.rpush(release, 1, 1)
    assert [b.get(timeout=TIMEOUT) for b in blockers] == [release, release]
    calls = {k.decode(): int(v) for k, v in redis_client.hgetall(counts).items()}
    redis_client.delete(counts)
    assert calls == {str(n): 1 for n in range(count)}


def test_result_extended_fields(celery_setup: Setup) -> None:
    app = celery_setup.app
    result = app.tasks["t.add"].apply_async((4, 5), {})
    assert result.get(timeout=TIMEOUT) == 9
    assert result.name == "t.add"
    assert result.args == [4, 5]
    assert result.kwargs == {}
    assert result.worker == celery_setup.worker.name
    assert result.retries == 0
    assert result.queue == celery_setup.queue
    assert result.date_done is not None


def test_revoke_a_pending_task(celery_setup: Setup, redis_client: redis.Redis) -> None:
    app = celery_setup.app
    release = key()
    blockers = [app.tasks["t.block"].delay(release) for _ in range(2)]
    wait_started(redis_client, release, 2)  # both pool processes busy: the next one waits
    pending = app.tasks["t.add"].delay(1, 1)
    replies = app.control.revoke(pending.id, destination=[celery_setup.worker.name], reply=True)
    assert replies == [
        {celery_setup.worker.name: {"ok": f"tasks {{{pending.id!r}}} flagged as revoked"}}
    ]
    redis_client.rpush(release, 1, 1)
    with pytest.raises(TaskRevokedError):
        pending.get(timeout=TIMEOUT)
    assert pending.state == "REVOKED"
    assert [b.get(timeout=TIMEOUT) for b in blockers] == [release, release]


def test_revoke_a_running_task(celery_setup: Setup, redis_client: redis.Redis) -> None:
    app = celery_setup.app
    release = key()
    running = app.tasks["t.block"].delay(release)
    wait_started(redis_client, release)
    app.control.revoke(
        running.id, terminate=True, destination=[celery_setup.worker.name], reply=True
    )
    with pytest.raises(TaskRevokedError):
        running.get(timeout=TIMEOUT)
    assert running.state == "REVOKED"


def test_forget(app: Celery) -> None:
    result = app.tasks["t.add"].delay(7, 7)
    assert result.get(timeout=TIMEOUT) == 14
    result.forget()
    fresh = AsyncResult(result.id, app=app)
    assert fresh.state == "PENDING"
    assert app.backend.task_result_exists(result.id) is False


def test_custom_progress_state_while_running(app: Celery, redis_client: redis.Redis) -> None:
    release = key()
    result = app.tasks["t.progress"].delay(release)
    seen: list[dict[str, Any]] = []
    in_progress = threading.Event()

    def on_message(meta: dict[str, Any]) -> None:
        seen.append(meta)
        if meta["status"] == "PROGRESS":
            in_progress.set()

    outcome: list[Any] = []
    waiter = threading.Thread(
        target=lambda: outcome.append(result.get(timeout=TIMEOUT, on_message=on_message))
    )
    waiter.start()
    try:
        assert in_progress.wait(TIMEOUT)
        peek = AsyncResult(result.id, app=app)
        assert peek.state == "PROGRESS"
        assert peek.info == {"current": 1, "total": 2}
    finally:
        redis_client.rpush(release, 1)
        waiter.join(TIMEOUT)
    assert outcome == ["done"]
    statuses = [m["status"] for m in seen]
    assert statuses[statuses.index("PROGRESS") :][-1] == "SUCCESS"
    assert {"status": "PROGRESS", "result": {"current": 1, "total": 2}}.items() <= {
        **seen[statuses.index("PROGRESS")]
    }.items()


def test_late_started_after_success_is_refused(app: Celery) -> None:
    result = app.tasks["t.add"].delay(1, 2)
    assert result.get(timeout=TIMEOUT) == 3
    app.backend.store_result(result.id, {"pid": 1}, "STARTED")
    assert app.backend.get_task_meta(result.id, cache=False)["status"] == "SUCCESS"
    assert AsyncResult(result.id, app=app).result == 3


def test_then_and_on_message(app: Celery, redis_client: redis.Redis) -> None:
    result = app.tasks["t.add"].delay(20, 22)
    got: list[Any] = []
    done = threading.Event()
    result.then(lambda r: (got.append(r.result), done.set()))
    for _ in app.backend.result_consumer.drain_events_until(result.on_ready, timeout=TIMEOUT):
        pass
    assert done.is_set()
    assert got == [42]
    # on_message hears what arrives while get() waits: a result ready before it (the
    # worker can win that race on a loaded machine) is read first and heard by no one,
    # with Celery's own Redis backend too. So the task finishes once the wait watches it.
    messages: list[str] = []
    release = key()
    again = app.tasks["t.block"].delay(release)

    def finish_once_watched() -> None:
        wait_until(lambda: again.id in app.backend.store.waiting_ids(), "get() watches it")
        redis_client.rpush(release, 1)

    finisher = Worker(finish_once_watched)
    finisher.start()
    got_again = again.get(timeout=TIMEOUT, on_message=lambda m: messages.append(m["status"]))
    finisher.finish()
    assert got_again == release
    assert messages[-1] == "SUCCESS"


def test_celery_own_backend_reads_what_the_bridge_wrote(celery_setup: Setup) -> None:
    if celery_setup.case.celery_url is None:
        pytest.skip(f"Celery has no backend of its own for {celery_setup.case.name}")
    app = celery_setup.app
    done = app.tasks["t.add"].delay(3, 4)
    failed = app.tasks["t.fail"].delay("seen by celery")
    assert done.get(timeout=TIMEOUT) == 7
    failed.get(timeout=TIMEOUT, propagate=False)
    plain = Celery("plain", backend=celery_setup.case.celery_url, set_as_current=False)
    plain.conf.result_extended = True  # Celery's database backend reads name, args only then
    try:
        theirs = plain.AsyncResult(done.id)
        assert theirs.get(timeout=TIMEOUT) == 7
        assert theirs.name == "t.add"
        assert theirs.args == [3, 4]
        with pytest.raises(ValueError, match=r"^seen by celery$"):
            plain.AsyncResult(failed.id).get(timeout=TIMEOUT)
    finally:
        plain.close()
