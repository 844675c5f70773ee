"""Every Python example of the user-facing Markdown files runs as written, to its end.

Each ```python block of a file runs as a script of its own, in the file's order,
in one temporary directory, against the real services (the examples use
``localhost``'s Redis and memory://): an example that hangs, fails, or drifts from
the API fails here. A block that is deliberately partial says so right above it
with ``<!-- not run: why -->`` and is skipped by that name, never by accident.
Where a print has a comment (``print(x)  # 42; why``), the output shows that value
(up to the ``;``), in order. The plugin guide's examples are run by tests/test_guide.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = (
    "README.md",
    "plugins/memory_backend/README.md",
    "plugins/redis_backend/README.md",
    "plugins/db_backend/README.md",
    "examples/file_backend/README.md",
    "integrations/celery/README.md",
    "integrations/taskiq/README.md",
    "integrations/dramatiq/README.md",
    "dashboard/README.md",
)
BLOCK = re.compile(r"(?:<!-- not run: (?P<why>[^>]+?) -->\n)?```python\n(?P<code>.*?)```", re.S)
TIMEOUT = 60


def blocks(name: str) -> list[tuple[str, str | None]]:
    text = (ROOT / name).read_text()
    return [(m["code"], m["why"]) for m in BLOCK.finditer(text)]


def test_every_user_facing_markdown_file_is_checked() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    with_python = {name for name in tracked if "```python" in (ROOT / name).read_text()}
    assert with_python - {"docs/writing-a-plugin.md"} <= set(FILES), with_python


@pytest.mark.slow
@pytest.mark.parametrize("name", FILES)
def test_the_examples_run_as_written(name: str, tmp_path: Path) -> None:
    found = blocks(name)
    assert found or name != "README.md", "no examples found: the pattern is wrong"
    for number, (code, why) in enumerate(found, 1):
        if why is not None:
            continue
        script = tmp_path / f"example_{number}.py"
        script.write_text(code)
        proc = subprocess.run(
            [sys.executable, script.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert proc.returncode == 0, (
            f"{name}, example {number} exited {proc.returncode}:\n{code}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
        assert proc.stderr == "", f"{name}, example {number} wrote to stderr:\n{proc.stderr}"
        printed = iter(proc.stdout.splitlines())
        for expected in promised_output(code):
            assert expected in printed, (
                f"{name}, example {number} promised {expected!r} (in this order), printed:\n"
                f"{proc.stdout}"
            )


def promised_output(code: str) -> list[str]:
    """What the example's comments say its prints show: ``print(x)  # 42; why`` is 42."""
    return [
        line.split("  # ", 1)[1].split(";")[0]
        for line in code.splitlines()
        if line.lstrip().startswith("print(") and "  # " in line
    ]
