"""Scale: many waiters in one process, a join completing while it runs, memory over many gets.

These have no raw-driver twin that does the same work, so they are reported
as figures of their own (``scale_table``), one row per backend.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis
import sqlalchemy as sa
from common import SMALL, percentile

from resultstore import AsyncResult, Backend, GroupResult

# Stores ids read from stdin, one per line, printing the monotonic time of each store
# call (the clock is shared by the processes of one machine). "-" ends a batch.
STORER = """
import sys, time
from resultstore import Backend
backend = Backend(sys.argv[1], **eval(sys.argv[2]))
batch = []
for line in sys.stdin:
    line = line.strip()
    if line != "-":
        batch.append(line)
        continue
    times = []
    for task_id in batch:
        times.append(time.monotonic())
        backend.mark_as_done(task_id, 1)
    print(" ".join(map(repr, times)), flush=True)
    batch = []
"""


@dataclass
class Scale:
    backend: str
    waiters: int
    connections: str  # server connections the waiting process held, or "-"
    kib_per_waiter: float
    wake_p50_ms: float
    wake_p99_ms: float
    join_lag_ms: float  # from the last store to join() returning, 1,000 members
    gets: int
    rss_growth_kib: float  # resident memory after `gets` gets, over before (warm)


class Storer:
    """A second process that stores on demand and says when each store began."""

    def __init__(self, url: str, settings: dict[str, object]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", STORER, url, repr(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def store(self, ids: list[str]) -> list[float]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("".join(f"{t}\n" for t in ids) + "-\n")
        self.proc.stdin.flush()
        return [float(t) for t in self.proc.stdout.readline().split()]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def rss_kib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * 4.0  # 4 KiB pages


def waiters_figures(
    backend: Backend, storer: Storer, count: int, connections: Callable[[], int] | None
) -> tuple[str, float, float, float]:
    """``count`` threads blocked in get(), all woken by one batch of stores in another process."""
    ids = [f"scale-{uuid.uuid4().hex}" for _ in range(count)]
    woke: dict[str, float] = {}
    ready = threading.Barrier(count + 1)

    def wait(task_id: str) -> None:
        result = AsyncResult(task_id, backend)
        ready.wait()
        result.get(timeout=60)
        woke[task_id] = time.monotonic()

    before_conn = connections() if connections else 0
    before = rss_kib()
    threads = [threading.Thread(target=wait, args=(t,), daemon=True) for t in ids]
    for thread in threads:
        thread.start()
    ready.wait()
    deadline = time.monotonic() + 60  # every waiter subscribed before anything is stored
    while len(backend.waiting_ids()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    used = f"{connections() - before_conn}" if connections else "-"
    per_waiter = (rss_kib() - before) / count
    started = dict(zip(ids, storer.store(ids), strict=True))
    for thread in threads:
        thread.join(60)
    lags = [woke[t] - started[t] for t in ids]
    return used, per_waiter, statistics.median(lags) * 1000, percentile(lags, 0.99) * 1000


def join_lag(backend: Backend, storer: Storer, members: int) -> float:
    """A 1,000-member group stored by another process while this one joins it."""
    ids = [f"join-{uuid.uuid4().hex}" for _ in range(members)]
    group = GroupResult(f"g-{uuid.uuid4().hex}", [AsyncResult(t, backend) for t in ids], backend)
    done: list[float] = []
    joiner = threading.Thread(
        target=lambda: (group.join(timeout=120), done.append(time.monotonic())), daemon=True
    )
    joiner.start()
    last = storer.store(ids)[-1]
    joiner.join(120)
    return (done[0] - last) * 1000


def rss_growth(backend: Backend, gets: int) -> float:
    task_id = f"rss-{uuid.uuid4().hex}"
    backend.mark_as_done(task_id, SMALL)
    for _ in range(min(gets, 1000)):  # warm caches and pools first
        backend.get_task_meta(task_id)
    before = rss_kib()
    for _ in range(gets):
        backend.get_task_meta(task_id)
    return rss_kib() - before


def scale_figures(
    name: str,
    url: str,
    settings: dict[str, object],
    waiters: int,
    gets: int,
    connections: Callable[[], int] | None = None,
) -> Scale:
    storer = Storer(url, settings)
    try:
        with Backend(url, **settings) as backend:  # type: ignore[arg-type]
            used, per_waiter, p50, p99 = waiters_figures(backend, storer, waiters, connections)
            lag = join_lag(backend, storer, 1000)
            growth = rss_growth(backend, gets)
    finally:
        storer.close()
    return Scale(name, waiters, used, per_waiter, p50, p99, lag, gets, growth)


def redis_connections(url: str) -> Callable[[], int]:
    """Clients connected to the Redis server (the count's own connection included)."""
    client = redis.Redis.from_url(url)
    return lambda: len(client.client_list())


def sql_connections(url: str) -> Callable[[], int]:
    """Sessions connected to the PostgreSQL database of ``url``."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    return count


def scale_table(figures: list[Scale]) -> str:
    lines = [
        "| backend | waiters | server connections they used | memory per waiter | "
        "wake-up p50 / p99 | join of 1,000 completing: last store to return | "
        "resident memory over a loop of gets |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.backend} | {f.waiters:,} | {f.connections} | {f.kib_per_waiter:.1f} KiB | "
            f"{f.wake_p50_ms:.1f} / {f.wake_p99_ms:.1f} ms | {f.join_lag_ms:.1f} ms | "
            f"{f.rss_growth_kib:+,.0f} KiB after {f.gets:,} |"
        )
    return "\n".join(lines)
