"""resultstore-db against the raw DB-API driver running the same SQL (sqlite3, psycopg, pymysql)."""

from __future__ import annotations

import json
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pymysql
from common import LARGE, SMALL, Row, percentile, rate

from resultstore import AsyncResult, Backend, GroupResult

_COLUMNS = "task_id, status, result, date_done, traceback, children"
# Celery's id column takes its value from a sequence where the engine has them.
_UPSERT = (
    f"INSERT INTO celery_taskmeta ({{id}}{_COLUMNS}) VALUES ({{nextval}}{{p}}) "
    "ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, result = excluded.result, "
    "date_done = excluded.date_done, traceback = excluded.traceback "
    "WHERE celery_taskmeta.status NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')"
)
_MYSQL_UPSERT = (
    f"INSERT INTO celery_taskmeta (id, {_COLUMNS}) "
    "VALUES (NEXT VALUE FOR task_id_sequence, %s, %s, %s, %s, %s, %s) "
    "ON DUPLICATE KEY UPDATE status = VALUES(status), result = VALUES(result), "
    "date_done = VALUES(date_done)"
)


class Raw:
    """The same work through the bare driver: upsert + commit, SELECT + json.loads."""

    def __init__(self, kind: str, dsn: str, channel: str = "celery_taskmeta") -> None:
        self.kind = kind
        self.channel = channel  # where a PostgreSQL store notifies
        if kind == "sqlite":
            self.conn: Any = sqlite3.connect(dsn, timeout=30)
            self.mark, self.upsert = "?", _UPSERT.format(id="", nextval="", p=", ".join("?" * 6))
        elif kind == "postgresql":
            self.conn = psycopg.connect(dsn, autocommit=True)
            marks = ", ".join(["%s"] * 6)
            nextval = "nextval('task_id_sequence'), "
            self.mark, self.upsert = "%s", _UPSERT.format(id="id, ", nextval=nextval, p=marks)
        else:
            self.conn = pymysql.connect(**json.loads(dsn), autocommit=True)
            self.mark, self.upsert = "%s", _MYSQL_UPSERT

    def store(self, task_id: str, value: Any) -> None:
        row = (
            task_id,
            "SUCCESS",
            json.dumps(value).encode(),
            datetime.now(timezone.utc).replace(tzinfo=None),
            None,
            None,
        )
        cur = self.conn.cursor()
        if self.kind == "postgresql":  # as the plugin does: the notify in the same statement
            cur.execute(
                f"WITH w AS ({self.upsert} RETURNING task_id) "
                f"SELECT pg_notify('{self.channel}', task_id) FROM w",
                row,
            )
        else:
            cur.execute(self.upsert, row)
        if self.kind == "sqlite":
            self.conn.commit()

    def get(self, task_id: str) -> Any:
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT status, result FROM celery_taskmeta WHERE task_id = {self.mark}", (task_id,)
        )
        return json.loads(bytes(cur.fetchone()[1]))

    def get_many(self, task_ids: list[str]) -> list[Any]:
        cur = self.conn.cursor()
        if self.kind == "postgresql":
            cur.execute(
                "SELECT task_id, result FROM celery_taskmeta WHERE task_id = ANY(%s)", (task_ids,)
            )
        else:
            marks = ", ".join([self.mark] * len(task_ids))
            cur.execute(
                f"SELECT task_id, result FROM celery_taskmeta WHERE task_id IN ({marks})", task_ids
            )
        return [json.loads(bytes(r[1])) for r in cur.fetchall()]


def sql_rows(
    label: str, url: str, kind: str, dsn: str, repeat: int, n: int, waits: int
) -> list[Row]:
    backend = Backend(url)  # creates the tables
    raw = Raw(kind, dsn)
    rows: dict[str, Row] = {}

    def row(name: str, unit: str, higher: bool = True) -> Row:
        return rows.setdefault(
            f"{label}: {name}", Row(f"{label}: {name}", unit, higher_is_better=higher)
        )

    for size_name, value in (("small", SMALL), ("large", LARGE)):
        for _ in range(repeat):
            ids = [f"bench-{uuid.uuid4().hex}" for _ in range(n)]
            raw_ids = [f"raw-{uuid.uuid4().hex}" for _ in range(n)]
            r = row(f"store one at a time, {size_name}", "stores/s")
            r.ours.append(rate(lambda i: backend.mark_as_done(ids[i], value), n))
            r.raw.append(rate(lambda i: raw.store(raw_ids[i], value), n))
            r = row(f"get one at a time, {size_name}", "gets/s")
            r.ours.append(rate(lambda i: backend.get_task_meta(ids[i]), n))
            r.raw.append(rate(lambda i: raw.get(raw_ids[i]), n))
            r = row(f"get_many of 100, {size_name}", "calls/s")
            calls = max(5, n // 20)
            r.ours.append(rate(lambda i: backend.get_many(ids[:100]), calls))
            r.raw.append(rate(lambda i: raw.get_many(raw_ids[:100]), calls))
            members = ids[:1000]
            group = GroupResult("bench-group", [AsyncResult(t, backend) for t in members], backend)
            r = row(f"join of {len(members)} done, {size_name}", "ms", higher=False)
            started = time.perf_counter()
            group.join(timeout=30)
            r.ours.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            raw.get_many(raw_ids[:1000])
            r.raw.append((time.perf_counter() - started) * 1000)
            cur = raw.conn.cursor()
            cur.execute(
                "DELETE FROM celery_taskmeta WHERE task_id LIKE 'bench-%' OR task_id LIKE 'raw-%'"
            )
            if kind == "sqlite":
                raw.conn.commit()

    if kind in ("postgresql", "sqlite"):
        for _ in range(repeat):
            ours = wait_latencies(url, kind, dsn, "ours", waits)
            r = row("wait latency p50", "ms", higher=False)
            r.ours.append(statistics.median(ours) * 1000)
            r99 = row("wait latency p99", "ms", higher=False)
            r99.ours.append(percentile(ours, 0.99) * 1000)
            if kind == "postgresql":
                # Like with like: the raw store is the same UPSERT with its NOTIFY in
                # one statement, the raw waiter a LISTEN session woken by it.
                theirs = wait_latencies(url, kind, dsn, "raw", waits)
                r.raw.append(statistics.median(theirs) * 1000)
                r99.raw.append(percentile(theirs, 0.99) * 1000)
                # The limit of the transport alone: a bare NOTIFY, nothing stored.
                bare = wait_latencies(url, kind, dsn, "notify", waits)
                rb = row("wait latency p50, raw: a bare NOTIFY", "ms", higher=False)
                rb.ours.append(statistics.median(ours) * 1000)
                rb.raw.append(statistics.median(bare) * 1000)
    backend.close()
    raw.conn.close()
    return list(rows.values())


STORER = """
import sys, time
import psycopg
mode, url, dsn, here = sys.argv[1:5]
sys.path.insert(0, here)
from sql_bench import Raw
from resultstore import Backend
backend = Backend(url)
conn = psycopg.connect(dsn, autocommit=True) if mode == "notify" else None
raw = Raw("postgresql", dsn, channel="bench_raw") if mode == "raw" else None
for line in sys.stdin:
    task_id = line.strip()
    started = time.monotonic()
    if mode == "ours":
        backend.mark_as_done(task_id, 1)
    elif mode == "raw":
        raw.store(task_id, 1)
    else:
        conn.execute("SELECT pg_notify('bench_raw', %s)", (task_id,))
    print(started, flush=True)
"""


def wait_latencies(url: str, kind: str, dsn: str, mode: str, n: int) -> list[float]:
    """A waiter here, a storer in another process; latency on the shared monotonic clock.

    ``mode``: ``ours`` (mark_as_done, a waiter in wait_for), ``raw`` (the same UPSERT +
    NOTIFY through psycopg, a LISTEN session), ``notify`` (a bare NOTIFY)."""
    storer = subprocess.Popen(
        [sys.executable, "-c", STORER, mode, url, dsn, str(Path(__file__).resolve().parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert storer.stdin is not None
    assert storer.stdout is not None
    latencies = []
    with Backend(url) as backend:
        listener = psycopg.connect(dsn, autocommit=True) if mode != "ours" else None
        if listener is not None:
            listener.execute("LISTEN bench_raw")
        for _ in range(n):
            task_id = f"wait-{uuid.uuid4().hex}"
            woke: list[float] = []
            wait: Callable[[], None]
            if listener is None:

                def wait(t: str = task_id) -> None:
                    backend.wait_for(t, timeout=10)
                    woke.append(time.monotonic())

            else:

                def wait() -> None:
                    for _note in listener.notifies(timeout=10, stop_after=1):
                        woke.append(time.monotonic())

            waiter = threading.Thread(target=wait)
            waiter.start()
            if listener is None and kind == "postgresql":
                while task_id not in backend.waiting_ids():
                    time.sleep(0.0005)
            time.sleep(0.002)  # let the waiter block before the store is asked for
            storer.stdin.write(task_id + "\n")
            storer.stdin.flush()
            started = float(storer.stdout.readline())
            waiter.join(10)
            latencies.append(woke[0] - started)
            backend.forget(task_id)
        if listener is not None:
            listener.close()
    storer.stdin.close()
    storer.wait(10)
    return latencies
