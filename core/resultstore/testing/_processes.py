"""Racing another process: a forked child and this process work on one engine at once.

A lock inside one process is enough for threads and useless across processes;
a plugin on a shared engine must be atomic in the engine itself. The suite proves
it with a forked child (forked, so a plugin registered with ``register_backend``
in the test process is there too; the core gives the child a plugin of its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import pytest


def race_with_a_child(
    child: Callable[[Callable[[], bool]], Any], parent: Callable[[], Any], timeout: float
) -> tuple[Any, Any]:
    """Fork; run ``child(stopped)`` there and ``parent()`` here, started together.

    ``stopped()`` tells the child that the parent's work is done (a child that works
    until then races for the whole of it). Returns both results; the child's travels
    as JSON. A child that raises fails the test with its traceback.
    """
    go_read, go_write = os.pipe()
    out_read, out_write = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads: that is the test
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(go_write)
        os.close(out_read)
        try:
            os.read(go_read, 1)
            outcome = {"value": child(lambda: bool(select.select([go_read], [], [], 0)[0]))}
        except BaseException:
            outcome = {"error": traceback.format_exc()}
        with os.fdopen(out_write, "wb") as out:
            out.write(json.dumps(outcome).encode())
        os._exit(0)
    os.close(go_read)
    os.close(out_write)
    try:
        os.write(go_write, b"g")  # go
        mine = parent()
        with contextlib.suppress(BrokenPipeError):  # a child that finished first is gone
            os.write(go_write, b"s")  # the parent is done: stop
        outcome = json.loads(_read_all(out_read, time.monotonic() + timeout))
    finally:
        os.close(go_write)
        os.close(out_read)
        _reap(pid, timeout)
    if "error" in outcome:
        pytest.fail(f"the child process failed:\n{outcome['error']}")
    return outcome["value"], mine


def _read_all(fd: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail("the child process did not finish in time")
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while os.waitpid(pid, os.WNOHANG)[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return
        time.sleep(0.005)
