"""dramatiq-resultstore as a user installs it: its wheel and its dependencies in a fresh venv."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ..hosts import ROOT, install_in_fresh_venv
from ..test_packaging import TIMEOUT, run

SNIPPET = textwrap.dedent(
    """
    import importlib.metadata as md

    assert md.version("dramatiq-resultstore") == "0.1.0"
    requires = md.requires("dramatiq-resultstore") or []
    assert "resultstore>=0.1.0" in requires, requires
    assert "dramatiq>=1.15" in requires, requires
    files = sorted(str(f) for f in md.files("dramatiq-resultstore"))
    assert "dramatiq_resultstore/py.typed" in files, files
    md.version("dramatiq")  # installed as its dependency

    from dramatiq import Message
    from dramatiq.rate_limits import Barrier
    from dramatiq_resultstore import CounterBarrierBackend, ResultStoreBackend

    results = ResultStoreBackend("memory://packaged")
    message = Message("default", "add", (1, 2), {}, {})
    results.store_result(message, 3, 60_000)
    assert results.get_result(message, block=True, timeout=5_000) == 3
    barrier = Barrier(CounterBarrierBackend(results.backend), "b1", ttl=60_000)
    assert barrier.create(2) is True
    assert [barrier.wait(block=False), barrier.wait(block=False)] == [False, True]
    results.close()
    print("OK")
    """
)


@pytest.mark.slow
@pytest.mark.timeout(4 * TIMEOUT)
def test_the_wheel_installs_with_dramatiq_and_works(tmp_path: Path) -> None:
    python = install_in_fresh_venv(tmp_path, ROOT / "integrations" / "dramatiq")
    assert run(python, "-c", SNIPPET, cwd=tmp_path) == "OK\n"
