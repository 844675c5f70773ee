"""A plugin with an asyncio-only client on a loop thread of its own, and no fork code,
passes the conformance suite, the fork test included: the core builds a forked child
a fresh plugin, so the child never touches the parent's loop thread or socket."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import resultstore
from resultstore import Backend, hookimpl
from resultstore.testing import BackendTests

from ..doubles import DictPlugin
from ..loopkv import LoopKV
from ..redis.servers import free_port

SERVER = Path(__file__).resolve().parents[1] / "loopkv.py"


@pytest.fixture(scope="module")
def loopkv_url() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(SERVER), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        resultstore.register_backend("loopkv", LoopKV)
        yield f"loopkv://127.0.0.1:{port}"
    finally:
        resultstore.unregister_backend("loopkv")
        server.kill()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()


class TestLoopThreadPlugin(BackendTests):
    @pytest.fixture(autouse=True)
    def _url(self, loopkv_url: str) -> None:
        self.url = loopkv_url  # type: ignore[misc]

    def test_scheme_is_published_as_entry_point(self, backend: Backend) -> None:
        pytest.skip("a test plugin, registered with register_backend")


# --- what the core does at fork, seen from the plugin ------------------------------------


class Recorder(DictPlugin):
    """Writes ``<event> <instance tag>`` lines to a file both processes can read."""

    log: ClassVar[Path]

    def __init__(self, config: resultstore.BackendConfig) -> None:
        super().__init__(config)
        self.tag = f"pid{os.getpid()}"
        self._write("built")

    def _write(self, event: str) -> None:
        with self.log.open("a") as f:
            f.write(f"{event} {self.tag}\n")

    @hookimpl
    def close(self) -> None:
        self._write("closed")


class KeepsItself(Recorder):
    keep_after_fork = True


def in_child(work: Any) -> None:
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads: that is the test
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("cls", [Recorder, KeepsItself])
def test_the_child_builds_its_own_plugin_and_never_closes_the_parents(
    cls: type[Recorder], tmp_path: Path
) -> None:
    cls.log = tmp_path / "log"
    resultstore.register_backend("recorder", cls)
    try:
        with Backend("recorder://", expires=None) as backend:
            backend.mark_as_done("t", 1)
            parent = f"pid{os.getpid()}"

            def child() -> None:
                with Backend("recorder://", expires=None):  # a Backend the child opens itself
                    pass
                assert backend.mark_as_done("c", 2) is True  # the inherited Backend, used
                backend.close()

            in_child(child)
    finally:
        resultstore.unregister_backend("recorder")
    lines = cls.log.read_text().splitlines()
    built = [line for line in lines if line.startswith("built ")]
    closed = [line for line in lines if line.startswith("closed ")]
    assert built[0] == f"built {parent}"
    child = built[1].split()[1]
    if cls is KeepsItself:
        # Kept: the inherited Backend goes on with the same object, which handles fork
        # itself and is closed by the child's close().
        assert built == [f"built {parent}", f"built {child}"]
        assert closed == [f"closed {child}", f"closed {parent}", f"closed {parent}"]
    else:
        # A fresh plugin for the inherited Backend; the parent's object is left alone.
        assert built == [f"built {parent}", f"built {child}", f"built {child}"]
        assert closed == [f"closed {child}", f"closed {child}", f"closed {parent}"]
