"""The tables resultstore-db creates are Celery's, on SQLite, PostgreSQL and MariaDB.

The reference is Celery itself: ``celery.backends.database``'s models are
created with their own metadata in a second, separate database, and both
databases are reflected (``sa.inspect``) and compared table by table, column by
column: names and order, compiled types, nullability, defaults, primary keys,
unique constraints, indexes, and sequences where the engine has them.

The intended differences, and only these, are allowed:

- ``date_done`` is ``DATETIME(6)`` on MySQL/MariaDB (Celery: ``DATETIME``, whole
  seconds), so that expiry and ordering see sub-second times. Both read and
  write the same Python datetimes.
- ``task_id`` and ``taskset_id`` compare byte for byte on MySQL/MariaDB
  (``utf8mb4_bin``; Celery: the database's default collation, which ignores case
  and accents). Both read and write the same strings.
- the extra tables ``resultstore_revoked`` (revocations; Celery keeps them in
  worker memory) and ``resultstore_counters`` (chords); Celery never looks at them.
- one more index on ``celery_taskmeta``, (status, date_done, task_id), for listing
  (task ids collated "C" on PostgreSQL); an index changes nothing Celery reads or
  writes.

Then Celery's options (``database_table_names``, ``database_table_schemas``),
``database_create_tables_at_setup=False`` with ``resultstore_db.create_tables``,
and table creation by a role without the CREATE right.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import celery
import pytest
import sqlalchemy as sa
from celery.backends.database import models as celery_models
from celery.backends.database.session import ResultModelBase
from sqlalchemy.engine import make_url

import resultstore_db
from resultstore import Backend, GroupResult
from resultstore_db import _engine
from resultstore_db._schema import make_tables

KINDS = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}

TASK_COLUMNS = [
    "id",
    "task_id",
    "status",
    "result",
    "date_done",
    "traceback",
    "children",
    "name",
    "args",
    "kwargs",
    "worker",
    "retries",
    "queue",
    "stamps",
]
GROUP_COLUMNS = ["id", "taskset_id", "result", "date_done"]
# Generic SQLAlchemy classes the reflected types must be instances of.
GENERIC = {
    "id": sa.Integer,
    "task_id": sa.String,
    "taskset_id": sa.String,
    "status": sa.String,
    "result": sa.LargeBinary,
    "date_done": sa.DateTime,
    "traceback": sa.Text,
    "children": sa.LargeBinary,
    "name": sa.String,
    "args": sa.LargeBinary,
    "kwargs": sa.LargeBinary,
    "worker": sa.String,
    "retries": sa.Integer,
    "queue": sa.String,
    "stamps": sa.LargeBinary,
}
LENGTHS = {
    "task_id": 155,
    "taskset_id": 155,
    "status": 50,
    "name": 155,
    "worker": 155,
    "queue": 155,
}
# (dialect, column) -> (ours, Celery's): the documented differences.
BINARY_ID = "VARCHAR(155) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
INTENDED = {
    ("mysql", "date_done"): ("DATETIME(6)", "DATETIME"),
    ("mysql", "task_id"): (BINARY_ID, "VARCHAR(155)"),
    ("mysql", "taskset_id"): (BINARY_ID, "VARCHAR(155)"),
}
OUR_EXTRA_TABLES = {"resultstore_revoked", "resultstore_counters"}
LISTING_INDEX = (
    "ix_celery_taskmeta_status_date_done_task_id",
    ("status", "date_done", "task_id"),
    False,
)


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(params=list(KINDS), ids=list(KINDS))
def url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on each engine (``db+...`` URL)."""
    return str(request.getfixturevalue(KINDS[request.param]))


def inner(url: str) -> str:
    return url.removeprefix("db+")


@pytest.fixture
def engines() -> Iterator[Callable[[str], sa.Engine]]:
    """Engines of our own (not the plugin's cached ones) for reflection; disposed after."""
    made: list[sa.Engine] = []

    def make(url: str) -> sa.Engine:
        engine = sa.create_engine(_engine.normalize(inner(url)))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture
def second_database(url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Another empty database on the same engine as ``url``: where Celery's tables go."""
    name = f"rs_celery_{uuid.uuid4().hex[:12]}"
    parsed = _engine.normalize(inner(url))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        yield f"db+sqlite:///{tmp_path / 'celery.db'}"
        return
    admin_url = request.getfixturevalue(
        "postgres_admin" if backend == "postgresql" else "mysql_admin"
    )
    options = {"isolation_level": "AUTOCOMMIT"} if backend == "postgresql" else {}
    admin = sa.create_engine(admin_url, **options)
    quote = '"' if backend == "postgresql" else "`"
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {quote}{name}{quote}"))
    try:
        yield "db+" + parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if backend == "postgresql" else ""
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE {quote}{name}{quote}{force}"))
        admin.dispose()


@pytest.fixture
def default_celery_models() -> Iterator[None]:
    """Celery's models at their defaults before and after (``configure()`` is global state)."""
    for model in (celery_models.Task, celery_models.TaskSet):
        model.configure()
    yield
    for model in (celery_models.Task, celery_models.TaskSet):
        model.configure()


def describe(engine: sa.Engine, schema: str | None = None) -> dict[str, dict[str, Any]]:
    """Every table of ``schema``, reflected into plain comparable data."""
    inspector = sa.inspect(engine)
    dialect = engine.dialect
    tables: dict[str, dict[str, Any]] = {}
    for table in inspector.get_table_names(schema=schema):
        columns = inspector.get_columns(table, schema=schema)
        tables[table] = {
            "columns": [c["name"] for c in columns],
            "types": {c["name"]: c["type"].compile(dialect=dialect) for c in columns},
            "type_objects": {c["name"]: c["type"] for c in columns},
            "nullable": {c["name"]: c["nullable"] for c in columns},
            "defaults": {c["name"]: c.get("default") for c in columns},
            "pk": inspector.get_pk_constraint(table, schema=schema)["constrained_columns"],
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table, schema=schema)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table, schema=schema)
            ),
        }
    return tables


def sequences(engine: sa.Engine, schema: str | None = None) -> set[str]:
    if not engine.dialect.supports_sequences:
        return set()
    return set(sa.inspect(engine).get_sequence_names(schema=schema))


def assert_celery_table(
    tables: dict[str, dict[str, Any]],
    table: str,
    columns: list[str],
    key: str,
    dialect: str,
    schema: str | None = None,
) -> None:
    """The facts of Celery's models, stated directly (not only "equal to Celery's")."""
    desc = tables[table]
    assert desc["columns"] == columns
    for name, type_ in desc["type_objects"].items():
        assert isinstance(type_, GENERIC[name]), (name, type_)
        if name in LENGTHS:
            assert not isinstance(type_, sa.Text), name
            assert type_.length == LENGTHS[name], name
    assert desc["nullable"] == {name: name != "id" for name in columns}
    assert desc["pk"] == ["id"]
    assert [cols for _, cols in desc["unique"]] == [(key,)]
    assert [i for i in desc["indexes"] if i[1] == ("date_done",)] == [
        # SQLAlchemy's (and so Celery's) index name: ix_<schema>_<table>_<column>
        (f"ix_{schema + '_' if schema else ''}{table}_date_done", ("date_done",), False)
    ]
    if dialect == "mysql":
        assert desc["types"]["date_done"] == "DATETIME(6)"


# --- the tables match Celery's ---------------------------------------------------------------


@pytest.mark.usefixtures("default_celery_models")
def test_tables_match_celerys_models(
    url: str, second_database: str, engines: Callable[[str], sa.Engine]
) -> None:
    Backend(url).close()  # creates the tables (database_create_tables_at_setup defaults True)
    ours_engine = engines(url)
    celery_engine = engines(second_database)
    ResultModelBase.metadata.create_all(celery_engine)  # Celery's own models, as Celery does
    dialect = ours_engine.dialect.name
    ours, theirs = describe(ours_engine), describe(celery_engine)

    assert set(theirs) == {"celery_taskmeta", "celery_tasksetmeta"}
    assert set(ours) - set(theirs) == OUR_EXTRA_TABLES
    assert_celery_table(ours, "celery_taskmeta", TASK_COLUMNS, "task_id", dialect)
    assert_celery_table(ours, "celery_tasksetmeta", GROUP_COLUMNS, "taskset_id", dialect)

    for table, reference in theirs.items():
        mine = ours[table]
        assert mine["columns"] == reference["columns"], table
        for column in reference["columns"]:
            expected = INTENDED.get((dialect, column), (reference["types"][column],) * 2)
            assert (mine["types"][column], reference["types"][column]) == expected, (
                table,
                column,
            )
            assert type(mine["type_objects"][column]) is type(reference["type_objects"][column])
        for aspect in ("nullable", "defaults", "pk", "unique"):
            assert mine[aspect] == reference[aspect], (table, aspect)
        extra = [LISTING_INDEX] if table == "celery_taskmeta" else []
        assert mine["indexes"] == sorted([*reference["indexes"], *extra]), table
    if dialect == "postgresql":  # ids in code point order, whatever the database's collation
        with ours_engine.connect() as conn:
            definition = conn.execute(
                sa.text("SELECT pg_get_indexdef(CAST(:name AS regclass))"),
                {"name": LISTING_INDEX[0]},
            ).scalar()
        assert definition == (
            f"CREATE INDEX {LISTING_INDEX[0]} ON public.celery_taskmeta "
            'USING btree (status, date_done, task_id COLLATE "C")'
        )

    # Sequences: PostgreSQL and MariaDB (10.3+) have them, and Celery's models declare them.
    assert sequences(ours_engine) == sequences(celery_engine)
    if dialect == "postgresql":
        assert sequences(ours_engine) == {"task_id_sequence", "taskset_id_sequence"}

    # Our extra table: revocations by task id, expiring through an indexed column.
    revoked = ours["resultstore_revoked"]
    assert revoked["columns"] == ["task_id", "expires_at"]
    assert revoked["pk"] == ["task_id"]
    assert isinstance(revoked["type_objects"]["expires_at"], sa.DateTime)
    assert [i[1] for i in revoked["indexes"]] == [("expires_at",)]
    if dialect == "mysql":
        assert revoked["types"]["task_id"] == BINARY_ID

    # And counters (capability "counter"): a value by name, expiring the same way.
    counters = ours["resultstore_counters"]
    assert counters["columns"] == ["name", "value", "expires_at"]
    assert counters["pk"] == ["name"]
    assert isinstance(counters["type_objects"]["value"], sa.BigInteger)
    assert [i[1] for i in counters["indexes"]] == [("expires_at",)]
    if dialect == "mysql":
        assert counters["types"]["name"] == BINARY_ID


def test_metadata_matches_celerys_models_column_for_column() -> None:
    """Dialect-free: our Table objects against Celery's, by name, type and flags."""
    tables = make_tables({}, {})
    for ours, theirs in [
        (tables.task, celery_models.TaskExtended.__table__),
        (tables.group, celery_models.TaskSet.__table__),
    ]:
        assert ours.name == theirs.name
        assert [c.name for c in ours.columns] == [c.name for c in theirs.columns]
        for mine in ours.columns:
            ref = theirs.columns[mine.name]
            assert str(mine.type) == str(ref.type), mine.name
            flags = ("nullable", "primary_key", "unique", "index", "autoincrement")
            assert [getattr(mine, f) for f in flags] == [getattr(ref, f) for f in flags]
        ours_seq, their_seq = ours.c.id.default, theirs.c.id.default
        assert isinstance(ours_seq, sa.Sequence)
        assert isinstance(their_seq, sa.Sequence)
        assert ours_seq.name == their_seq.name


# --- Celery's options ------------------------------------------------------------------------


def test_table_names_are_honoured(url: str, engines: Callable[[str], sa.Engine]) -> None:
    names = {"task": "my_tasks", "group": "my_groups"}
    with Backend(url, options={"database_table_names": names}) as backend:
        tables = describe(engines(url))
        assert set(tables) == {"my_tasks", "my_groups", *OUR_EXTRA_TABLES}
        dialect = engines(url).dialect.name
        assert_celery_table(tables, "my_tasks", TASK_COLUMNS, "task_id", dialect)
        assert_celery_table(tables, "my_groups", GROUP_COLUMNS, "taskset_id", dialect)

        backend.mark_as_done("t1", {"v": 1})
        GroupResult("g1", [], backend).save()
        with engines(url).connect() as conn:
            assert conn.execute(sa.text("SELECT task_id, status FROM my_tasks")).all() == [
                ("t1", "SUCCESS")
            ]
            assert conn.execute(sa.text("SELECT taskset_id FROM my_groups")).all() == [("g1",)]
        assert backend.get_result("t1") == {"v": 1}
        assert backend.restore_group("g1") is not None


@pytest.mark.usefixtures("default_celery_models")
def test_table_schemas_are_honoured_and_shared_with_celery(
    postgres_url: str, engines: Callable[[str], sa.Engine]
) -> None:
    """Tables and their id sequences go to the schema; Celery and we share both.

    Celery's ``configure()`` puts the id sequence in the table's schema, and rows
    written by both draw ids from that one sequence. (Before the plugin put its
    sequences there too, Celery failed on our tables: relation
    "s1.task_id_sequence" does not exist.)
    """
    admin = engines(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA s1"))
    names = {"task": "my_tasks", "group": "my_groups"}
    schemas = {"task": "s1", "group": "s1"}
    options = {"database_table_names": names, "database_table_schemas": schemas}
    with Backend(postgres_url, options=options) as backend:
        assert set(describe(admin, "s1")) == {"my_tasks", "my_groups", *OUR_EXTRA_TABLES}
        assert describe(admin) == {}  # nothing in public
        assert sequences(admin, "s1") == {"task_id_sequence", "taskset_id_sequence"}
        assert sequences(admin) == set()
        in_s1 = describe(admin, "s1")
        assert_celery_table(in_s1, "my_tasks", TASK_COLUMNS, "task_id", "postgresql", "s1")
        assert_celery_table(in_s1, "my_groups", GROUP_COLUMNS, "taskset_id", "postgresql", "s1")

        app = celery.Celery("schemas", set_as_current=False)
        app.conf.update(
            result_backend="db+" + str(admin.url.render_as_string(hide_password=False)),
            database_table_names=names,
            database_table_schemas=schemas,
        )
        try:
            for n in range(3):  # interleaved writers, one sequence
                backend.mark_as_done(f"ours-{n}", n)
                app.backend.store_result(f"celery-{n}", n * 10, "SUCCESS")
            GroupResult("g-ours", [], backend).save()
            app.GroupResult("g-celery", []).save()
            assert sequences(admin) == set()  # Celery found our sequences; none added
            for n in range(3):
                assert app.AsyncResult(f"ours-{n}").result == n
                assert backend.get_result(f"celery-{n}") == n * 10
            assert backend.restore_group("g-celery") is not None
            assert app.GroupResult.restore("g-ours") is not None
        finally:
            app.close()
        with admin.connect() as conn:
            ids = conn.execute(sa.text("SELECT id FROM s1.my_tasks ORDER BY id")).scalars()
            assert list(ids) == [1, 2, 3, 4, 5, 6]


# --- creating the tables ---------------------------------------------------------------------


def test_without_create_at_setup_the_first_store_says_what_to_do(
    url: str, engines: Callable[[str], sa.Engine]
) -> None:
    options = {"database_create_tables_at_setup": False}
    with Backend(url, options=options) as backend:
        assert sa.inspect(engines(url)).get_table_names() == []
        with pytest.raises(resultstore_db.MissingTablesError) as raised:
            backend.mark_as_done("t1", 1)
        message = str(raised.value)
        assert "celery_taskmeta" in message
        assert backend.url.masked in message
        assert "resultstore_db.create_tables(url)" in message
        with pytest.raises(resultstore_db.MissingTablesError, match="celery_taskmeta"):
            backend.get_state("t1")

        resultstore_db.create_tables(url)
        tables = sa.inspect(engines(url)).get_table_names()
        assert set(tables) == {"celery_taskmeta", "celery_tasksetmeta", *OUR_EXTRA_TABLES}
        assert backend.mark_as_done("t1", 1)
        assert backend.get_result("t1") == 1
        resultstore_db.create_tables(url)  # idempotent
        assert backend.get_result("t1") == 1


@dataclass
class Restricted:
    """A login without the right to create tables, and how to let it use them."""

    url: str  # with the password "sekrit"
    masked: str
    denial: str  # the server's words
    grant: Callable[[], None]  # run after the tables exist: the rights to use them


def _drop_cached_engines(user: str) -> None:
    for key, engine in list(_engine._engines.items()):
        if make_url(key[1]).username == user:
            engine.dispose()


@pytest.fixture
def postgres_restricted(
    postgres_url: str, engines: Callable[[str], sa.Engine]
) -> Iterator[Restricted]:
    """A PostgreSQL role without CREATE on the test database's public schema (trust auth)."""
    role = f"rs_ro_{uuid.uuid4().hex[:8]}"
    admin = engines(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD 'sekrit'"))
        conn.execute(sa.text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))

    def grant() -> None:
        with admin.connect() as conn:
            rights = "SELECT, INSERT, UPDATE, DELETE ON ALL TABLES"
            conn.execute(sa.text(f"GRANT {rights} IN SCHEMA public TO {role}"))
            conn.execute(sa.text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"))

    database = postgres_url.rsplit("/", 1)[1]
    yield Restricted(
        url=f"db+postgresql://{role}:sekrit@127.0.0.1:5432/{database}",
        masked=f"db+postgresql://{role}:****@127.0.0.1:5432/{database}",
        denial="permission denied for schema public",
        grant=grant,
    )
    _drop_cached_engines(role)
    with admin.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
            {"r": role},
        )
        conn.execute(sa.text(f"DROP OWNED BY {role}"))
        conn.execute(sa.text(f"DROP ROLE {role}"))


@pytest.fixture
def mariadb_restricted(mysql_url: str, engines: Callable[[str], sa.Engine]) -> Iterator[Restricted]:
    """A MariaDB user with SELECT, INSERT, UPDATE, DELETE on the test database, no CREATE."""
    user = f"rs_ro_{uuid.uuid4().hex[:8]}"
    database = mysql_url.rsplit("/", 1)[1]
    admin = engines(mysql_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'sekrit'"))
        rights = "SELECT, INSERT, UPDATE, DELETE"
        conn.execute(sa.text(f"GRANT {rights} ON `{database}`.* TO '{user}'@'%'"))
    yield Restricted(
        url=f"db+mysql://{user}:sekrit@127.0.0.1:3306/{database}",
        masked=f"db+mysql://{user}:****@127.0.0.1:3306/{database}",
        denial=f"CREATE command denied to user '{user}'",
        grant=lambda: None,  # the database-wide grant covers tables made later
    )
    _drop_cached_engines(user)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP USER '{user}'@'%'"))


@pytest.mark.parametrize("restricted_fixture", ["postgres_restricted", "mariadb_restricted"])
def test_creating_tables_without_the_right_names_the_masked_url(
    restricted_fixture: str, request: pytest.FixtureRequest, engines: Callable[[str], sa.Engine]
) -> None:
    restricted: Restricted = request.getfixturevalue(restricted_fixture)
    admin_url = request.getfixturevalue(
        "postgres_url" if restricted_fixture.startswith("postgres") else "mysql_url"
    )

    started = time.monotonic()
    with pytest.raises(PermissionError) as raised:
        resultstore_db.create_tables(restricted.url)
    # A denial is no transient error: reported at once, not after the retry policy's sleeps.
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert message.startswith(f"cannot create the result tables on {restricted.masked}: ")
    assert restricted.denial in message
    assert "resultstore_db.create_tables(url)" in message
    assert "sekrit" not in message
    assert isinstance(raised.value.__cause__, sa.exc.DBAPIError)

    # Through Backend() the plugin's own PermissionError reaches the user unchanged.
    with pytest.raises(PermissionError) as loading:
        Backend(restricted.url)
    assert str(loading.value).startswith(f"cannot create the result tables on {restricted.masked}")
    assert "sekrit" not in str(loading.value)
    assert sa.inspect(engines(admin_url)).get_table_names() == []

    # The way out the message gives: create as a privileged user, then run without the right.
    resultstore_db.create_tables(admin_url)
    restricted.grant()
    for create in (False, True):  # True: every table exists, so nothing needs creating
        with Backend(restricted.url, options={"database_create_tables_at_setup": create}) as b:
            assert b.mark_as_done(f"t-{create}", "stored without CREATE")
            assert b.get_result(f"t-{create}") == "stored without CREATE"


def test_the_fast_path_reads_rows_as_sqlalchemy_would(sqlite_url: str) -> None:
    """Types SQLAlchemy's result processing would convert: SQLite's date text, and
    bytea as memoryview (psycopg2)."""
    with Backend(sqlite_url) as backend:
        fast = backend.plugin.statements.select  # type: ignore[attr-defined]
        raw = [None] * len(fast.columns)
        raw[fast.columns.index("date_done")] = "2026-11-25 12:00:01.000002"
        raw[fast.columns.index("result")] = memoryview(b'{"a": 1}')
        row = fast._row(tuple(raw))
        assert row["date_done"] == datetime(2026, 11, 25, 12, 0, 1, 2)
        assert type(row["result"]) is bytes
        assert row["result"] == b'{"a": 1}'
