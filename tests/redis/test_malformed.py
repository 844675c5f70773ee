"""Malformed records on Redis: a DecodeError naming the task id in the API, in the shared
listener (which neither crashes nor reconnects) and in the ``resultstore`` command (exit 4).

The bytes are written and published behind the backend's back, as another program (or a
damaged Celery deployment) could.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest
import redis

from resultstore import AsyncResult, Backend, DecodeError
from resultstore.cli import EXIT_BACKEND

from ..test_cli import cli_run
from ..threads import Worker, wait_until
from .test_leaks import numsub

DEEP = 200_000
MALFORMED = {
    "children is a number": json.dumps({"status": "SUCCESS", "result": 1, "children": 5}).encode(),
    "nested 200,000 deep": b'{"status": "SUCCESS", "result": ' + b"[" * DEEP + b"]" * DEEP + b"}",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_the_command_exits_4_naming_the_task_without_a_traceback(
    redis_url: str, server: redis.Redis, data: bytes
) -> None:
    # The command takes no key prefix: an id of this test's own, deleted afterwards.
    task_id = f"malformed-{uuid.uuid4().hex}"
    server.set(f"celery-task-meta-{task_id}", data)
    try:
        run = cli_run("--backend", redis_url, "show", task_id)
    finally:
        server.delete(f"celery-task-meta-{task_id}")
    assert run.rc == EXIT_BACKEND
    assert run.out == ""
    assert run.err.startswith("resultstore: error: DecodeError: ")
    assert f"meta of task {task_id!r}" in run.err
    assert run.err.count("\n") == 1
    assert "Traceback" not in run.err


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_publish_fails_its_waiter_and_leaves_the_listener_alone(
    backend: Backend,
    server: redis.Redis,
    keyprefix: str,
    data: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="resultstore")
    bad = Worker(lambda: AsyncResult("bad", backend).get(timeout=10))
    other = Worker(lambda: AsyncResult("other", backend).get(timeout=10))
    bad.start()
    other.start()
    wait_until(lambda: numsub(server, keyprefix, ["bad", "other"]) == [1, 1], "both subscribed")
    key = f"{keyprefix}celery-task-meta-bad"
    server.set(key, data)
    server.publish(key, data)
    with pytest.raises(DecodeError, match="meta of task 'bad'"):
        bad.finish()
    backend.mark_as_done("other", "still served")
    assert other.finish() == "still served"
    assert [r.getMessage() for r in caplog.records] == []  # no crash, no reconnect
