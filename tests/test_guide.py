"""The guide's Python code blocks run as written (docs/writing-a-plugin.md).

Each block runs on its own, in a fresh namespace, with what it imports itself. A
block that cannot run on its own says so on its first line (``# not run: why``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import resultstore
from resultstore import _registry

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"
BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```$", re.M | re.S)
NOT_RUN = "# not run:"


def blocks() -> list[tuple[int, str]]:
    text = GUIDE.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m["code"]) for m in BLOCK.finditer(text)]


@pytest.fixture
def schemes_registered_by_the_block() -> Iterator[None]:
    before = set(_registry._explicit)
    yield
    for scheme in set(_registry._explicit) - before:
        resultstore.unregister_backend(scheme)


def test_most_blocks_run() -> None:
    found = blocks()
    not_run = [line for line, code in found if code.startswith(NOT_RUN)]
    assert len(found) >= 8
    assert len(not_run) <= len(found) // 4, f"blocks not run, at lines {not_run}"


@pytest.mark.usefixtures("schemes_registered_by_the_block")
@pytest.mark.parametrize(("line", "code"), [pytest.param(*b, id=f"line{b[0]}") for b in blocks()])
def test_block_runs(line: int, code: str) -> None:
    if code.startswith(NOT_RUN):
        pytest.skip(code.splitlines()[0])
    # Padded so that a traceback names the line of the guide.
    compiled = compile("\n" * (line - 1) + code, str(GUIDE), "exec")
    exec(compiled, {"__name__": f"guide_line{line}"})
