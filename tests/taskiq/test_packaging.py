"""taskiq-resultstore as a user installs it: its wheel and its dependencies in a fresh venv."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ..hosts import ROOT, install_in_fresh_venv
from ..test_packaging import TIMEOUT, run

SNIPPET = textwrap.dedent(
    """
    import asyncio
    import importlib.metadata as md

    assert md.version("taskiq-resultstore") == "0.1.0"
    requires = md.requires("taskiq-resultstore") or []
    assert "resultstore>=0.1.0" in requires, requires
    assert "taskiq>=0.11" in requires, requires
    files = sorted(str(f) for f in md.files("taskiq-resultstore"))
    assert "taskiq_resultstore/py.typed" in files, files
    md.version("taskiq")  # installed as its dependency

    from taskiq import TaskiqResult
    from taskiq_resultstore import ResultStoreBackend

    async def main():
        backend = ResultStoreBackend("memory://packaged")
        await backend.set_result(
            "t1",
            TaskiqResult(is_err=False, return_value=[1], execution_time=0.5, labels={"a": "b"}),
        )
        result = await backend.wait_result("t1", timeout=5)
        assert (result.return_value, result.execution_time, result.labels) == (
            [1], 0.5, {"a": "b"}
        ), result
        await backend.shutdown()

    asyncio.run(main())
    print("OK")
    """
)


@pytest.mark.slow
@pytest.mark.timeout(4 * TIMEOUT)
def test_the_wheel_installs_with_taskiq_and_works(tmp_path: Path) -> None:
    python = install_in_fresh_venv(tmp_path, ROOT / "integrations" / "taskiq")
    assert run(python, "-c", SNIPPET, cwd=tmp_path) == "OK\n"
