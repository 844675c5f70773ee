"""A real Celery worker (prefork, 2 processes) on the machine's Redis broker, one per backend.

Each test session takes a queue name of its own on a Redis database that the other
suites leave alone, so that sessions never take each other's tasks. The worker is
ready when it says so ("ready." in its log), within a deadline, and is stopped by
its pid (its process group: the pool's children too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis
from celery import Celery

import celery_resultstore

from .app import make_app

ROOT = Path(__file__).resolve().parents[2]
REDIS = "redis://127.0.0.1:6379"
REDIS_DB = 12  # the broker's and the Redis backends' database: other suites use 0 and 13
BROKER = f"{REDIS}/{REDIS_DB}"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
READY_WITHIN = 60.0
STOP_WITHIN = 20.0


@dataclass
class Worker:
    """A ``celery worker`` subprocess and what it printed."""

    proc: subprocess.Popen[str]
    name: str
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if " ready." in line:
                self.ready.set()
        self.ready.set()  # it exited: wake the waiter, which looks at the exit code

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown of the whole group
            try:
                self.proc.wait(STOP_WITHIN)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_WITHIN)
        if self.reader is not None:
            self.reader.join(STOP_WITHIN)  # it reads to the end of the output, then closes
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_worker(backend: str, queue: str, *, wait_ready: bool = True) -> Worker:
    name = f"rs-{queue}@%h"
    env = {
        **os.environ,
        "RS_CELERY_BROKER": BROKER,
        "RS_CELERY_BACKEND": backend,
        "RS_CELERY_QUEUE": queue,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.celery.app", "worker", "-P", "prefork",
         "-c", "2", "-Q", queue, "-n", name, "-l", "INFO", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    worker = Worker(proc, name.replace("%h", os.uname().nodename))
    worker.reader = threading.Thread(target=worker.read, name="worker-log", daemon=True)
    worker.reader.start()
    if wait_ready and (not worker.ready.wait(READY_WITHIN) or worker.proc.poll() is not None):
        worker.stop()
        pytest.fail(f"the worker was not ready within {READY_WITHIN} s:\n{worker.output}")
    return worker


@dataclass(frozen=True)
class Case:
    """One backend under test: the bridge's URL, and Celery's own URL for the same store."""

    name: str
    url: str
    celery_url: str | None


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    # redis-py's default socket timeout (5 s) would cut a longer BLPOP of wait_started().
    return redis.Redis.from_url(BROKER, socket_timeout=60)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    name = f"rs_celery_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


CASES = ("redis", "postgresql", "sqlite", "file")


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    kind = request.param
    if kind == "redis":
        return Case(kind, f"resultstore+{BROKER}", BROKER)
    if kind == "postgresql":
        database = request.getfixturevalue("postgres_database")
        return Case(kind, f"resultstore+db+postgresql://{database}", f"db+postgresql://{database}")
    directory = tmp_path_factory.mktemp(f"celery-{kind}")
    if kind == "sqlite":
        path = directory / "results.db"
        return Case(kind, f"resultstore+db+sqlite:///{path}", f"db+sqlite:///{path}")
    return Case(kind, f"resultstore+file://{directory}", None)  # Celery has no file backend


@dataclass
class Setup:
    app: Celery
    worker: Worker
    case: Case
    queue: str


@pytest.fixture(scope="module")
def celery_setup(case: Case) -> Iterator[Setup]:
    queue = f"rs-{case.name}-{uuid.uuid4().hex[:8]}"
    worker = start_worker(case.url, queue)
    app = make_app(BROKER, case.url, queue)
    try:
        yield Setup(app, worker, case, queue)
    finally:
        worker.stop()
        app.close()
        # Before the session drops the database: a store left open would try to reconnect.
        celery_resultstore.close_stores()


@pytest.fixture
def app(celery_setup: Setup) -> Celery:
    return celery_setup.app


def wait_started(client: redis.Redis, key: str, count: int = 1, within: float = 20.0) -> None:
    """Until ``count`` tasks blocking on ``key`` have started (they push to ``key:started``)."""
    deadline = time.monotonic() + within
    for _ in range(count):
        left = deadline - time.monotonic()
        if left <= 0 or client.blpop([f"{key}:started"], timeout=max(left, 0.01)) is None:
            raise AssertionError(f"no task blocking on {key!r} started within {within} s")
