"""What the taskiq and dramatiq tests share: the stores a worker writes to, and a real
worker process of the task system, started and stopped by pid.

Each test module gets its stores of its own: a Redis key prefix, a fresh PostgreSQL
database, an SQLite file and a ``file://`` folder in its temporary directory; the
broker's queue (or namespace) is the module's own too. A store's ``env`` is how the
worker process (and any other reader) opens the same store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celery
import pytest
import redis
import sqlalchemy as sa

from .db.conftest import PG_ADMIN, server
from .redis.conftest import REDIS_URL, transport

ROOT = Path(__file__).resolve().parents[1]
STORES = ("redis", "postgresql", "sqlite", "file")
START_DEADLINE = 60.0  # a worker that is not serving by then has failed to start
STOP_DEADLINE = 30.0


@dataclass(frozen=True)
class Store:
    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Read by :func:`tests.hostenv.store_from_env` in the worker and readers."""
        return {"RS_URL": self.url, "RS_OPTIONS": json.dumps(self.options)}


@pytest.fixture(scope="module", params=STORES)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    kind = request.param
    tag = uuid.uuid4().hex[:12]
    if kind == "redis":
        prefix = f"test-hosts-{tag}:"
        yield Store(kind, REDIS_URL, transport(prefix))
        _delete_keys(f"{prefix}*")
    elif kind == "postgresql":
        admin = sa.create_engine(server("postgresql", PG_ADMIN), isolation_level="AUTOCOMMIT")
        name = f"rs_hosts_{tag}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield Store(kind, f"db+postgresql://postgres@127.0.0.1:5432/{name}")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
    elif kind == "sqlite":
        yield Store(kind, f"db+sqlite:///{tmp_path_factory.mktemp('sqlite') / 'results.db'}")
    else:
        yield Store(kind, f"file://{tmp_path_factory.mktemp('file-store')}")


def _delete_keys(pattern: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class WorkerProcess:
    """A task system's worker command in its own process group, logging to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"the worker exited with {self.proc.returncode}:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        """SIGTERM (the worker's graceful stop) by pid, then SIGKILL to its process group
        if it has not exited by the deadline."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_DEADLINE)
        self._out.close()


def python(code: str, env: dict[str, str], timeout: float = 60) -> str:
    """Run ``code`` in another Python process (a reader that shares only the store)."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@contextmanager
def celery_reader(store: Store) -> Iterator[celery.Celery]:
    """A Celery app whose own result backend reads ``store`` (Celery has no reader for
    the example file:// plugin's layout: a test skips that store)."""
    if store.name == "file":
        pytest.skip("Celery has no result backend for the example file:// plugin")
    app = celery.Celery(f"hosts-{uuid.uuid4().hex[:8]}", set_as_current=False)
    # Celery's database backend takes SQLAlchemy's default driver, psycopg2: name psycopg 3.
    url = store.url.replace("db+postgresql://", "db+postgresql+psycopg://")
    app.conf.update(result_backend=url, **store.options)
    try:
        yield app
    finally:
        app.close()
