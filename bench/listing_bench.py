"""Listing (issue 18): what a dashboard page costs on 100,000 stored results.

    python bench/listing_bench.py            # SQLite, PostgreSQL, MariaDB, memory://
    python bench/listing_bench.py --write    # ... and writes the table into bench/README.md
    python bench/listing_bench.py --smoke    # 2,000 results, 2 repetitions: proves it runs

Each backend gets a fresh store (a table of its own on the SQL servers, dropped
after) loaded with the same results: their ``date_done`` spread over the last 24
hours, 10% FAILURE, 1% unfinished (STARTED or PROGRESS), a quarter with a task
name (``result_extended``; each of 5 names on 5% of all). Then the calls a
dashboard makes, each timed alone, median of ``--repeat`` runs in ms:
the first page of 50; a page deep in (the cursor of the middle result); a page of
FAILUREs; a page of one task name; a page of an id prefix; the counts by state over
the 24 hours; the same in 24 buckets (the chart); and the dashboard page itself:
first page + both counts, one after the other.

Another backend is one line of ``TARGETS`` (a label, a URL, and how to load it: by
the plugin's own store hook unless the engine has a faster bulk load).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from common import write_section

import resultstore
from resultstore import FAILURE, READY_STATES, STARTED, SUCCESS, Backend, TaskMeta
from resultstore.listing import Position
from resultstore_db import _engine

NAMES = [f"tasks.{name}" for name in ("report", "email", "resize", "sync", "bill")]
ERROR = {"exc_type": "ValueError", "exc_message": ["bad input"], "exc_module": "builtins"}
PAGE = 50
HOUR = timedelta(hours=1)


def results(n: int, end: datetime) -> list[TaskMeta]:
    """``n`` results, ``date_done`` spread over the 24 hours before ``end``, newest last."""
    step = timedelta(days=1) / n
    metas = []
    for i in range(n):
        state, value = (FAILURE, ERROR) if i % 10 == 3 else (SUCCESS, {"rows": i, "ok": True})
        if i % 100 == 7:
            state, value = STARTED, {"pid": 4242, "hostname": "worker-1"}
        elif i % 100 == 57:
            state, value = "PROGRESS", {"current": i % 40, "total": 40}
        name = NAMES[i // 4 % len(NAMES)] if i % 4 == 1 else None
        metas.append(
            TaskMeta(
                hashlib.md5(str(i).encode()).hexdigest(),  # ids in no order of their dates
                state,
                value,
                date_done=end - timedelta(days=1) + i * step,
                name=name,
                extended=name is not None,
                worker="worker-1" if name else None,
            )
        )
    return metas


# --- loading -------------------------------------------------------------------------------


def store_each(backend: Backend, metas: Sequence[TaskMeta]) -> None:
    """Through the plugin's store hook, each meta as it is (with its date)."""
    store = backend.plugin.store_result
    for meta in metas:
        store(meta=meta, ttl=None, overwrite=True)


def sql_bulk(backend: Backend, metas: Sequence[TaskMeta]) -> None:
    """resultstore-db: rows built by the plugin's own row code, one executemany per
    10,000 (a store each would take minutes), then the statistics autovacuum and InnoDB
    keep (SQLite's planner goes without, as most SQLite databases do)."""
    from resultstore_db._rows import row_values

    plugin = backend.plugin
    task = plugin.tables.task
    rows = [{"task_id": m.task_id, **row_values(plugin.codec, m)} for m in metas]
    with plugin.engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(task.insert(), rows[start : start + 10_000])
    dialect = plugin.dialect
    if dialect == "postgresql":
        with plugin.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                sa.text(f"VACUUM ANALYZE {task.name}")
            )
    elif dialect in ("mysql", "mariadb"):
        with plugin.engine.begin() as conn:
            conn.execute(sa.text(f"ANALYZE TABLE {task.name}"))


@contextmanager
def sql_table(url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A task table of its own on a shared server, dropped after."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    options = {"database_table_names": {"task": name, "group": f"{name}_groups"}}
    try:
        yield url, {"options": options}
    finally:
        engine = sa.create_engine(_engine.normalize(url.removeprefix("db+")))
        with engine.begin() as conn:
            for table in (name, f"{name}_groups"):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


@contextmanager
def sqlite_file() -> Iterator[tuple[str, dict[str, Any]]]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"db+sqlite:///{tmp}/listing.db", {}


@contextmanager
def fresh(url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A URL whose store starts empty (memory://NAME)."""
    yield f"{url}bench-{uuid.uuid4().hex[:10]}", {}


@dataclass(frozen=True)
class Target:
    label: str
    store: Callable[[argparse.Namespace], Any]  # a context manager: (url, Backend kwargs)
    load: Callable[[Backend, Sequence[TaskMeta]], None] = store_each


TARGETS = [
    Target("SQLite", lambda a: sqlite_file(), sql_bulk),
    Target("PostgreSQL", lambda a: sql_table(f"db+postgresql://{a.postgres}"), sql_bulk),
    Target("MariaDB", lambda a: sql_table(f"db+mysql://{a.mysql}"), sql_bulk),
    Target("memory://", lambda a: fresh("memory://")),
]


# --- the dashboard's calls -----------------------------------------------------------------


def scenarios(metas: Sequence[TaskMeta], end: datetime) -> dict[str, Callable[[Backend], Any]]:
    """What a dashboard asks, as calls on a backend (the cursor of the middle result is
    the same on every engine: a finished one's position is its date and id)."""
    finished = [m for m in metas if m.status in READY_STATES]
    finished.sort(key=lambda m: Position.of(m).key(), reverse=True)
    middle = Position.of(finished[len(metas) // 2]).encode()
    since = end - timedelta(days=1)
    prefix = metas[len(metas) // 3].task_id[:4]  # 1 in 65,536 ids: a few

    def dashboard(backend: Backend) -> None:
        backend.list_results(limit=PAGE)
        backend.count_results(since=since)
        backend.count_results(since=since, until=end, buckets=24)

    return {
        "first page of 50": lambda b: b.list_results(limit=PAGE),
        "page deep in (cursor of the middle result)": lambda b: b.list_results(
            limit=PAGE, cursor=middle
        ),
        "page of FAILUREs": lambda b: b.list_results(limit=PAGE, states={FAILURE}),
        "page of one task name (5%)": lambda b: b.list_results(limit=PAGE, name=NAMES[0]),
        "page of an id prefix": lambda b: b.list_results(limit=PAGE, id_prefix=prefix),
        "counts by state, 24 h": lambda b: b.count_results(since=since),
        "counts in 24 buckets of 1 h": lambda b: b.count_results(
            since=since, until=end, buckets=24
        ),
        "dashboard: first page + both counts": dashboard,
    }


def check(backend: Backend, metas: Sequence[TaskMeta], end: datetime) -> None:
    """The answers are right, so that the figures are of the real work."""
    counts = backend.count_results(since=end - timedelta(days=1), until=end, buckets=24)
    assert sum(map(sum, counts.values())) == sum(m.status in READY_STATES for m in metas)
    first = backend.list_results(limit=PAGE)
    assert len(first.items) == PAGE
    assert first.items[0].status not in READY_STATES


def measure(
    target: Target, args: argparse.Namespace, metas: list[TaskMeta], end: datetime
) -> dict[str, float]:
    with target.store(args) as (url, kwargs), Backend(url, **kwargs) as backend:
        started = time.perf_counter()
        target.load(backend, metas)
        print(
            f"{target.label}: {len(metas):,} loaded in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        check(backend, metas, end)
        calls = scenarios(metas, end)
        times: dict[str, list[float]] = {name: [] for name in calls}
        for call in calls.values():
            call(backend)  # warm: compiled statements, caches, the first connection
        for _ in range(args.repeat):  # rounds over every scenario, not one scenario at a time
            for name, call in calls.items():
                started = time.perf_counter()
                call(backend)
                times[name].append((time.perf_counter() - started) * 1000)
        return {name: statistics.median(values) for name, values in times.items()}


def table(figures: dict[str, dict[str, float]]) -> str:
    labels = list(figures)
    names = list(next(iter(figures.values())))
    lines = [
        f"| scenario (ms, median) | {' | '.join(labels)} |",
        f"|---|{'---|' * len(labels)}",
    ]
    for name in names:
        cells = " | ".join(f"{figures[label][name]:,.1f}" for label in labels)
        bold = "**" if name.startswith("dashboard") else ""
        lines.append(f"| {bold}{name}{bold} | {cells} |")
    return "\n".join(lines)


def arguments(doc: str | None, smoke_repeat: int) -> tuple[argparse.Namespace, datetime]:
    """The command line this benchmark and dashboard_bench.py share, and the end of the
    24 hours the results' dates are spread over."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", default="postgres@127.0.0.1:5432/test")
    parser.add_argument("--mysql", default="root@127.0.0.1:3306/test")
    parser.add_argument("-n", type=int, default=100_000, help="results stored")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", help="comma-separated labels of TARGETS to run")
    parser.add_argument("--smoke", action="store_true", help="a tiny run, to prove it works")
    parser.add_argument("--write", action="store_true", help="write the table into bench/README.md")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.repeat = 2000, smoke_repeat
    end = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    return args, end


def main() -> None:
    args, end = arguments(__doc__, smoke_repeat=2)
    metas = results(args.n, end)
    chosen = [t for t in TARGETS if not args.only or t.label in args.only.split(",")]
    figures = {t.label: measure(t, args, metas, end) for t in chosen}
    out = table(figures)
    print(out)
    if args.write:
        info = (
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"resultstore {resultstore.__version__}, SQLAlchemy {sa.__version__}; "
            f"{args.n:,} results, median of {args.repeat} rounds "
            f"(`bench/listing_bench.py --write`); load average {os.getloadavg()[0]:.1f} "
            "when it ended."
        )
        write_section("<!-- listing -->", "<!-- /listing -->", f"{info}\n\n{out}")


if __name__ == "__main__":
    main()
