"""The Redis listing benchmark runs end to end (a tiny run, no timing asserted), so it
cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "redis_listing_bench.py"


def test_redis_listing_bench_smoke(redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--redis", redis_url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stores, _, rest = done.stdout.partition("\n\n")
    spent, _, listings = rest.partition("\n\n")
    assert spent.startswith("Server time per store script (median of 3 windows of 50): ")
    rows = [line.split(" | ")[0].lstrip("| ") for line in stores.splitlines()[2:]]
    assert rows == [
        "store one at a time, small, without the index (SCAN mode)",
        "store one at a time, small, with the index",
        "store one at a time, large, without the index (SCAN mode)",
        "store one at a time, large, with the index",
        "store one at a time, small, without the index (SCAN mode), 200 stored",
        "store one at a time, small, with the index, 200 stored",
    ]
    lines = listings.splitlines()
    assert lines[0] == (
        "| on 200 results | by SCAN (default) | from the index (`redis_list_index=True`) |"
    )
    assert [line.split(" | ")[0].lstrip("| ") for line in lines[2:]] == [
        "first page (50)",
        "a deep page (50 after the 100th)",
        "FAILURE only, first page (50)",
        "last hour's failures, first page (50)",
        "by task name (1% match), first page (50)",
        "counts by state",
        "counts by state in 24 hourly buckets",
        "Redis memory for the 200 results",
    ]
