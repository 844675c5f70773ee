"""resultstore against the raw driver doing the same work, in one run, interleaved.

    python bench/run.py                 # full run, prints a Markdown table
    python bench/run.py --write         # ... and writes it into bench/README.md
    python bench/run.py --smoke         # a few iterations of everything, no numbers kept

Each scenario runs resultstore and its baseline alternately, ``--repeat`` times,
and reports medians with min-max. Ratios are resultstore's throughput over the
baseline's (higher is better) or its latency over the baseline's (lower is better).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import celery
import redis
from celery_bench import celery_redis_rows, celery_sql_rows
from common import LARGE, SMALL, Row, meta_json, percentile, rate, table, write_section
from scale import redis_connections, scale_figures, scale_table, sql_connections
from sql_bench import sql_rows
from waits import await_latencies, wait_latencies

import resultstore
from resultstore import AsyncResult, Backend, GroupResult

HERE = Path(__file__).resolve().parent
# --- scenarios ------------------------------------------------------------------------------


def redis_rows(url: str, repeat: int, n: int, waits: int) -> list[Row]:
    backend = Backend(url)
    client = redis.Redis.from_url(url)
    rows: dict[str, Row] = {}

    def row(name: str, unit: str, higher: bool = True) -> Row:
        return rows.setdefault(name, Row(name, unit, higher_is_better=higher))

    for size_name, value in (("small", SMALL), ("large", LARGE)):
        for _ in range(repeat):
            # Fresh ids each round: a store lands on a new key, as a task's result does.
            ids = [f"bench-{uuid.uuid4().hex}" for _ in range(n)]
            keys = [f"celery-task-meta-{t}" for t in ids]
            r = row(f"store one at a time, {size_name}", "stores/s")
            r.ours.append(rate(lambda i: backend.mark_as_done(ids[i], value), n))

            def raw_store(i: int) -> None:
                data = meta_json(ids[i], value)
                pipe = client.pipeline(transaction=False)
                pipe.set(keys[i], data, ex=86400).publish(keys[i], data).execute()

            r.raw.append(rate(raw_store, n))

            r = row(f"get one at a time, {size_name}", "gets/s")
            r.ours.append(rate(lambda i: backend.get_task_meta(ids[i]), n))
            r.raw.append(rate(lambda i: json.loads(client.get(keys[i])), n))

            r = row(f"get_many of 100, {size_name}", "calls/s")
            calls = max(5, n // 20)
            r.ours.append(rate(lambda i: backend.get_many(ids[:100]), calls))
            r.raw.append(rate(lambda i: [json.loads(v) for v in client.mget(keys[:100])], calls))

            members = ids[:1000]
            group = GroupResult("bench-group", [AsyncResult(t, backend) for t in members], backend)
            r = row(f"join of {len(members)} done, {size_name}", "ms", higher=False)
            started = time.perf_counter()
            group.join(timeout=10)
            r.ours.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            [json.loads(v) for v in client.mget(keys[:1000])]
            r.raw.append((time.perf_counter() - started) * 1000)
            for chunk in range(0, len(keys), 500):
                client.delete(*keys[chunk : chunk + 500])

    backend.close()
    client.close()
    return list(rows.values()) + redis_wait_rows(url, repeat, waits)


def redis_wait_rows(url: str, repeat: int, waits: int) -> list[Row]:
    """Wake-up latency: a thread in wait_for and a coroutine in aget, each next to its raw
    driver's pub/sub (redis-py, redis.asyncio), in one run."""
    rows: dict[str, Row] = {}

    def row(name: str, unit: str, higher: bool = True) -> Row:
        return rows.setdefault(name, Row(name, unit, higher_is_better=higher))

    for _ in range(repeat):
        with Backend(url) as waiting:
            ours = wait_latencies(url, lambda t: waiting.wait_for(t, timeout=10), waits)
            # The same wake-ups awaited in an event loop, against raw redis.asyncio pub/sub.
            ours_async = await_latencies(
                url, lambda t: AsyncResult(t, waiting).aget(timeout=10), waits
            )
        raw = wait_latencies(url, None, waits)
        raw_async = await_latencies(url, None, waits)
        for name, mine, theirs in (
            ("wait latency", ours, raw),
            ("await latency (asyncio)", ours_async, raw_async),
        ):
            for label, figure in (("p50", statistics.median), ("p99", _p99)):
                r = row(f"{name} {label}", "ms", higher=False)
                r.ours.append(figure(mine) * 1000)
                r.raw.append(figure(theirs) * 1000)
        # The limit of the transport alone: a bare PUBLISH, nothing stored or decoded.
        bare = wait_latencies(url, None, waits, raw="publish")
        r = row("wait latency p50, raw: a bare PUBLISH", "ms", higher=False)
        r.ours.append(statistics.median(ours) * 1000)
        r.raw.append(statistics.median(bare) * 1000)
    return list(rows.values())


def _p99(values: list[float]) -> float:
    return percentile(values, 0.99)


def memory_rows(repeat: int, n: int) -> list[Row]:
    backend = Backend(f"memory://bench-{uuid.uuid4().hex}")
    store: dict[str, bytes] = {}
    rows = [
        Row("memory: store one at a time, small", "stores/s"),
        Row("memory: get one at a time, small", "gets/s"),
    ]
    for _ in range(repeat):
        ids = [f"m-{uuid.uuid4().hex}" for _ in range(n)]
        rows[0].ours.append(rate(lambda i: backend.mark_as_done(ids[i], SMALL), n))
        rows[0].raw.append(rate(lambda i: store.__setitem__(ids[i], meta_json(ids[i], SMALL)), n))
        rows[1].ours.append(rate(lambda i: backend.get_task_meta(ids[i]), n))
        rows[1].raw.append(rate(lambda i: json.loads(store[ids[i]]), n))
    backend.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres", default="postgres@127.0.0.1:5432/test")
    parser.add_argument("--mysql", default="root@127.0.0.1:3306/test")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("-n", type=int, default=1000, help="operations per measurement")
    parser.add_argument("--waits", type=int, default=100, help="wake-ups per latency measurement")
    parser.add_argument("--smoke", action="store_true", help="a tiny run, to prove it works")
    parser.add_argument("--write", action="store_true", help="write the table into bench/README.md")
    parser.add_argument(
        "--waits-only", action="store_true", help="only Redis wake-up latency (threads, asyncio)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.repeat, args.n, args.waits = 1, 100, 3
    if args.waits_only:
        waits_table = table(redis_wait_rows(args.redis, args.repeat, args.waits))
        print(waits_table)
        if args.write:
            info = (
                f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()}, "
                f"{os.cpu_count()} cores, Python {platform.python_version()}, "
                f"redis-py {redis.__version__}; {args.repeat} interleaved repetitions of "
                f"{args.waits} wake-ups (`bench/run.py --waits-only --write`)."
            )
            write_section("<!-- waits -->", "<!-- /waits -->", f"{info}\n\n{waits_table}")
        return
    sizes = (args.repeat, args.n, args.waits)
    rows = memory_rows(args.repeat, args.n)
    rows += redis_rows(args.redis, args.repeat, args.n, args.waits)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/bench.db"
        rows += sql_rows("SQLite", f"db+sqlite:///{path}", "sqlite", path, *sizes)
    pg = f"postgresql://{args.postgres}"
    rows += sql_rows("PostgreSQL", f"db+{pg}", "postgresql", pg, *sizes)
    user, _, rest = args.mysql.partition("@")
    host, _, database = rest.partition("/")
    mysql = {
        "host": host.split(":")[0],
        "port": int(host.split(":")[1]),
        "user": user,
        "database": database,
    }
    rows += sql_rows("MariaDB", f"db+mysql://{args.mysql}", "mysql", json.dumps(mysql), *sizes)
    # What a user would pick instead, against the same raw baselines. Celery's
    # database backend does tens of calls a second: fewer of them say as much.
    few = (args.repeat, min(args.n, 200))
    theirs = celery_redis_rows(args.redis, *sizes)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/celery.db"
        Backend(f"db+sqlite:///{path}").close()  # the same tables, for the raw baseline
        theirs += celery_sql_rows("SQLite", f"db+sqlite:///{path}", "sqlite", path, *few)
    theirs += celery_sql_rows("PostgreSQL", f"db+{pg}", "postgresql", pg, *few)
    out = f"{table(rows)}\n\n{table(theirs, f'Celery {celery.__version__}')}"
    print(out)
    many = 20 if args.smoke else 1000
    gets = 1000 if args.smoke else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        scale = scale_table(
            [
                scale_figures("Redis", args.redis, {}, many, gets, redis_connections(args.redis)),
                scale_figures("SQLite", f"db+sqlite:///{tmp}/scale.db", {}, many, gets),
                scale_figures("PostgreSQL", f"db+{pg}", {}, many, gets, sql_connections(pg)),
                scale_figures("MariaDB", f"db+mysql://{args.mysql}", {}, many, gets),
            ]
        )
    print(f"\n{scale}")
    if args.write:
        info = (
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"resultstore {resultstore.__version__}, redis-py {redis.__version__}, "
            f"Redis {redis.Redis.from_url(args.redis).info()['redis_version']}; "
            f"{args.repeat} interleaved repetitions of {args.n} operations "
            f"({args.waits} wake-ups per latency figure; {min(args.n, 200)} operations for "
            "Celery's database backend)."
        )
        write_section("<!-- results -->", "<!-- /results -->", f"{info}\n\n{out}")
        write_section("<!-- scale -->", "<!-- /scale -->", scale)


if __name__ == "__main__":
    main()
