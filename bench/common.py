"""What every benchmark module shares: payloads, rows of figures, timing and the table."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SMALL = {"user": 1234, "ok": True, "tag": "abcdefgh"}  # about 40 bytes of JSON
LARGE = {"rows": ["x" * 90 for _ in range(100)]}  # about 10 KB of JSON


@dataclass
class Row:
    scenario: str
    unit: str
    ours: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    higher_is_better: bool = True

    def ratios(self) -> list[float]:
        return [o / r for o, r in zip(self.ours, self.raw, strict=True)]


def rate(fn: Callable[[int], None], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - started)


def meta_json(task_id: str, value: Any) -> bytes:
    """The bytes Celery (and resultstore) store for a SUCCESS: what raw redis-py writes."""
    return json.dumps(
        {
            "status": "SUCCESS",
            "result": value,
            "traceback": None,
            "children": [],
            "date_done": datetime.now(timezone.utc).isoformat(),
            "task_id": task_id,
        }
    ).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(rows: list[Row], subject: str = "resultstore") -> str:
    lines = [
        f"| scenario | {subject} | raw driver | ratio (median, min-max) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        ours = f"{statistics.median(r.ours):,.1f} {r.unit}"
        if r.raw:  # some scenarios have no raw counterpart (no push on SQLite)
            ratios = r.ratios()
            raw = f"{statistics.median(r.raw):,.1f} {r.unit}"
            ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        else:
            raw = ratio = "-"
        better = "" if r.higher_is_better else " (lower is better)"
        lines.append(f"| {r.scenario}{better} | {ours} | {raw} | {ratio} |")
    return "\n".join(lines)


def write_section(start: str, end: str, body: str) -> None:
    """Replace what bench/README.md holds between the markers ``start`` and ``end``."""
    readme = Path(__file__).resolve().parent / "README.md"
    head, _, rest = readme.read_text().partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{start}\n{body}\n{end}{tail}")
