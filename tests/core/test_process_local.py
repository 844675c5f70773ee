"""memory:// (and in-memory SQLite) keep results inside one process: whoever looks from
another process is told so, instead of waiting in silence for a PENDING that never ends."""

from __future__ import annotations

import subprocess
import sys

import pytest

import resultstore
from resultstore import AsyncResult, Backend, PluginValidationError, cli

from ..doubles import DictPlugin

HINT = (
    "memory://{name} keeps results inside one process: "
    "a result stored by another process is never seen here"
)


def test_a_result_stored_by_another_process_times_out_saying_why(store_url: str) -> None:
    stored = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import resultstore; resultstore.Backend({store_url!r}).mark_as_done('t', 1)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stored.returncode == 0, stored.stderr
    with Backend(store_url) as backend:
        assert backend.process_local is True
        with pytest.raises(resultstore.TimeoutError) as caught:
            AsyncResult("t", backend).get(timeout=0.1)
    name = store_url.removeprefix("memory://")
    assert str(caught.value) == (
        "task 't' was not ready within 0.1 s (state PENDING); " + HINT.format(name=name)
    )


def test_the_hint_is_not_given_for_a_task_seen_in_this_process(backend: Backend) -> None:
    backend.mark_as_started("t")
    with pytest.raises(resultstore.TimeoutError) as caught:
        AsyncResult("t", backend).get(timeout=0.05)
    assert str(caught.value) == "task 't' was not ready within 0.05 s (state STARTED)"


@pytest.mark.parametrize(
    ("url", "local"),
    [("memory://", True), ("db+sqlite://", True), ("db+sqlite:///:memory:", True)],
)
def test_backends_say_whether_they_are_process_local(url: str, local: bool) -> None:
    with Backend(url, expires=None) as backend:
        assert backend.process_local is local


def test_shared_backends_are_not_process_local(tmp_path: object) -> None:
    with Backend(f"db+sqlite:///{tmp_path}/r.db") as backend:
        assert backend.process_local is False


def test_process_local_must_be_a_bool() -> None:
    class Odd(DictPlugin):
        process_local = "yes"

    resultstore.register_backend("oddtest", Odd)
    try:
        with pytest.raises(
            PluginValidationError, match=r"'process_local' must be True or False, got 'yes'$"
        ):
            Backend("oddtest://")
    finally:
        resultstore.unregister_backend("oddtest")


def test_the_command_says_that_memory_is_private_to_one_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["--backend", "memory://cli", "show", "t"]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert err == (
        "resultstore: note: memory://cli keeps results inside one process; "
        "this command's store is its own, and empty\n"
    )
    assert out == "task       t\nstate      PENDING (nothing stored)\n\n"
    assert (
        cli.main(["--backend", "memory://cli", "wait", "t", "--timeout", "0.05"])
        == cli.EXIT_TIMEOUT
    )
    _, err = capsys.readouterr()
    assert err.splitlines()[-1] == (
        "resultstore: error: timed out: task 't' was not ready within 0.05 s (state PENDING); "
        + HINT.format(name="cli")
    )
