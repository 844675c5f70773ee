"""A Celery app with a real worker: Celery's own result backends next to the bridge.

    .venv/bin/python bench/celery_bench.py            # every backend, one run
    .venv/bin/python bench/celery_bench.py --backends bridge-redis,celery-redis

One run: for each backend the same worker (prefork, 2 processes) on the same Redis
broker, started with that ``result_backend``; the client measures ``delay().get()``
(p50/p90 of sequential calls), a 200-task group submitted and joined, the join of
a finished 200-group read anew, and a 200-part chord. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
from celery import Celery, chord, group

HERE = Path(__file__).resolve().parent
BROKER = "redis://127.0.0.1:6379/11"  # a database of its own: tests use 12 and 13
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
CALLS = 200
REPEAT = 3


def backends(database: str, sqlite: Path) -> dict[str, str]:
    pg = f"postgresql://postgres@127.0.0.1:5432/{database}"
    return {
        "celery-redis": BROKER,
        "bridge-redis": f"resultstore+{BROKER}",
        "celery-postgresql": f"db+{pg}",
        "bridge-postgresql": f"resultstore+db+{pg}",
        "bridge-sqlite": f"resultstore+db+sqlite:///{sqlite}",
    }


def make_app(backend: str, queue: str) -> Celery:
    app = Celery("bench", broker=BROKER, backend=backend, set_as_current=False)
    app.conf.task_default_queue = queue

    @app.task(name="b.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="b.tsum", shared=False)
    def tsum(values: list[int]) -> int:
        return sum(values)

    return app


if "BENCH_BACKEND" in os.environ:  # the worker process
    app = make_app(os.environ["BENCH_BACKEND"], os.environ["BENCH_QUEUE"])


def start_worker(backend: str, queue: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BENCH_BACKEND": backend, "BENCH_QUEUE": queue}
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_worker", "worker", "-P", "prefork",
         "-c", "2", "-Q", queue, "-n", f"{queue}@%h", "-l", "INFO", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if " ready." in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(60) or proc.poll() is not None:
        stop(proc)
        raise RuntimeError(f"the worker for {backend} did not start")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(20)


def measure(app: Celery) -> dict[str, str]:
    add, tsum = app.tasks["b.add"], app.tasks["b.tsum"]
    add.delay(0, 0).get(timeout=30)  # warm: connections, the worker's pool
    latencies = []
    for i in range(CALLS):
        began = time.perf_counter()
        add.delay(i, i).get(timeout=30)
        latencies.append(time.perf_counter() - began)
    cuts = statistics.quantiles(latencies, n=10)
    groups, joins, chords = [], [], []
    for _ in range(REPEAT):
        began = time.perf_counter()
        done = group(add.s(i, i) for i in range(200)).delay()
        done.get(timeout=120)
        groups.append(time.perf_counter() - began)
        # A finished group read anew: a fresh GroupResult, nothing cached.
        fresh = app.GroupResult(done.id, [app.AsyncResult(r.id) for r in done.results])
        join = fresh.join_native if fresh.supports_native_join else fresh.join
        began = time.perf_counter()
        join(timeout=30)
        joins.append(time.perf_counter() - began)
        began = time.perf_counter()
        chord(add.s(i, 1) for i in range(200))(tsum.s()).get(timeout=300)
        chords.append(time.perf_counter() - began)
    return {
        "delay().get() p50 / p90": f"{cuts[4] * 1000:.1f} / {cuts[8] * 1000:.1f} ms",
        "200-task group: submit + get": f"{statistics.median(groups):.2f} s",
        "join of a finished 200-group": f"{statistics.median(joins) * 1000:.1f} ms",
        "200-part chord": f"{statistics.median(chords):.2f} s",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=None, help="comma-separated names (all)")
    args = parser.parse_args(argv)
    database = f"rs_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    sqlite = Path(f"/tmp/{database}.db")
    table: dict[str, dict[str, str]] = {}
    try:
        chosen = backends(database, sqlite)
        names = args.backends.split(",") if args.backends else list(chosen)
        for name in names:
            queue = f"bench-{name}-{uuid.uuid4().hex[:6]}"
            worker = start_worker(chosen[name], queue)
            app = make_app(chosen[name], queue)
            try:
                table[name] = measure(app)
            finally:
                stop(worker)
                app.close()
            print(name, table[name], flush=True)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        sqlite.unlink(missing_ok=True)
    columns = list(next(iter(table.values())))
    print("\n| one run, 2-process prefork worker, Redis broker | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(row[c] for c in columns) + " |")
    return 0
