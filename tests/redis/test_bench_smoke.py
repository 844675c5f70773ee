"""The benchmark runs end to end (a few iterations, no timing asserted), so it cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def test_bench_smoke(redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--redis", redis_url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "| scenario | resultstore | raw driver | ratio (median, min-max) |"
    scenarios = [line.split(" | ")[0].lstrip("| ") for line in lines[2:]]
    assert "store one at a time, small" in scenarios
    assert "wait latency p50 (lower is better)" in scenarios
    assert len(scenarios) == 12
