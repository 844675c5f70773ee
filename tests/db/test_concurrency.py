"""Several processes on one database: no write lost, a ready state never replaced.

Processes are started with the "spawn" context (no state inherited from
pytest), four of them, 200 tasks each, on one SQLite file and on PostgreSQL.
Each stores STARTED then SUCCESS for its own tasks, sends late STARTED writes
for tasks the others own (some before, some after those are finished), and
races the others for a set of shared ids. Then, in one process: engines are
pooled per URL and reused, and a forked child gets connections of its own.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import warnings
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
import sqlalchemy as sa

from resultstore import Backend
from resultstore_db import _engine

KINDS = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}
WORKERS = 4
PER_WORKER = 200
SHARED = 50  # ids every worker tries to finish; exactly one must win each
DEADLINE = 60.0  # the whole multi-process run, seconds


@pytest.fixture(params=list(KINDS), ids=list(KINDS))
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(KINDS[request.param]))


def own_ids(worker: int) -> list[str]:
    return [f"w{worker}-{n}" for n in range(PER_WORKER)]


def value_of(task_id: str) -> dict[str, Any]:
    return {"id": task_id, "payload": [task_id] * 3}


def run_worker(url: str, worker: int, start: Any, results: Any) -> None:
    """One spawned process: its own tasks, late writes to the others', and the shared race."""
    start.wait(30)  # all processes begin together
    others = [own_ids(j) for j in range(WORKERS) if j != worker]
    stats: dict[str, Any] = {"late_written": 0, "late_refused": 0, "won": [], "bad_reads": []}
    try:
        with Backend(url) as backend:
            for n, task_id in enumerate(own_ids(worker)):
                backend.mark_as_started(task_id, {"worker": worker})
                if not backend.mark_as_done(task_id, value_of(task_id)):
                    stats["bad_reads"].append(f"{task_id}: SUCCESS not written")
                for ids in others:  # a STARTED for the others' n-th task: early or late
                    if backend.mark_as_started(ids[n], {"late_from": worker}):
                        stats["late_written"] += 1
                    else:
                        stats["late_refused"] += 1
                if n % 4 == 0 and n // 4 < SHARED:
                    shared_id = f"shared-{n // 4}"
                    if backend.mark_as_done(shared_id, {"winner": worker}):
                        stats["won"].append(shared_id)
            # Every task of ours reads back exactly.
            for task_id, meta in backend.get_many(own_ids(worker)).items():
                if (meta.status, meta.result) != ("SUCCESS", value_of(task_id)):
                    stats["bad_reads"].append(f"{task_id}: {meta.status} {meta.result!r}")
            # Late STARTED writes for ids others have certainly finished: all refused.
            for ids in others:
                metas = backend.get_many(ids)
                for task_id in [t for t, m in metas.items() if m.status == "SUCCESS"]:
                    if backend.mark_as_started(task_id, {"very_late_from": worker}):
                        stats["bad_reads"].append(f"{task_id}: a late STARTED replaced SUCCESS")
                    else:
                        stats["late_refused"] += 1
    except BaseException as exc:  # reported to the test, not lost in a child's stderr
        stats["bad_reads"].append(f"worker {worker} failed: {type(exc).__name__}: {exc}")
    results.put((worker, stats))


def test_processes_lose_no_write_and_never_replace_a_ready_state(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Backend(url).close()  # create the tables once, before the race
    # Spawned children import this module by name (tests.db.test_concurrency).
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    ctx = multiprocessing.get_context("spawn")
    start, queue = ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(target=run_worker, args=(url, w, start, queue), daemon=True)
        for w in range(WORKERS)
    ]
    for process in processes:
        process.start()
    try:
        start.set()
        began = time.monotonic()
        deadline = began + DEADLINE
        collected: dict[int, dict[str, Any]] = {}
        while len(collected) < WORKERS:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (not any(p.is_alive() for p in processes) and queue.empty()):
                break
            try:
                worker, stats = queue.get(timeout=min(remaining, 1.0))
            except Empty:
                continue
            collected[worker] = stats
        elapsed = time.monotonic() - began
        assert sorted(collected) == list(range(WORKERS)), (
            f"only workers {sorted(collected)} reported within {DEADLINE}s; exit codes "
            f"{[p.exitcode for p in processes]}"
        )
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
    results = [collected[w] for w in range(WORKERS)]

    assert [r["bad_reads"] for r in results] == [[]] * WORKERS
    all_ids = [t for w in range(WORKERS) for t in own_ids(w)]
    shared_ids = [f"shared-{n}" for n in range(SHARED)]
    with Backend(url) as backend:
        metas = backend.get_many(all_ids)
        assert {m.status for m in metas.values()} == {"SUCCESS"}
        assert all(metas[t].result == value_of(t) for t in all_ids)
        # The shared race: exactly one winner per id, and the stored value is the winner's.
        winners = {t: w for w, r in enumerate(results) for t in r["won"]}
        assert sorted(winners) == sorted(shared_ids)
        assert sum(len(r["won"]) for r in results) == SHARED
        shared = backend.get_many(shared_ids)
        assert all(shared[t].result == {"winner": winners[t]} for t in shared_ids)
    engine = sa.create_engine(_engine.normalize(url.removeprefix("db+")))
    try:
        with engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM celery_taskmeta")).scalar()
    finally:
        engine.dispose()
    assert count == WORKERS * PER_WORKER + SHARED

    late_written = sum(r["late_written"] for r in results)
    late_refused = sum(r["late_refused"] for r in results)
    # Every late write was either refused or landed before the owner's SUCCESS (and was
    # then replaced by it, as the reads above show); most are refused.
    assert late_refused > 0
    print(
        f"\n{url.split(':')[0]}: {WORKERS} processes x {PER_WORKER} tasks in {elapsed:.1f}s; "
        f"late STARTED writes refused {late_refused}, landed before SUCCESS {late_written}"
    )


# --- engines in one process ---------------------------------------------------------------------


def engines_for(url: str) -> list[sa.Engine]:
    key = _engine.normalize(url.removeprefix("db+")).render_as_string(hide_password=False)
    return [e for (pid, u, _), e in _engine._engines.items() if pid == os.getpid() and u == key]


def test_engines_are_pooled_and_reused(url: str) -> None:
    backends = [Backend(url) for _ in range(10)]
    try:
        engines = engines_for(url)
        # PostgreSQL, MariaDB: the transactional engine and the fast path's autocommit one.
        assert len(engines) == (1 if url.startswith("db+sqlite") else 2)
        assert all(b.plugin.engine is engines[0] for b in backends)
        assert all(b.plugin.fast_engine is engines[-1] for b in backends)
        connects: list[int] = []

        def connected(*_: object) -> None:
            connects.append(1)

        for engine in engines:
            sa.event.listen(engine, "connect", connected)
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for n in range(25):
                    backend = backends[(t + n) % len(backends)]
                    task_id = f"t{t}-{n}"
                    backend.mark_as_started(task_id)
                    assert backend.mark_as_done(task_id, n)
                    assert backend.get_result(task_id) == n
                    assert len(backend.get_many([task_id, "x"])) == 2
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert engines_for(url) == engines  # still the same engines, after 800 stores
        assert [engine.pool.checkedout() for engine in engines] == [0] * len(engines)
        # At most one connection per thread and engine (8 threads, 1,600 round trips).
        assert len(connects) <= 8 * len(engines)
        for engine in engines:
            sa.event.remove(engine, "connect", connected)
    finally:
        for backend in backends:
            backend.close()


def server_identity(conn: sa.Connection) -> object:
    """What tells two connections apart: the server process on PostgreSQL, else the object."""
    if conn.dialect.name == "postgresql":
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    return id(conn.connection.dbapi_connection)


CHILD_CHECKS = [
    "the child got the parent's engine",
    "the child's connection is the parent's",
    "the child could not store or read",
    "the child checked out a connection of the parent's pool",
    "the child crashed",
]


def in_child(backend: Backend, parent_engine: sa.Engine, parent_identity: object) -> int:
    engine = backend.plugin.engine
    if engine is parent_engine:
        return 1
    with engine.connect() as conn:
        if server_identity(conn) == parent_identity:
            return 2
    ok = backend.mark_as_done("from-child", "child") and backend.get_result("parent-1") == 1
    if not ok or backend.get_result("from-child") != "child":
        return 3
    if parent_engine.pool.checkedout() != 0:
        return 4
    return 0


def test_a_forked_child_does_not_reuse_the_parents_connections(url: str) -> None:
    with Backend(url) as backend:
        backend.mark_as_done("parent-1", 1)
        parent_engine: sa.Engine = backend.plugin.engine
        with parent_engine.connect() as conn:  # the pooled connection the backend uses
            parent_identity = server_identity(conn)
        with warnings.catch_warnings():  # 3.12+ warns about fork with threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 5
            try:
                code = in_child(backend, parent_engine, parent_identity)
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the forked child did not exit")
            time.sleep(0.01)
        code = os.waitstatus_to_exitcode(done[1])
        assert code == 0, CHILD_CHECKS[code - 1] if 0 < code <= len(CHILD_CHECKS) else code

        # The parent still works, on the very connection it had: the child left it alone.
        assert backend.get_result("from-child") == "child"
        assert backend.mark_as_done("parent-2", 2)
        assert backend.plugin.engine is parent_engine
        with parent_engine.connect() as conn:
            assert server_identity(conn) == parent_identity
        assert parent_engine.pool.checkedout() == 0
