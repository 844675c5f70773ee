"""What a user would pick instead: Celery's result backends, same servers, same raw baselines."""

from __future__ import annotations

import json
import statistics
import time
import uuid
import warnings

import celery
import redis
from common import SMALL, Row, meta_json, percentile, rate
from sql_bench import Raw
from waits import wait_latencies


def _app(url: str) -> celery.Celery:
    warnings.simplefilter("ignore", DeprecationWarning)  # Celery on a newer redis-py
    return celery.Celery("bench", backend=url, set_as_current=False)


def celery_redis_rows(url: str, repeat: int, n: int, waits: int) -> list[Row]:
    app = _app(url)
    client = redis.Redis.from_url(url)
    store = Row("Celery on Redis: store one at a time, small", "stores/s")
    get = Row("Celery on Redis: get one at a time, small", "gets/s")
    join = Row("Celery on Redis: join of 1000 done, small", "ms", higher_is_better=False)
    for _ in range(repeat):
        ids = [f"celery-{uuid.uuid4().hex}" for _ in range(n)]
        keys = [f"celery-task-meta-{t}" for t in ids]
        store.ours.append(rate(lambda i: app.backend.store_result(ids[i], SMALL, "SUCCESS"), n))

        def raw_store(i: int) -> None:
            data = meta_json(ids[i], SMALL)
            client.pipeline(transaction=False).set(keys[i], data, ex=86400).publish(
                keys[i], data
            ).execute()

        store.raw.append(rate(raw_store, n))
        get.ours.append(rate(lambda i: app.backend.get_task_meta(ids[i], cache=False), n))
        get.raw.append(rate(lambda i: json.loads(client.get(keys[i])), n))
        group = app.GroupResult("bench", [app.AsyncResult(t) for t in ids[:1000]])
        started = time.perf_counter()
        group.get(timeout=30)
        join.ours.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        [json.loads(v) for v in client.mget(keys[:1000])]
        join.raw.append((time.perf_counter() - started) * 1000)
        for chunk in range(0, len(keys), 500):
            client.delete(*keys[chunk : chunk + 500])
    rows = [store, get, join, *_wait_rows("Celery on Redis", app, url, repeat, waits)]
    app.backend.client.close()
    client.close()
    return rows


def celery_sql_rows(label: str, url: str, kind: str, dsn: str, repeat: int, n: int) -> list[Row]:
    """Celery's database backend; waits poll every 0.5 s (its default), so none are timed."""
    app = _app(url)
    raw = Raw(kind, dsn)
    store = Row(f"Celery on {label}: store one at a time, small", "stores/s")
    get = Row(f"Celery on {label}: get one at a time, small", "gets/s")
    for _ in range(repeat):
        ids = [f"celery-{uuid.uuid4().hex}" for _ in range(n)]
        raw_ids = [f"raw-{uuid.uuid4().hex}" for _ in range(n)]
        store.ours.append(rate(lambda i: app.backend.store_result(ids[i], SMALL, "SUCCESS"), n))
        store.raw.append(rate(lambda i: raw.store(raw_ids[i], SMALL), n))
        get.ours.append(rate(lambda i: app.backend.get_task_meta(ids[i], cache=False), n))
        get.raw.append(rate(lambda i: raw.get(raw_ids[i]), n))
        cur = raw.conn.cursor()
        cur.execute(
            "DELETE FROM celery_taskmeta WHERE task_id LIKE 'celery-%' OR task_id LIKE 'raw-%'"
        )
        if kind == "sqlite":
            raw.conn.commit()
    raw.conn.close()
    return [store, get]


def _wait_rows(label: str, app: celery.Celery, url: str, repeat: int, waits: int) -> list[Row]:
    """A Celery client blocked in AsyncResult.get(); the same storer process as ours."""
    p50 = Row(f"{label}: wait latency p50", "ms", higher_is_better=False)
    p99 = Row(f"{label}: wait latency p99", "ms", higher_is_better=False)
    for _ in range(repeat):
        theirs = wait_latencies(url, lambda t: app.AsyncResult(t).get(timeout=10), waits)
        raw = wait_latencies(url, None, waits)
        p50.ours.append(statistics.median(theirs) * 1000)
        p50.raw.append(statistics.median(raw) * 1000)
        p99.ours.append(percentile(theirs, 0.99) * 1000)
        p99.raw.append(percentile(raw, 0.99) * 1000)
    return [p50, p99]


if __name__ == "__main__":
    # `python bench/celery_bench.py`: Celery apps with a real worker, Celery's own backends
    # next to the Celery bridge (bench/celery_worker.py); bench/run.py imports the above.
    from celery_worker import main

    raise SystemExit(main())
