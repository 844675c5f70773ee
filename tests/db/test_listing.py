"""Listing on SQL (capability ``listing``): what the conformance suite cannot see.

The SQL has risks of its own: ``%`` and ``_`` in an id prefix, unfinished rows
ordered by the date of their last store (a column the meta leaves out), rows
without a date (the column is nullable), histogram buckets computed by the server,
a table created before the listing index (Celery's, an older version's), rows this
client cannot decode, and plans that read the table instead of the index.
"""

from __future__ import annotations

import json
import pickle
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from resultstore import FAILURE, STARTED, SUCCESS, Backend, DecodeError, TaskMeta
from resultstore.listing import CountQuery, ListQuery, count_of
from resultstore_db import DatabaseBackend, ListingIndexWarning
from resultstore_db._listing import prefix_end

from .bulk import insert_metas

KINDS = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}
BASE = datetime(2020, 1, 1, tzinfo=timezone.utc)  # before any store of the test's own
INDEX = "ix_celery_taskmeta_status_date_done_task_id"
ERROR = {"exc_type": "ValueError", "exc_message": ["x"], "exc_module": "builtins"}


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


@pytest.fixture(params=list(KINDS), ids=list(KINDS))
def url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on each engine (``db+...`` URL)."""
    return str(request.getfixturevalue(KINDS[request.param]))


def plugin_of(backend: Backend) -> DatabaseBackend:
    plugin = backend.plugin
    assert isinstance(plugin, DatabaseBackend)
    return plugin


def pages(backend: Backend, limit: int, **filters: Any) -> Iterator[list[str]]:
    page = backend.list_results(limit=limit, **filters)
    yield [m.task_id for m in page.items]
    while page.cursor is not None:
        page = backend.list_results(limit=limit, cursor=page.cursor, **filters)
        yield [m.task_id for m in page.items]


def ids(backend: Backend, limit: int = 1000, **filters: Any) -> list[str]:
    return [task_id for page in pages(backend, limit, **filters) for task_id in page]


def test_prefix_end_is_the_least_string_above_the_prefix() -> None:
    assert prefix_end("job-") == "job."
    assert prefix_end("a%") == "a&"
    assert prefix_end("é") == "ê"
    assert prefix_end("a\ud7ff") == "a\ue000"  # over the surrogates, no characters of an id
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff\U0010ffff") is None


def test_id_prefix_is_literal_and_exact(url: str) -> None:
    stored = ["a%_1", "a%_2", "a%x", "a%", "a_1", "ax1", "a\\_1", "b", "é-1", "é", "e-1", "É-1"]
    with Backend(url) as backend:
        insert_metas(
            backend, [TaskMeta(t, SUCCESS, t, date_done=at(i)) for i, t in enumerate(stored)]
        )

        def found(prefix: str) -> list[str]:
            return sorted(ids(backend, 2, id_prefix=prefix))

        # LIKE would take % and _ for wildcards, and MariaDB's default collation É for é.
        assert found("a%_") == ["a%_1", "a%_2"]
        assert found("a%") == ["a%", "a%_1", "a%_2", "a%x"]
        assert found("a_") == ["a_1"]
        assert found("a\\") == ["a\\_1"]
        assert found("é") == ["é", "é-1"]
        assert found("É") == ["É-1"]
        assert found("a%_1") == ["a%_1"]
        assert found("c") == []
        assert backend.count_results(id_prefix="a%") == {SUCCESS: [4]}
        assert backend.count_results(id_prefix="é") == {SUCCESS: [2]}


def test_unfinished_results_sort_by_the_date_of_their_last_store(url: str) -> None:
    """In SQL an unfinished row's date_done is the time of its last store: listing
    orders by it (the reference, which has no such date, orders them by id)."""
    with Backend(url) as backend:
        progress = {"current": 1, "total": 3}
        insert_metas(
            backend,
            [
                TaskMeta("u-old", STARTED, date_done=at(1)),
                TaskMeta("u-tie-a", STARTED, date_done=at(2)),
                TaskMeta("u-tie-b", "PROGRESS", progress, date_done=at(2)),
                TaskMeta("u-new", STARTED, date_done=at(3)),
                TaskMeta("r-early", SUCCESS, 1, date_done=at(0)),
                TaskMeta("r-late", FAILURE, ERROR, date_done=at(5)),
            ],
        )
        expected = ["u-new", "u-tie-b", "u-tie-a", "u-old", "r-late", "r-early"]
        for limit in (1, 2, 3, 6):
            found = list(pages(backend, limit))
            assert [t for page in found for t in page] == expected
            assert [len(page) for page in found[:-1]] == [limit] * (len(found) - 1)
        first = backend.list_results(limit=2)
        assert [m.date_done for m in first.items] == [None, None]  # not in the meta
        assert ids(backend, 1, states={STARTED, "PROGRESS"}) == expected[:4]
        assert ids(backend, 1, states={STARTED}) == ["u-new", "u-tie-a", "u-old"]

        # A result stored again after the cursor was taken sorts before it (it is
        # newer): the pages after the cursor go on exactly where they were.
        backend.store_result("u-tie-a", {"current": 2, "total": 3}, "PROGRESS")
        rest = backend.list_results(limit=10, cursor=first.cursor)
        assert [m.task_id for m in rest.items] == ["u-old", "r-late", "r-early"]
        assert ids(backend)[:2] == ["u-tie-a", "u-new"]


def test_rows_without_a_date_list_after_the_dated_ones(url: str) -> None:
    """The column is nullable and other writers may leave it empty: such rows sort
    after the dated ones of their kind (``Position.at`` is None), by id."""
    with Backend(url) as backend:
        insert_metas(
            backend,
            [
                TaskMeta("d-run", STARTED, date_done=at(1)),
                TaskMeta("d-done", SUCCESS, 1, date_done=at(1)),
            ],
        )
        undated = ["n-run-a", "n-run-b", "n-done-a", "n-done-b"]
        insert_metas(
            backend,
            [TaskMeta(t, STARTED if "run" in t else SUCCESS, 2) for t in undated],
            date_done=None,
        )
        expected = ["d-run", "n-run-b", "n-run-a", "d-done", "n-done-b", "n-done-a"]
        for limit in (1, 2, 4):
            assert ids(backend, limit) == expected
        assert ids(backend, 1, since=at(0)) == expected  # no date: in a window that reaches now
        assert ids(backend, 1, until=at(2)) == ["d-done"]
        assert ids(backend, 1, states={SUCCESS}) == ["d-done", "n-done-b", "n-done-a"]
        assert backend.count_results() == {STARTED: [3], SUCCESS: [3]}
        assert backend.count_results(since=at(0)) == {STARTED: [3], SUCCESS: [3]}
        assert backend.count_results(since=at(0), until=at(2)) == {SUCCESS: [1]}


def test_histogram_buckets_end_exactly_at_their_bounds(url: str) -> None:
    """Results 1 us before, at and after each bound of the 24- and 150-bucket grids of a
    day: every bucket count equals the reference's, whether the server counts one range
    per bucket or computes each row's bucket (over 100 buckets; PostgreSQL always)."""
    since, until = at(0), at(86_400)
    micro = timedelta(microseconds=1)
    metas = [
        TaskMeta(f"edge-{i}", SUCCESS, i, date_done=d)
        for i, d in enumerate([since - micro, since, until - micro, until])
    ]
    for grid in (24, 150):
        step = (until - since) / grid
        for k in range(1, grid):
            for offset in (-1, 0, 1):
                state, result = (FAILURE, ERROR) if k % 3 == 0 else (SUCCESS, k)
                done = since + k * step + offset * micro
                metas.append(TaskMeta(f"g{grid}-{k}-{offset}", state, result, date_done=done))
    metas.append(TaskMeta("running", STARTED, date_done=at(3600)))
    with Backend(url) as backend:
        insert_metas(backend, metas)
        stored = list(backend.get_many([m.task_id for m in metas]).values())
        in_window = sum(since <= m.date_done < until for m in metas if m.status != STARTED)  # type: ignore[operator]
        assert in_window == len(metas) - 3
        for buckets in (1, 2, 7, 24, 100, 101, 150, 1000):
            query = CountQuery(since=since, until=until, buckets=buckets)
            counts = backend.count_results(since=since, until=until, buckets=buckets)
            assert counts == count_of(stored, query), buckets
            assert sum(map(sum, counts.values())) == in_window
        assert backend.count_results(since=since) == count_of(stored, CountQuery(since=since))
        assert backend.count_results(since=since)[STARTED] == [1]


def _sample(n: int = 300) -> list[TaskMeta]:
    metas = []
    for i in range(n):
        state, result = (FAILURE, ERROR) if i % 7 == 0 else (SUCCESS, i)
        if i % 50 == 0:
            state, result = STARTED, None
        name = f"tasks.t{i % 3}" if i % 2 else None
        metas.append(
            TaskMeta(
                f"s-{i:04}", state, result, date_done=at(i // 2), name=name, extended=bool(name)
            )
        )
    return metas


def _listing_of(backend: Backend) -> list[Any]:
    return [
        ids(backend, 7),
        ids(backend, 11, states={FAILURE}),
        ids(backend, 13, name="tasks.t1", since=at(20)),
        ids(backend, 5, id_prefix="s-01", until=at(100)),
        backend.count_results(),
        backend.count_results(since=at(10), until=at(130), buckets=12),
        backend.count_results(name="tasks.t2", since=at(30)),
    ]


def test_a_table_without_the_listing_index_lists_the_same(url: str) -> None:
    with Backend(url) as backend:
        insert_metas(backend, _sample())
        expected = _listing_of(backend)
        plugin = plugin_of(backend)
        engine = sa.create_engine(plugin.engine.url)
        with engine.begin() as conn:  # as a table created by Celery or an older version
            plugin.tables.listing.drop(conn)
    try:
        with Backend(url) as old:
            with pytest.warns(ListingIndexWarning, match="has no listing index") as warned:
                assert _listing_of(old) == expected
            assert len(warned) == 1  # once per backend
            found = re.search(r"^CREATE INDEX .*(?=;$)", str(warned[0].message), re.MULTILINE)
            assert found is not None
            assert found.group(0).startswith(f"CREATE INDEX {INDEX} ON celery_taskmeta (status")
        with engine.begin() as conn:
            conn.execute(sa.text(found.group(0)))
        with Backend(url) as fixed:  # no warning now (pytest turns warnings into errors)
            assert _listing_of(fixed) == expected
    finally:
        engine.dispose()


def test_a_row_this_client_cannot_decode_is_left_out(sqlite_url: str) -> None:
    """As on the key-value plugins: one record must not hide the others (a get of its
    id raises the error). The page it was on is shorter; paging goes on past it."""
    with Backend(sqlite_url) as backend:
        insert_metas(
            backend, [TaskMeta(t, SUCCESS, t, date_done=at(i)) for i, t in enumerate("abc")]
        )
        with sqlite3.connect(sqlite_url.removeprefix("db+sqlite:///")) as db:
            db.execute(
                "UPDATE celery_taskmeta SET result = ? WHERE task_id = 'b'", (pickle.dumps(42),)
            )
        assert list(pages(backend, 1)) == [["c"], [], ["a"]]
        assert backend.count_results() == {SUCCESS: [3]}  # counted: it is stored
        with pytest.raises(DecodeError, match="'pickle' is not in result_accept_content"):
            backend.get_task_meta("b")


# --- the plans: a page reads the index, a bounded number of rows ----------------------------


def _explain(backend: Backend, query: ListQuery) -> list[tuple[str, int | None]]:
    """(how, rows read) of every read of the task table in the plan of ``query``'s page,
    as the server ran it (ANALYZE; SQLite tells no counts)."""
    plugin = plugin_of(backend)
    assert plugin.listing is not None
    statement, params = plugin.listing.page(query)
    assert statement is not None
    raw = plugin.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if plugin.dialect == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {statement.sql}", statement._params(params))
            return [(row[3], None) for row in cursor.fetchall() if "celery_taskmeta" in row[3]]
        if plugin.dialect == "postgresql":
            cursor.execute(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {statement.sql}", statement._params(params)
            )
            nodes = _nodes(cursor.fetchone()[0][0]["Plan"], "Plans")
            return [
                (
                    f"{n['Node Type']} {n.get('Index Name', '')}",
                    n["Actual Rows"] * n["Actual Loops"] + n.get("Rows Removed by Filter", 0),
                )
                for n in nodes
                if n.get("Relation Name") == "celery_taskmeta"
            ]
        cursor.execute(f"ANALYZE FORMAT=JSON {statement.sql}", statement._params(params))
        tables = _nodes(json.loads(cursor.fetchone()[0]), None)
        return [
            (f"{t['access_type']} {t.get('key', '')}", round((t.get("r_rows") or 0) * t["r_loops"]))
            for t in tables
            if t.get("table_name") == "celery_taskmeta"
        ]
    finally:
        raw.close()


def _nodes(tree: Any, children: str | None) -> list[dict[str, Any]]:
    """Every dict in a JSON plan (PostgreSQL's nest under ``children``; MariaDB's anywhere)."""
    found = []
    if isinstance(tree, dict):
        found.append(tree)
        for key, value in tree.items():
            if children is None or key == children:
                found += _nodes(value, children)
    elif isinstance(tree, list):
        for item in tree:
            found += _nodes(item, children)
    return found


def test_pages_read_the_index_not_the_table(url: str) -> None:
    """On 5,000 results (20 unfinished), the first page, one 2,500 results deep and a
    state's page deep in read the listing index from their cursor: no full scan, and
    on PostgreSQL and MariaDB (which count) never more than a few pages' worth of rows."""
    with Backend(url) as backend:
        metas = [
            TaskMeta(
                f"p-{i:05}", *((FAILURE, ERROR) if i % 10 == 3 else (SUCCESS, i)), date_done=at(i)
            )
            for i in range(5000)
        ]
        metas += [TaskMeta(f"p-run-{i:02}", STARTED, date_done=at(i * 100)) for i in range(20)]
        insert_metas(backend, metas)
        plugin = plugin_of(backend)
        with plugin.engine.begin() as conn:  # what autovacuum and InnoDB's own statistics do
            if plugin.dialect == "postgresql":
                conn.execute(sa.text("ANALYZE celery_taskmeta"))
            elif plugin.dialect != "sqlite":  # SQLite users rarely run ANALYZE: plan without
                conn.execute(sa.text("ANALYZE TABLE celery_taskmeta"))
        page = backend.list_results(limit=50)
        for _ in range(50):
            assert page.cursor is not None
            page = backend.list_results(limit=50, cursor=page.cursor)
        assert page.items[0].task_id == "p-02519"  # after the 20 unfinished, 2,480 finished
        queries = {
            "first": ListQuery(limit=50),
            "deep": ListQuery(limit=50, cursor=page.cursor),
            "failures, deep": ListQuery(limit=50, states=frozenset({FAILURE}), cursor=page.cursor),
        }
        for what, query in queries.items():
            reads = _explain(backend, query)
            assert reads, what
            for how, rows in reads:
                assert not re.match(r"(SCAN celery_taskmeta|Seq Scan|ALL)", how), (what, reads)
                assert rows is None or rows <= 4 * 51, (what, reads)
                # SQLite counts nothing: a range of Celery's date index is the walk
                # over every date that reading the unfinished rows must not be.
                assert not re.search(r"_date_done \(date_done[<>]", how), (what, reads)
            assert any(INDEX in how for how, _ in reads), (what, reads)
