"""Listing on Redis (issue 18): what each listing mode costs a store, and what a listing costs.

    python bench/redis_listing_bench.py            # full run, prints the tables
    python bench/redis_listing_bench.py --write    # ... and writes them into bench/README.md
    python bench/redis_listing_bench.py --smoke    # a tiny run, to prove it works

Stores: resultstore without the index (the default, listing by SCAN) and with
``redis_list_index=True``, each against raw redis-py doing a pipelined SET + PUBLISH of
the same Celery-format JSON (bench/run.py's baseline), interleaved ``--repeat`` times.

Listings: ``--results`` results (100,000) stored with chosen dates over the last 24
hours (85% SUCCESS, 10% FAILURE, 4% STARTED, 1% PROGRESS; 100 task names), once per
mode in a database of their own (``--redis``, db 1 by default: SCAN walks the whole
database, so anything else in it would be measured too), then each query
``--list-repeat`` times. The keys are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from common import LARGE, SMALL, Row, meta_json, rate, table, write_section

import resultstore
from resultstore import FAILURE, STARTED, SUCCESS, Backend, TaskMeta
from resultstore.listing import Position

MODES = {"SCAN": {}, "index": {"redis_list_index": True}}
# The bench measures the walk, not the refusal: a database of 100,000 results is at
# the default bound, and anything else in it would pass it.
SCAN_LIMIT = 10_000_000
TTL = 86_400.0  # result_expires' default
NAMES = 100


def keyprefix() -> str:
    return f"bench-listing-{uuid.uuid4().hex[:8]}:"


def options(prefix: str, mode: str) -> dict[str, Any]:
    return {
        "result_backend_transport_options": {"global_keyprefix": prefix},
        "redis_list_scan_limit": SCAN_LIMIT,
        **MODES[mode],
    }


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


# --- stores -------------------------------------------------------------------------------


def label(mode: str) -> str:
    return "without the index (SCAN mode)" if mode == "SCAN" else "with the index"


def raw_store(client: redis.Redis, key: str, task_id: str, value: Any) -> None:
    """bench/run.py's baseline: the same Celery-format JSON, SET + PUBLISH in one pipeline."""
    data = meta_json(task_id, value)
    client.pipeline(transaction=False).set(key, data, ex=int(TTL)).publish(key, data).execute()


def interleaved(
    client: redis.Redis,
    backends: dict[str, Backend],
    rows: dict[str, Row],
    name: Callable[[str], str],
    value: Any,
    n: int,
    raw_prefix: str,
) -> None:
    """One round: the raw stores, then each backend's, ``n`` fresh ids each."""
    ids = [f"bench-{uuid.uuid4().hex}" for _ in range(n)]
    keys = [f"{raw_prefix}celery-task-meta-{t}" for t in ids]
    raw = rate(lambda i: raw_store(client, keys[i], ids[i], value), n)
    for mode, backend in backends.items():
        row = rows.setdefault(mode, Row(name(mode), "stores/s"))
        fresh = [f"bench-{uuid.uuid4().hex}" for _ in range(n)]
        row.ours.append(rate(lambda i, b=backend: b.mark_as_done(fresh[i], value), n))
        row.raw.append(raw)


def store_rows(url: str, repeat: int, n: int) -> list[Row]:
    """Stores into an empty store, each mode against the raw driver, interleaved."""
    client = redis.Redis.from_url(url)
    prefixes = {mode: keyprefix() for mode in MODES}
    raw_prefix = keyprefix()
    backends = {mode: Backend(url, options=options(prefixes[mode], mode)) for mode in MODES}
    found: list[Row] = []
    try:
        for size, value in (("small", SMALL), ("large", LARGE)):
            rows: dict[str, Row] = {}
            for _ in range(repeat):
                interleaved(
                    client,
                    backends,
                    rows,
                    lambda mode, size=size: f"store one at a time, {size}, {label(mode)}",
                    value,
                    n,
                    raw_prefix,
                )
            found += rows.values()
    finally:
        for backend in backends.values():
            backend.close()
        for prefix in (*prefixes.values(), raw_prefix):
            delete_prefix(client, prefix)
        client.close()
    return found


def server_time(url: str, n: int, tries: int = 10) -> dict[str, float | None]:
    """The server's time per store script of each mode (EVALSHA's usec over its calls in
    INFO commandstats), small results into an empty store: unlike throughput, the
    client machine's load does not change it. A window counts only if the server ran
    exactly our ``n`` scripts in it (another client's would be in the figure)."""
    client = redis.Redis.from_url(url)
    figures: dict[str, float | None] = {}
    for mode in MODES:
        prefix = keyprefix()
        samples = []
        with Backend(url, options=options(prefix, mode)) as backend:
            backend.mark_as_done("warm-up", 0)  # the script is loaded
            for _ in range(tries):
                ids = [f"bench-{uuid.uuid4().hex}" for _ in range(n)]
                before = client.info("commandstats").get("cmdstat_evalsha", {})
                for task_id in ids:
                    backend.mark_as_done(task_id, SMALL)
                after = client.info("commandstats")["cmdstat_evalsha"]
                if after["calls"] - before.get("calls", 0) == n:
                    samples.append((after["usec"] - before.get("usec", 0)) / n)
                if len(samples) == 3:
                    break
        delete_prefix(client, prefix)
        figures[mode] = statistics.median(samples) if samples else None
    client.close()
    return figures


# --- listings -----------------------------------------------------------------------------


def dataset(count: int, now: datetime) -> list[TaskMeta]:
    rnd = random.Random(18)
    metas = []
    for i in range(count):
        roll = rnd.random()
        state = (
            SUCCESS
            if roll < 0.85
            else FAILURE
            if roll < 0.95
            else STARTED
            if roll < 0.99
            else "PROGRESS"
        )
        done = now - timedelta(seconds=rnd.uniform(0, 86_400)) if roll < 0.95 else None
        metas.append(
            TaskMeta(
                f"{rnd.getrandbits(128):032x}",
                status=state,
                result=SMALL,
                date_done=done,
                extended=True,
                name=f"tasks.t{i % NAMES}",
            )
        )
    return metas


def load(backend: Backend, metas: list[TaskMeta]) -> float:
    """Store ``metas`` through the plugin's store hook (the real store path, with the
    dates chosen here); returns the seconds it took."""
    store = backend.plugin.store_result  # type: ignore[attr-defined]
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda m: store(meta=m, ttl=TTL, overwrite=True), metas, chunksize=500))
    return time.perf_counter() - started


def queries(now: datetime, deep: str, count: int) -> dict[str, Callable[[Backend], Any]]:
    day = {"since": now - timedelta(hours=24), "until": now + timedelta(seconds=1)}
    return {
        "first page (50)": lambda b: b.list_results(limit=50),
        f"a deep page (50 after the {count // 2:,}th)": lambda b: b.list_results(
            limit=50, cursor=deep
        ),
        "FAILURE only, first page (50)": lambda b: b.list_results(states={FAILURE}, limit=50),
        "last hour's failures, first page (50)": lambda b: b.list_results(
            states={FAILURE}, since=now - timedelta(hours=1), limit=50
        ),
        "by task name (1% match), first page (50)": lambda b: b.list_results(
            name="tasks.t7", limit=50
        ),
        "counts by state": lambda b: b.count_results(),
        "counts by state in 24 hourly buckets": lambda b: b.count_results(buckets=24, **day),
    }


def listing_figures(
    url: str, count: int, repeat: int, store_repeat: int, n: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, float]], list[Row]]:
    """Per query and mode the times in ms; per mode the load time and memory; the rows
    of stores into the loaded store (each mode against the raw driver, interleaved)."""
    client = redis.Redis.from_url(url)
    now = datetime.now(timezone.utc)
    metas = dataset(count, now)
    order = sorted(metas, key=lambda m: Position.of(m).key(), reverse=True)
    deep = Position.of(order[min(count // 2, count - 1) - 1]).encode()
    times: dict[str, dict[str, list[float]]] = {}
    facts: dict[str, dict[str, float]] = {}
    first_pages = []
    rows: dict[str, Row] = {}
    for mode in MODES:
        prefix = keyprefix()
        print(f"loading {count:,} results ({mode})", file=sys.stderr)
        before = client.info("memory")["used_memory"]
        try:
            with Backend(url, options=options(prefix, mode), extended=True) as backend:
                seconds = load(backend, metas)
                used = client.info("memory")["used_memory"] - before
                first_pages.append([m.task_id for m in backend.list_results(limit=50).items])
                for name, query in queries(now, deep, count).items():
                    for _ in range(repeat):
                        started = time.perf_counter()
                        query(backend)
                        elapsed = (time.perf_counter() - started) * 1000
                        times.setdefault(name, {}).setdefault(mode, []).append(elapsed)
                for _ in range(store_repeat):
                    interleaved(
                        client,
                        {mode: backend},
                        rows,
                        lambda mode: f"store one at a time, small, {label(mode)}, {count:,} stored",
                        SMALL,
                        n,
                        f"{prefix}raw:",
                    )
            facts[mode] = {"load": seconds, "memory": used}
        finally:
            delete_prefix(client, prefix)
    client.close()
    # Both modes list the same results in the same order, or the figures mean nothing.
    assert first_pages[0] == first_pages[1] == [m.task_id for m in order[:50]], first_pages
    return times, facts, list(rows.values())


def listing_table(
    times: dict[str, dict[str, list[float]]], facts: dict[str, dict[str, float]], count: int
) -> str:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):,.1f} ms ({min(values):,.1f}-{max(values):,.1f})"

    lines = [
        f"| on {count:,} results | by SCAN (default) | from the index (`redis_list_index=True`) |",
        "|---|---|---|",
    ]
    for name, by_mode in times.items():
        lines.append(f"| {name} | {cell(by_mode['SCAN'])} | {cell(by_mode['index'])} |")
    scan, index = facts["SCAN"], facts["index"]
    lines.append(
        f"| Redis memory for the {count:,} results | {scan['memory'] / 2**20:,.1f} MiB "
        f"| {index['memory'] / 2**20:,.1f} MiB "
        f"(+{(index['memory'] - scan['memory']) / count:,.0f} bytes a result) |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/1")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of each figure")
    parser.add_argument("-n", type=int, default=1000, help="stores per store measurement")
    parser.add_argument("--results", type=int, default=100_000, help="results to list")
    parser.add_argument("--list-repeat", type=int, default=3, help="repetitions of each query")
    parser.add_argument("--smoke", action="store_true", help="a tiny run, to prove it works")
    parser.add_argument("--write", action="store_true", help="write the tables into README.md")
    args = parser.parse_args()
    if args.smoke:
        args.repeat, args.list_repeat, args.n, args.results = 1, 1, 50, 200
    client = redis.Redis.from_url(args.redis)
    others, version = client.dbsize(), client.info()["redis_version"]
    client.close()
    if others:
        print(
            f"note: {args.redis} already holds {others:,} keys; SCAN walks them too",
            file=sys.stderr,
        )
    empty = store_rows(args.redis, args.repeat, args.n)
    times, facts, loaded = listing_figures(
        args.redis, args.results, args.list_repeat, args.repeat, args.n
    )
    spent = server_time(args.redis, args.n)
    stores = table(empty + loaded)
    listings = listing_table(times, facts, args.results)
    per_store = ", ".join(
        f"{label(mode)} {'-' if us is None else f'{us:.1f} us'}" for mode, us in spent.items()
    )
    spent_line = f"Server time per store script (median of 3 windows of {args.n}): {per_store}."
    out = f"{stores}\n\n{spent_line}\n\n{listings}"
    print(out)
    if args.write:
        info = (
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()}, "
            f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the end), "
            f"Python {platform.python_version()}, resultstore {resultstore.__version__}, "
            f"redis-py {redis.__version__}, Redis {version}; stores: {args.repeat} interleaved "
            f"repetitions of {args.n}; listings: {args.results:,} results loaded in "
            f"{facts['SCAN']['load']:.0f} s (SCAN) and {facts['index']['load']:.0f} s (index) "
            f"from 4 threads, each query {args.list_repeat} times, median (min-max) "
            "(`bench/redis_listing_bench.py --write`)."
        )
        write_section("<!-- redis-listing -->", "<!-- /redis-listing -->", f"{info}\n\n{out}")


if __name__ == "__main__":
    main()
