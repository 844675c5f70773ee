"""What the dashboard's pages take to answer over HTTP, on 100,000 stored results.

Each backend gets a fresh store with listing_bench's results (dates spread over the
last 24 hours, 10% FAILURE, 1% unfinished, a quarter with a task name), then the real
``resultstore-dashboard`` command serves it on a free port of 127.0.0.1 and each page
is fetched over HTTP: the median of ``--repeat`` fetches after one warm-up, in ms.
Redis twice: listing by SCAN (its default) and from the index of ``redis_list_index``.
Target (issue 18): a page under 200 ms on PostgreSQL and SQLite.

    .venv/bin/python bench/dashboard_bench.py --write
    .venv/bin/python bench/dashboard_bench.py --smoke   # 2,000 results (the bench smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis
from common import write_section
from listing_bench import arguments, results, sql_bulk, sql_table, sqlite_file
from redis_listing_bench import delete_prefix, keyprefix, load, options

import resultstore
from resultstore import Backend, TaskMeta

REDIS = "redis://127.0.0.1:6379/1"  # redis_listing_bench's database


@dataclass(frozen=True)
class Target:
    label: str
    store: Callable[[argparse.Namespace], Any]  # a context manager: (url, backend options)
    load: Callable[[Backend, list[TaskMeta]], Any]
    repeat: int | None = None  # fewer fetches where one takes seconds


@contextmanager
def redis_store(mode: str) -> Iterator[tuple[str, dict[str, Any]]]:
    prefix = keyprefix()
    try:
        yield REDIS, options(prefix, mode)
    finally:
        delete_prefix(redis.Redis.from_url(REDIS), prefix)


@contextmanager
def sql(store: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    with store as (url, kwargs):
        yield url, kwargs.get("options", {})


TARGETS = [
    Target("SQLite", lambda a: sql(sqlite_file()), sql_bulk),
    Target("PostgreSQL", lambda a: sql(sql_table(f"db+postgresql://{a.postgres}")), sql_bulk),
    Target("Redis, from the index", lambda a: redis_store("index"), load),
    Target("Redis, by SCAN", lambda a: redis_store("SCAN"), load, repeat=3),
]


@contextmanager
def dashboard(url: str, opts: dict[str, Any]) -> Iterator[str]:
    """The console script serving ``url`` on a free port; yields its base URL once
    ``/healthz`` answers, and stops it by pid after."""
    script = shutil.which("resultstore-dashboard", path=os.path.dirname(sys.executable))
    assert script is not None, f"no resultstore-dashboard next to {sys.executable}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [script, "--backend", url, "--port", str(port), "--log-level", "warning"]
    for name, value in opts.items():
        argv += ["--option", f"{name}={json.dumps(value)}"]
    proc = subprocess.Popen(argv)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                fetch(base + "/healthz")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the dashboard did not start: {argv}") from None
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def fetch(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as answer:
        answer.read()
        assert answer.status == 200, (url, answer.status)
    return (time.perf_counter() - started) * 1000


def pages(metas: list[TaskMeta]) -> dict[str, str]:
    failed = next(m.task_id for m in metas if m.status == "FAILURE")
    return {
        "overview, 24 h (counts, chart, last failures)": "/?window=24h",
        "overview, 1 h": "/?window=1h",
        "results, first page": "/results",
        "results, FAILURE only": "/results?state=FAILURE",
        "results, one task name": "/results?name=tasks.email",
        "a task's page": f"/tasks/{failed}",
    }


def measure(target: Target, args: argparse.Namespace, metas: list[TaskMeta]) -> dict[str, float]:
    with target.store(args) as (url, opts):
        with Backend(url, options=opts) as backend:
            target.load(backend, metas)
        figures = {}
        with dashboard(url, opts) as base:
            for name, path in pages(metas).items():
                fetch(base + path)  # warm-up: connections, caches, the first query plan
                times = [fetch(base + path) for _ in range(target.repeat or args.repeat)]
                figures[name] = statistics.median(times)
                print(f"{target.label}: {name}: {figures[name]:.1f} ms", file=sys.stderr)
        return figures


def table(figures: dict[str, dict[str, float]]) -> str:
    labels = list(figures)
    lines = [
        "| page (ms, median) | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for name in next(iter(figures.values())):
        cells = [f"{figures[label][name]:,.1f}" for label in labels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args, end = arguments(__doc__, smoke_repeat=1)
    metas = results(args.n, end)
    chosen = [t for t in TARGETS if not args.only or t.label in args.only.split(",")]
    figures = {t.label: measure(t, args, metas) for t in chosen}
    out = table(figures)
    print(out)
    if args.write:
        info = (
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"resultstore {resultstore.__version__}; {args.n:,} results, median of "
            f"{args.repeat} fetches (3 by SCAN) after one warm-up "
            f"(`bench/dashboard_bench.py --write`); load average {os.getloadavg()[0]:.1f} "
            "when it ended."
        )
        write_section("<!-- dashboard -->", "<!-- /dashboard -->", f"{info}\n\n{out}")


if __name__ == "__main__":
    main()
