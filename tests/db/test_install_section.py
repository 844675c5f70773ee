"""The README's install section, run as written in a fresh venv from built wheels, gives a
working memory://, redis:// and db+postgresql://."""

from __future__ import annotations

import re
import shlex
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from ..test_packaging import ROOT, TIMEOUT, run

SNIPPET = textwrap.dedent(
    """
    import sys
    from resultstore import AsyncResult, Backend

    for url in ("memory://", "redis://127.0.0.1:6379/0", sys.argv[1]):
        task_id = "install-check-" + sys.argv[2]
        with Backend(url) as backend:
            assert backend.mark_as_done(task_id, {"url": url.split(":")[0]}) is True
            assert AsyncResult(task_id, backend).get(timeout=10) == {"url": url.split(":")[0]}
            backend.forget(task_id)
            assert backend.get_task_meta(task_id).status == "PENDING"
        print(url.split(":")[0], "ok")
    """
)


def install_commands() -> list[list[str]]:
    """The ``pip install`` lines of the README's "## Install" section, comments dropped."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    lines = re.findall(r"^pip install (.+)$", section, re.M)
    return [shlex.split(line, comments=True) for line in lines]


def test_the_install_section_shows_every_distribution_and_extra() -> None:
    assert install_commands() == [
        ["resultstore[memory]"],
        ["resultstore[memory,cli]"],
        ["resultstore-redis"],
        ["resultstore-db"],
        ["resultstore-db[postgresql]"],
        ["resultstore-db[mysql]"],
    ]


@pytest.mark.slow
@pytest.mark.timeout(4 * TIMEOUT)
def test_the_install_section_works_from_built_wheels(tmp_path: Path, postgres_url: str) -> None:
    wheels = tmp_path / "wheels"
    build = ("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", wheels)
    for project in (
        ROOT,
        *(ROOT / "plugins" / p for p in ("memory_backend", "redis_backend", "db_backend")),
    ):
        run(sys.executable, *build, project, cwd=tmp_path)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    for requirements in install_commands():
        # Exactly the README's command; the unpublished wheels are found next to the index.
        run(
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--find-links",
            wheels,
            *requirements,
            cwd=tmp_path,
        )
    printed = run(python, "-c", SNIPPET, postgres_url, uuid.uuid4().hex, cwd=tmp_path)
    assert printed == "memory ok\nredis ok\ndb+postgresql ok\n"
