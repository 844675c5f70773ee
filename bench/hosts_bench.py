"""taskiq and dramatiq with their own result backends against the resultstore bridges, one run.

    python bench/hosts_bench.py            # prints a Markdown table
    python bench/hosts_bench.py --write    # ... and writes it into bench/README.md
    python bench/hosts_bench.py --smoke    # a few round trips of everything, no numbers kept

For each task system and result backend a real worker runs in a subprocess (taskiq:
taskiq-redis's ListQueueBroker on Redis; dramatiq: its RabbitMQ broker), and the
benchmark measures, from the sending process:

- round trip: send one task, wait for its result (``task.wait_result()``,
  ``message.get_result(block=True)``), ``--rounds`` times after a warm-up: p50, p90;
- 200 results: send 200 tasks, then wait for all of them: the time from the first
  send to the last result in hand.

The result backends: the task system's own (taskiq-redis's ``RedisAsyncResultBackend``,
dramatiq's ``RedisBackend``), and the bridge on ``redis://`` and ``db+postgresql://``.
Ratios are each p50 over the task system's own backend's, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pika
import redis
import sqlalchemy as sa
from common import percentile, write_section
from hosts_apps import RABBITMQ_URL, REDIS_URL, make_dramatiq, make_taskiq

HERE = Path(__file__).resolve().parent
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
READY_DEADLINE = 60.0  # a worker that served nothing by then failed to start
WAIT = 30.0  # the timeout of every measured wait: never reached in a good run


@dataclass
class Figures:
    system: str
    backend: str
    round_trips: list[float]
    batch: float

    @property
    def p50(self) -> float:
        return percentile(self.round_trips, 0.5)

    @property
    def p90(self) -> float:
        return percentile(self.round_trips, 0.9)


@contextmanager
def worker(system: str, backend: str, queue: str) -> Iterator[subprocess.Popen[bytes]]:
    """The task system's worker command on this backend and queue, stopped by pid."""
    if system == "taskiq":
        argv = ["-m", "taskiq", "worker", "hosts_apps:taskiq_broker", "--workers", "1"]
    else:
        argv = ["-m", "dramatiq", "hosts_apps:dramatiq_broker", "--processes", "1"]
        argv += ["--threads", "8"]
    env = {**os.environ, "HB_SYSTEM": system, "HB_BACKEND": backend, "HB_QUEUE": queue}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    # Outside the tree: read it when a worker fails to start.
    log = open(Path(tempfile.gettempdir()) / f"hosts-bench-{system}-worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, *argv], cwd=HERE, env=env, stdout=log, stderr=log)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()


def ready(proc: subprocess.Popen[bytes], round_trip: Callable[[int], float]) -> None:
    """Round trips until one succeeds: the worker reads the queue (bounded, and failing
    at once if the worker died)."""
    deadline = time.monotonic() + READY_DEADLINE
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited with {proc.returncode}; see its log in /tmp")
        try:
            round_trip(-1)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise


def taskiq_figures(backend: str, queue: str, rounds: int, batch: int) -> tuple[list[float], float]:
    from taskiq.exceptions import TaskiqResultTimeoutError

    loop = asyncio.new_event_loop()
    broker = make_taskiq(backend, queue)
    echo = broker.find_task("echo")

    async def one(value: int, timeout: float = WAIT) -> float:
        started = time.perf_counter()
        task = await echo.kiq(value)
        result = await task.wait_result(timeout=timeout)
        took = time.perf_counter() - started
        assert result.return_value == value, result
        return took

    async def many() -> float:
        started = time.perf_counter()
        tasks = [await echo.kiq(i) for i in range(batch)]
        results = await asyncio.gather(*(t.wait_result(timeout=WAIT) for t in tasks))
        took = time.perf_counter() - started
        assert [r.return_value for r in results] == list(range(batch))
        return took

    loop.run_until_complete(broker.startup())
    try:
        with worker("taskiq", backend, queue) as proc:

            def first(value: int) -> float:
                try:
                    return loop.run_until_complete(one(value, timeout=1.0))
                except TaskiqResultTimeoutError as exc:
                    raise RuntimeError("not served yet") from exc

            ready(proc, first)
            for i in range(10):  # warm-up: connections, the push channel, the worker's imports
                loop.run_until_complete(one(i))
            trips = [loop.run_until_complete(one(i)) for i in range(rounds)]
            return trips, loop.run_until_complete(many())
    finally:
        loop.run_until_complete(broker.shutdown())  # closes the result backend too
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def dramatiq_figures(
    backend: str, queue: str, rounds: int, batch: int
) -> tuple[list[float], float]:
    broker = make_dramatiq(backend, queue)
    echo = broker.get_actor("echo")

    def one(value: int, timeout: float = WAIT) -> float:
        started = time.perf_counter()
        result = echo.send(value).get_result(block=True, timeout=int(timeout * 1000))
        took = time.perf_counter() - started
        assert result == value, result
        return took

    def many() -> float:
        started = time.perf_counter()
        messages = [echo.send(i) for i in range(batch)]
        results = [m.get_result(block=True, timeout=int(WAIT * 1000)) for m in messages]
        took = time.perf_counter() - started
        assert results == list(range(batch))
        return took

    try:
        with worker("dramatiq", backend, queue) as proc:
            # dramatiq's RedisBackend rounds a blocking timeout down to whole seconds.
            ready(proc, lambda value: one(value, timeout=1.0))
            for i in range(10):
                one(i)
            return [one(i) for i in range(rounds)], many()
    finally:
        results = broker.get_results_backend()
        if hasattr(results, "close"):  # the bridge's Backend: its LISTEN connection too
            results.close()
        broker.close()
        _delete_queues(queue)


def _delete_queues(queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    channel = connection.channel()
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        channel.queue_delete(name)
    connection.close()


def _delete_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A database of this run's own, dropped after it."""
    name = f"rs_hosts_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"db+postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(rounds: int, batch: int) -> list[Figures]:
    figures = []
    with postgres_database() as pg_url:
        backends = [
            ("own", "native"),
            ("bridge, redis://", REDIS_URL),
            ("bridge, PostgreSQL", pg_url),
        ]
        for system, run in (("taskiq", taskiq_figures), ("dramatiq", dramatiq_figures)):
            for label, backend in backends:
                queue = f"hosts-bench-{system}-{uuid.uuid4().hex[:8]}"
                try:
                    trips, total = run(backend, queue, rounds, batch)
                finally:
                    _delete_keys(queue)
                figures.append(Figures(system, label, trips, total))
                print(f"{system} {label}: p50 {figures[-1].p50 * 1000:.2f} ms", file=sys.stderr)
    return figures


def table(figures: list[Figures], batch: int) -> str:
    lines = [
        f"| task system | result backend | round trip p50 | p90 | {batch} results "
        "| p50 vs its own backend |",
        "|---|---|---|---|---|---|",
    ]
    own = {f.system: f for f in figures if f.backend == "own"}
    for f in figures:
        ratio = own[f.system].p50 / f.p50
        if f.backend == "own":
            compare = ""
        elif ratio >= 1:
            compare = f"{ratio:.1f}x lower"
        else:
            compare = f"{1 / ratio:.1f}x higher"
        lines.append(
            f"| {f.system} | {f.backend} | {f.p50 * 1000:.2f} ms | {f.p90 * 1000:.2f} ms "
            f"| {f.batch * 1000:.0f} ms | {compare} |"
        )
    return "\n".join(lines)


def _load() -> str:
    """The 1-minute load average: on 2 cores, every runnable process beyond two delays
    each thread hop of a wake-up by a scheduling slice."""
    return f"{os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100, help="round trips per backend")
    parser.add_argument("--batch", type=int, default=200, help="tasks in the batch figure")
    parser.add_argument("--smoke", action="store_true", help="a tiny run, to prove it works")
    parser.add_argument("--write", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.batch = 3, 5
    figures = measure(args.rounds, args.batch)
    out = table(figures, args.batch)
    print(out)
    if args.write and not args.smoke:
        import dramatiq
        import taskiq

        info = (
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, taskiq "
            f"{taskiq.__version__}, dramatiq {dramatiq.__version__}; {args.rounds} round "
            f"trips per backend after 10 of warm-up, one run; load average {_load()} "
            "when it ended (other work on the machine)."
        )
        write_section("<!-- hosts -->", "<!-- /hosts -->", f"{info}\n\n{out}")


if __name__ == "__main__":
    main()
