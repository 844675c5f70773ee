"""The benchmark runs end to end (a few iterations, no timing asserted), so it cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..db.conftest import MYSQL_ADMIN, PG_ADMIN, server

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run.py"
LISTING_BENCH = BENCH.with_name("listing_bench.py")


def test_bench_smoke(redis_url: str) -> None:
    server("postgresql", PG_ADMIN)  # the benchmark uses the machine's servers too
    server("mysql", MYSQL_ADMIN)
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--redis", redis_url],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures, _, scale = done.stdout.partition("\n| backend | waiters |")
    lines = figures.splitlines()
    scale_rows = [line.split(" | ")[0].lstrip("| ") for line in scale.splitlines()[2:]]
    assert scale_rows == ["Redis", "SQLite", "PostgreSQL", "MariaDB"]
    assert lines[0] == "| scenario | resultstore | raw driver | ratio (median, min-max) |"
    celery_header = [line for line in lines if line.startswith("| scenario | Celery ")]
    assert len(celery_header) == 1
    scenarios = [
        line.split(" | ")[0].lstrip("| ")
        for line in lines
        if line.startswith("| ") and not line.startswith("| scenario")
    ]
    for expected in (
        "store one at a time, small",
        "wait latency p50 (lower is better)",
        "wait latency p50, raw: a bare PUBLISH (lower is better)",
        "await latency (asyncio) p99 (lower is better)",
        "SQLite: join of 100 done, large (lower is better)",
        "PostgreSQL: wait latency p50 (lower is better)",
        "PostgreSQL: wait latency p50, raw: a bare NOTIFY (lower is better)",
        "MariaDB: get_many of 100, small",
        "Celery on Redis: wait latency p50 (lower is better)",
        "Celery on PostgreSQL: store one at a time, small",
    ):
        assert expected in scenarios
    assert len(scenarios) == 53


def smoke(script: Path) -> list[str]:
    """The lines ``script --smoke`` printed; it must succeed."""
    done = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_listing_bench_smoke() -> None:
    """bench/listing_bench.py --smoke: every backend and scenario, 2,000 results."""
    server("postgresql", PG_ADMIN)
    server("mysql", MYSQL_ADMIN)
    lines = smoke(LISTING_BENCH)
    header = lines.index("| scenario (ms, median) | SQLite | PostgreSQL | MariaDB | memory:// |")
    scenarios = [line.split(" | ")[0].lstrip("| ") for line in lines[header + 2 :]]
    assert scenarios == [
        "first page of 50",
        "page deep in (cursor of the middle result)",
        "page of FAILUREs",
        "page of one task name (5%)",
        "page of an id prefix",
        "counts by state, 24 h",
        "counts in 24 buckets of 1 h",
        "**dashboard: first page + both counts**",
    ]


def test_dashboard_bench_smoke(redis_url: str) -> None:
    """bench/dashboard_bench.py --smoke: the real dashboard command on every backend."""
    server("postgresql", PG_ADMIN)
    lines = smoke(BENCH.with_name("dashboard_bench.py"))
    header = lines.index(
        "| page (ms, median) | SQLite | PostgreSQL | Redis, from the index | Redis, by SCAN |"
    )
    assert [line.split(" | ")[0].lstrip("| ") for line in lines[header + 2 :]] == [
        "overview, 24 h (counts, chart, last failures)",
        "overview, 1 h",
        "results, first page",
        "results, FAILURE only",
        "results, one task name",
        "a task's page",
    ]
