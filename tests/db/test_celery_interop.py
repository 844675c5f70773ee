"""Real interop with Celery's database backend, on SQLite, PostgreSQL and MariaDB.

A Celery app (``result_backend="db+<url>"``, ``result_extended=True``) and a
resultstore ``Backend`` share one database. Celery creates its tables first
(``database_create_tables_at_setup``, its default) and resultstore adds only
its own ``resultstore_revoked`` (on MySQL/MariaDB it warns that Celery's id
columns ignore case, and the test applies the fix it names). Celery writes and
resultstore reads, and the reverse; the ``result`` column holds the same
serializer bytes either way, and ids that differ only in case are two tasks.
Legacy rows whose result column holds a raw pickle (what Celery once wrote
whatever the serializer) are refused unless the user accepts pickle.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import celery
import celery.exceptions
import pytest
import sqlalchemy as sa
from celery.app.task import Context
from celery.backends.database import models as celery_models

import resultstore
import resultstore_db
from resultstore import READY_STATES, AsyncResult, Backend, DecodeError, GroupResult, TaskInfo
from resultstore_db import _engine

from ..doubles import fail_with, traceback_text

KINDS = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}
DEADLINE = 5.0


# --- fixtures and helpers --------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(timezone.utc)


class Shared:
    """One database, seen by Celery's backend, by resultstore, and raw through SQLAlchemy."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sa_url = _engine.normalize(url.removeprefix("db+"))
        self.dialect = self.sa_url.get_backend_name()
        self.raw = sa.create_engine(self.sa_url)
        self.apps: list[celery.Celery] = []
        self.backends: list[Backend] = []
        # Celery creates the tables; resultstore then finds them and adds only its own.
        self.app = self.celery()
        if self.dialect != "mysql":
            self.ours = self.backend(extended=True)
            return
        # On MySQL/MariaDB Celery's id columns ignore case: resultstore says how to fix
        # them, and Celery goes on with the fixed tables.
        with pytest.warns(resultstore_db.CollationWarning) as warned:
            self.ours = self.backend(extended=True)
        fixes = re.findall(r"^ALTER TABLE .*(?=;$)", str(warned[0].message), re.MULTILINE)
        assert len(fixes) == 2, warned[0].message
        with self.raw.begin() as conn:
            for fix in fixes:
                conn.execute(sa.text(fix))

    def celery(self) -> celery.Celery:
        # Celery's URL names the driver: its SQLAlchemy defaults (psycopg2, mysqlclient)
        # are not installed here.
        app = celery.Celery(f"interop-{len(self.apps)}", set_as_current=False)
        app.conf.update(
            result_backend="db+" + self.sa_url.render_as_string(hide_password=False),
            result_extended=True,
        )
        self.apps.append(app)
        assert app.backend.session_manager.prepared  # it created its tables at setup
        return app

    def backend(self, **kwargs: Any) -> Backend:
        backend = Backend(self.url, **kwargs)
        self.backends.append(backend)
        return backend

    def row(self, task_id: str) -> Any:
        with self.raw.connect() as conn:
            return conn.execute(
                sa.text("SELECT * FROM celery_taskmeta WHERE task_id = :t"), {"t": task_id}
            ).one()

    def group_bytes(self, group_id: str) -> bytes:
        with self.raw.connect() as conn:
            data = conn.execute(
                sa.text("SELECT result FROM celery_tasksetmeta WHERE taskset_id = :g"),
                {"g": group_id},
            ).scalar_one()
        return bytes(data)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        for app in self.apps:
            # Celery's SessionManager keeps engines only after a fork (NullPool engines
            # per call otherwise); dispose whatever it holds, then close the app.
            manager = app.backend.session_manager
            for engine in manager._engines.values():
                engine.dispose()
            manager._engines.clear()
            manager._sessions.clear()
            app.close()
        self.raw.dispose()
        for model in (celery_models.Task, celery_models.TaskSet):
            model.configure()  # Celery's models are global: back to their defaults

    def date_bounds(self, before: datetime, after: datetime) -> tuple[datetime, datetime]:
        """Tables Celery created keep whole seconds on MySQL/MariaDB (DATETIME)."""
        if self.dialect == "mysql":
            return before.replace(microsecond=0), after + timedelta(seconds=1)
        return before, after


@pytest.fixture(params=list(KINDS), ids=list(KINDS))
def shared(request: pytest.FixtureRequest) -> Iterator[Shared]:
    db = Shared(str(request.getfixturevalue(KINDS[request.param])))
    yield db
    db.close()


# --- Celery writes, resultstore reads ----------------------------------------------------------


def test_celery_success_failure_started_custom_read_exactly(shared: Shared) -> None:
    tables = set(sa.inspect(shared.raw).get_table_names())  # Celery's, plus our one
    assert tables == {
        "celery_taskmeta",
        "celery_tasksetmeta",
        "resultstore_revoked",
        "resultstore_counters",
    }
    cb, ours = shared.app.backend, shared.ours
    value = {"rows": [[1, "a"], [2, "b"]], "text": "é", "n": None}
    before = now()
    cb.store_result("c-ok", value, "SUCCESS")
    after = now()
    exc = fail_with(ValueError("boom", 3))
    text = traceback_text(exc)
    cb.mark_as_failure("c-fail", exc, traceback=text)
    cb.mark_as_started("c-started", pid=4242, hostname="w1")
    cb.store_result("c-progress", {"current": 7, "total": 9}, "PROGRESS")
    cb.mark_as_revoked("c-revoked", "terminated")

    ok = AsyncResult("c-ok", ours)
    assert (ok.state, ok.result, ok.traceback, ok.children) == ("SUCCESS", value, None, [])
    assert ok.get(timeout=DEADLINE) == value
    low, high = shared.date_bounds(before, after)
    assert ok.date_done is not None
    assert ok.date_done.tzinfo is not None
    assert low <= ok.date_done <= high

    failed = AsyncResult("c-fail", ours)
    assert failed.state == "FAILURE"
    assert failed.traceback == text
    assert type(failed.result) is ValueError
    assert failed.result.args == ("boom", 3)
    with pytest.raises(ValueError, match="boom") as raised:
        failed.get(timeout=DEADLINE)
    assert raised.value.args == ("boom", 3)

    started = AsyncResult("c-started", ours)
    assert (started.state, started.result) == ("STARTED", {"pid": 4242, "hostname": "w1"})
    assert not started.ready()
    assert started.date_done is None

    progress = AsyncResult("c-progress", ours)
    assert (progress.state, progress.result) == ("PROGRESS", {"current": 7, "total": 9})

    revoked = AsyncResult("c-revoked", ours)
    assert revoked.state == "REVOKED"
    with pytest.raises(resultstore.TaskRevokedError, match="terminated"):
        revoked.get(timeout=DEADLINE)

    # get_many (one query; an array on PostgreSQL) reads Celery's rows the same way.
    metas = ours.get_many(["c-ok", "c-fail", "c-started", "missing"])
    assert [m.status for m in metas.values()] == ["SUCCESS", "FAILURE", "STARTED", "PENDING"]
    # A ready state Celery wrote is not replaced by a late write of ours.
    assert ours.mark_as_started("c-ok") is False
    assert ours.get_result("c-ok") == value


def test_celery_extended_and_group_read_exactly(shared: Shared) -> None:
    cb, ours = shared.app.backend, shared.ours
    request = Context(
        id="c-ext",
        task="proj.mul",
        args=[3, 4],
        kwargs={"k": "v"},
        hostname="celery@w2",
        retries=1,
        delivery_info={"routing_key": "math"},
    )
    cb.store_result("c-ext", 12, "SUCCESS", request=request)
    ext = AsyncResult("c-ext", ours)
    assert ext.get(timeout=DEADLINE) == 12
    assert (ext.name, ext.args, ext.kwargs) == ("proj.mul", [3, 4], {"k": "v"})
    assert (ext.worker, ext.retries, ext.queue) == ("celery@w2", 1, "math")

    members = ["c-m1", "c-m2", "c-m3"]
    shared.app.GroupResult("c-group", [shared.app.AsyncResult(m) for m in members]).save()
    for n, member in enumerate(members):
        cb.store_result(member, n + 1, "SUCCESS")
    group = ours.restore_group("c-group")
    assert group is not None
    assert group.id == "c-group"
    assert [r.id for r in group] == members
    assert group.join(timeout=DEADLINE) == [1, 2, 3]
    assert ours.delete_group("c-group")
    assert shared.app.GroupResult.restore("c-group") is None


def test_results_celery_wrote_list_from_its_tables(shared: Shared) -> None:
    """Celery's tables have no listing index: the first listing says so, once, with the
    CREATE INDEX to run, and lists Celery's rows in the listing order all the same
    (unfinished first; on MariaDB, Celery's dates are whole seconds: ties by id)."""
    cb, ours = shared.app.backend, shared.ours
    cb.store_result("c-ok", 1, "SUCCESS")
    cb.mark_as_failure("c-fail", fail_with(ValueError("boom")), traceback="tb")
    cb.mark_as_started("c-started", pid=1, hostname="w1")
    cb.store_result("c-progress", {"current": 1, "total": 2}, "PROGRESS")
    cb.store_result("c-ext", 12, "SUCCESS", request=Context(id="c-ext", task="proj.mul"))
    with shared.raw.connect() as conn:
        rows = conn.execute(sa.text("SELECT task_id, status, date_done FROM celery_taskmeta"))
        order = sorted(
            rows, key=lambda r: (r.status not in READY_STATES, r.date_done, r.task_id), reverse=True
        )
    with pytest.warns(resultstore_db.ListingIndexWarning, match="CREATE INDEX"):
        first = ours.list_results(limit=2)
    listed = [m.task_id for m in first.items]
    while first.cursor is not None:
        first = ours.list_results(limit=2, cursor=first.cursor)
        listed += [m.task_id for m in first.items]
    assert listed == [r.task_id for r in order]
    assert set(listed[:2]) == {"c-progress", "c-started"}  # unfinished first
    named = ours.list_results(name="proj.mul").items
    assert [(m.task_id, m.name, m.result) for m in named] == [("c-ext", "proj.mul", 12)]
    assert [m.result["exc_type"] for m in ours.list_results(states={"FAILURE"}).items] == [
        "ValueError"
    ]
    assert ours.count_results() == {"SUCCESS": [2], "FAILURE": [1], "STARTED": [1], "PROGRESS": [1]}


# --- resultstore writes, Celery reads ----------------------------------------------------------


def test_resultstore_writes_celery_reads(shared: Shared) -> None:
    app, ours = shared.app, shared.ours
    value = {"rows": [[1, "a"]], "text": "é"}
    ours.mark_as_done("r-ok", value)
    ok = app.AsyncResult("r-ok")
    assert (ok.state, ok.result) == ("SUCCESS", value)
    assert ok.get(timeout=DEADLINE) == value
    assert ok.date_done is not None

    for exc in (ValueError("bad", 1), KeyError("k"), ZeroDivisionError("division by zero")):
        caught = fail_with(exc)
        task_id = f"r-fail-{type(exc).__name__}"
        ours.mark_as_failure(task_id, caught)
        failed = app.AsyncResult(task_id)
        assert failed.state == "FAILURE"
        assert type(failed.result) is type(exc)
        assert failed.result.args == exc.args
        assert failed.traceback == traceback_text(caught)
        with pytest.raises(type(exc)) as raised:
            failed.get(timeout=DEADLINE)
        assert raised.value.args == exc.args

    ours.mark_as_started("r-started", {"pid": 7})
    ours.store_result("r-progress", {"current": 2, "total": 5}, "PROGRESS")
    started = app.AsyncResult("r-started")
    assert (started.state, started.result) == ("STARTED", {"pid": 7})
    progress = app.AsyncResult("r-progress")
    assert (progress.state, progress.info) == ("PROGRESS", {"current": 2, "total": 5})
    assert not progress.ready()

    assert ours.revoke("r-revoked", "no longer wanted")
    revoked = app.AsyncResult("r-revoked")
    assert revoked.state == "REVOKED"
    assert type(revoked.result) is celery.exceptions.TaskRevokedError
    with pytest.raises(celery.exceptions.TaskRevokedError, match="no longer wanted"):
        revoked.get(timeout=DEADLINE)


def test_resultstore_extended_and_group_celery_reads(shared: Shared) -> None:
    app, ours = shared.app, shared.ours
    info = TaskInfo(
        name="proj.add", args=[1, 2], kwargs={"x": 1}, worker="w@h", retries=3, queue="q"
    )
    ours.mark_as_done("r-ext", 3, request=info)
    ext = app.AsyncResult("r-ext")
    assert ext.get(timeout=DEADLINE) == 3
    assert (ext.name, ext.args, ext.kwargs) == ("proj.add", [1, 2], {"x": 1})
    assert (ext.worker, ext.retries, ext.queue) == ("w@h", 3, "q")

    members = ["r-m1", "r-m2", "r-m3"]
    GroupResult("r-group", [AsyncResult(m, ours) for m in members], ours).save()
    for n, member in enumerate(members):
        ours.mark_as_done(member, n * 10)
    group = app.GroupResult.restore("r-group")
    assert group is not None
    assert group.id == "r-group"
    assert [r.id for r in group.results] == members
    assert group.get(timeout=DEADLINE) == [0, 10, 20]


# --- the same bytes -----------------------------------------------------------------------------


def test_result_columns_hold_the_same_serializer_bytes(shared: Shared) -> None:
    cb, ours = shared.app.backend, shared.ours
    value = {"b": [1, 2.5, None, True], "a": "é ☃", "nested": {"k": [{}]}}
    cb.store_result("c-bytes", value, "SUCCESS")
    ours.mark_as_done("r-bytes", value)
    theirs, mine = shared.row("c-bytes"), shared.row("r-bytes")
    expected = ours.codec.dumps(value, "value")
    assert bytes(theirs.result) == bytes(mine.result) == expected
    assert (theirs.status, mine.status) == ("SUCCESS", "SUCCESS")
    assert theirs.children is None
    assert mine.children is None

    exc = fail_with(KeyError("missing"))
    cb.mark_as_failure("c-exc", exc, traceback=traceback_text(exc))
    ours.mark_as_failure("r-exc", exc)
    assert bytes(shared.row("c-exc").result) == bytes(shared.row("r-exc").result)
    assert shared.row("c-exc").traceback == shared.row("r-exc").traceback

    request = Context(
        id="c-ext",
        task="proj.t",
        args=[1, "x"],
        kwargs={"k": [2]},
        hostname="w",
        retries=0,
        delivery_info={"routing_key": "q"},
    )
    cb.store_result("c-ext", value, "SUCCESS", request=request)
    info = TaskInfo(
        name="proj.t", args=[1, "x"], kwargs={"k": [2]}, worker="w", retries=0, queue="q"
    )
    ours.mark_as_done("r-ext", value, request=info)
    theirs, mine = shared.row("c-ext"), shared.row("r-ext")
    for column in ("result", "args", "kwargs"):
        assert bytes(getattr(theirs, column)) == bytes(getattr(mine, column)), column
    for column in ("name", "worker", "retries", "queue"):
        assert getattr(theirs, column) == getattr(mine, column), column

    members = [shared.app.AsyncResult("m1"), shared.app.AsyncResult("m2")]
    shared.app.GroupResult("c-group", members).save()
    GroupResult("r-group", [AsyncResult("m1", ours), AsyncResult("m2", ours)], ours).save()
    assert shared.group_bytes("c-group").replace(b"c-group", b"r-group") == shared.group_bytes(
        "r-group"
    )


# --- legacy pickled rows ------------------------------------------------------------------------


def test_legacy_pickled_row_needs_an_explicit_opt_in(shared: Shared) -> None:
    value = {"when": datetime(2020, 1, 2, 3, 4, 5), "pair": (1, 2), "tags": {"a"}}
    with shared.raw.begin() as conn:  # what Celery once wrote, whatever the serializer
        conn.execute(
            celery_models.Task.__table__.insert().values(
                task_id="legacy",
                status="SUCCESS",
                result=pickle.dumps(value),
                date_done=datetime(2020, 1, 2, 3, 4, 5),
            )
        )
    default = shared.ours
    with pytest.raises(DecodeError, match="pickle") as raised:
        default.get_result("legacy")
    assert "result_accept_content" in str(raised.value)
    with pytest.raises(DecodeError, match="pickle"):
        AsyncResult("legacy", default).get(timeout=DEADLINE)

    opted_in = shared.backend(accept_content=["json", "pickle"])
    assert opted_in.get_result("legacy") == value
    result = AsyncResult("legacy", opted_in)
    assert result.get(timeout=DEADLINE) == value
    assert type(result.result["pair"]) is tuple
    # New writes of the opted-in backend are still JSON: pickle is accepted, not produced.
    opted_in.mark_as_done("new", [1])
    assert bytes(shared.row("new").result) == b"[1]"


def test_ids_that_differ_only_in_case_are_two_tasks_to_both(shared: Shared) -> None:
    shared.app.backend.store_result("Job-1", "celery's", "SUCCESS")
    assert shared.ours.mark_as_done("job-1", "ours")
    assert shared.ours.mark_as_done("JOB-1", "ours too")
    assert shared.ours.get_result("Job-1") == "celery's"
    assert shared.app.AsyncResult("job-1").result == "ours"
    assert shared.app.AsyncResult("JOB-1").result == "ours too"
    shared.app.backend.forget("JOB-1")
    assert shared.ours.get_result("job-1") == "ours"
    assert shared.ours.get_state("JOB-1") == "PENDING"
