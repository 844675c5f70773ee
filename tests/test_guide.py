"""The guide's Python code blocks run as written (docs/writing-a-plugin.md).

Each block runs on its own, in a fresh namespace, with what it imports itself. A
block that cannot run on its own says so right above it with ``<!-- not run: why -->``,
as in the other Markdown files (tests/test_markdown_examples.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import resultstore
from resultstore import _registry

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"
BLOCK = re.compile(
    r"(?:^<!-- not run: (?P<why>[^>]+?) -->\n)?^```python\n(?P<code>.*?)^```$", re.M | re.S
)


def blocks() -> list[tuple[int, str, str | None]]:
    """Each block's first line in the guide, its code, and why it is not run (or None)."""
    text = GUIDE.read_text()
    return [
        (text.count("\n", 0, m.start("code")) + 1, m["code"], m["why"])
        for m in BLOCK.finditer(text)
    ]


@pytest.fixture
def schemes_registered_by_the_block() -> Iterator[None]:
    before = set(_registry._explicit)
    yield
    for scheme in set(_registry._explicit) - before:
        resultstore.unregister_backend(scheme)


def test_most_blocks_run() -> None:
    found = blocks()
    not_run = [line for line, _, why in found if why is not None]
    assert len(found) >= 8
    assert len(not_run) <= len(found) // 4, f"blocks not run, at lines {not_run}"


@pytest.mark.usefixtures("schemes_registered_by_the_block")
@pytest.mark.parametrize(
    ("line", "code", "why"), [pytest.param(*b, id=f"line{b[0]}") for b in blocks()]
)
def test_block_runs(line: int, code: str, why: str | None) -> None:
    if why is not None:
        pytest.skip(f"not run: {why}")
    # Padded so that a traceback names the line of the guide.
    compiled = compile("\n" * (line - 1) + code, str(GUIDE), "exec")
    exec(compiled, {"__name__": f"guide_line{line}"})
