"""The celery-resultstore wheel, installed into a fresh venv: Celery finds it by its entry point."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from ..test_packaging import TIMEOUT, run

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = textwrap.dedent(
    """
    import importlib.metadata as md

    points = [ep for ep in md.entry_points(group="celery.result_backends")
              if ep.dist is not None and ep.dist.name == "celery-resultstore"]
    # Only its own name: never one of Celery's (redis, db, ...), which it would replace.
    assert [(ep.name, ep.value) for ep in points] == [
        ("resultstore", "celery_resultstore:ResultStoreBackend")
    ], points
    assert points[0].dist.version == "0.1.0"

    from celery import Celery
    from celery.app.backends import by_url

    import celery_resultstore

    cls, url = by_url("resultstore+db+sqlite:///x.db")
    assert cls is celery_resultstore.ResultStoreBackend, cls
    assert url == "db+sqlite:///x.db", url

    app = Celery("p", broker="memory://", backend="resultstore+memory://pk")
    backend = app.backend
    assert type(backend) is celery_resultstore.ResultStoreBackend
    assert backend.as_uri() == "resultstore+memory://pk", backend.as_uri()
    backend.mark_as_done("t1", {"ok": [1, 2]})
    assert app.AsyncResult("t1").get(timeout=5) == {"ok": [1, 2]}
    print("OK")
    """
)


@pytest.mark.slow
@pytest.mark.timeout(4 * TIMEOUT)
def test_wheel_installs_and_registers_its_entry_point(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = ("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", wheels)
    for project in (ROOT, ROOT / "plugins" / "memory_backend", ROOT / "integrations" / "celery"):
        run(sys.executable, *build, project, cwd=tmp_path)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # The wheels' own dependencies (celery, kombu, pluggy) come from the package index.
    run(python, "-m", "pip", "install", "--quiet", *sorted(wheels.iterdir()), cwd=tmp_path)
    assert run(python, "-c", SNIPPET, cwd=tmp_path) == "OK\n"
