"""Task and group ids compare byte for byte on every engine.

MariaDB's (and MySQL's) default collation, ``utf8mb4_general_ci``, takes ``Job-1``
for ``job-1`` and ``café`` for ``cafe``: the second task's store was refused as a
duplicate, its read gave the first task's result, and forgetting ``JOB-1`` deleted
both. Tables created by the plugin now compare ids in ``utf8mb4_bin``; tables that
exist with the old collation (Celery's, or an older version's) get a warning at
start-up that names the exact ``ALTER TABLE`` statements, which the test runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from celery.backends.database.session import ResultModelBase

import resultstore
import resultstore_db
from resultstore import AsyncResult, Backend, GroupResult

KINDS = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}
TWINS = [("Job-1", "job-1", "JOB-1"), ("café", "cafe", "CAFÉ")]


@pytest.fixture(params=list(KINDS), ids=list(KINDS))
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(KINDS[request.param]))


def assert_ids_are_distinct(backend: Backend) -> None:
    for first, second, third in TWINS:
        assert backend.mark_as_done(first, "A") is True
        assert backend.mark_as_done(second, "B") is True  # another task, not a duplicate
        assert backend.get_result(first) == "A"
        assert backend.get_result(second) == "B"
        assert backend.forget(third) is False  # nothing stored under that id
        assert {t: m.result for t, m in backend.get_many([first, second, third]).items()} == {
            first: "A",
            second: "B",
            third: None,
        }
        assert backend.revoke(third)  # unfinished: it reads REVOKED now, the others do not
        assert backend.is_revoked(third)
        assert not backend.is_revoked(first)
        assert not backend.is_revoked(second)
        assert backend.get_result(first) == "A"
    GroupResult("G-1", [], backend).save()
    GroupResult("g-1", [AsyncResult("Job-1", backend)], backend).save()
    assert backend.restore_group("G-1") is not None
    restored = backend.restore_group("g-1")
    assert restored is not None
    assert [r.id for r in restored.results] == ["Job-1"]
    assert backend.delete_group("G-1")
    assert backend.restore_group("g-1") is not None


def test_ids_that_differ_only_in_case_or_accents_are_different_tasks(url: str) -> None:
    with Backend(url) as backend:
        assert_ids_are_distinct(backend)


@pytest.fixture
def old_tables(mysql_url: str) -> Iterator[sa.Engine]:
    """The tables as Celery (and this plugin before) created them: the default collation."""
    engine = sa.create_engine(mysql_url.replace("db+mysql://", "mysql+pymysql://"))
    ResultModelBase.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE resultstore_revoked (task_id VARCHAR(155) NOT NULL PRIMARY KEY, "
                "expires_at DATETIME(6) NULL, INDEX ix_resultstore_revoked_expires_at "
                "(expires_at))"
            )
        )
    yield engine
    engine.dispose()


FIXES = [
    "ALTER TABLE celery_taskmeta MODIFY task_id VARCHAR(155) CHARACTER SET utf8mb4 "
    "COLLATE utf8mb4_bin",
    "ALTER TABLE celery_tasksetmeta MODIFY taskset_id VARCHAR(155) CHARACTER SET utf8mb4 "
    "COLLATE utf8mb4_bin",
    "ALTER TABLE resultstore_revoked MODIFY task_id VARCHAR(155) CHARACTER SET utf8mb4 "
    "COLLATE utf8mb4_bin NOT NULL",
]


def test_old_tables_get_a_warning_with_the_statements_that_fix_them(
    mysql_url: str, old_tables: sa.Engine
) -> None:
    masked = resultstore.URL.parse(mysql_url).masked
    with pytest.warns(resultstore_db.CollationWarning) as warned:
        Backend(mysql_url).close()
    assert len(warned) == 1
    assert str(warned[0].message) == (
        f"the task id columns on {masked} ignore case and accents (the database's default "
        "collation), so ids such as 'Job-1' and 'job-1' are taken for one task; make them "
        "compare byte for byte with:\n" + "".join(f"{fix};\n" for fix in FIXES)
    )
    # resultstore_db.create_tables() is the start-up of a backend: it says the same.
    with pytest.warns(resultstore_db.CollationWarning, match="ALTER TABLE celery_taskmeta"):
        resultstore_db.create_tables(mysql_url)

    with old_tables.begin() as conn:
        for fix in FIXES:
            conn.execute(sa.text(fix))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fixed: no warning any more
        with Backend(mysql_url) as backend:
            assert_ids_are_distinct(backend)
