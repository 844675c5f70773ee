"""Database fixtures: SQLite files, the machine's PostgreSQL and MariaDB (started if down), and
servers of a test module's own (servers.py) for the faults the machine's must not suffer.

Each test gets a database of its own (created and dropped here), so tests never
see each other's rows.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from .servers import MariaDBServer, PostgresServer, mariadb_server, postgres_server

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MYSQL_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/test"
# The machine's own start commands (see the env notes), used only when nothing answers.
START = {
    "postgresql": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "mysql": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
}


def _up(admin_url: str) -> bool:
    engine = sa.create_engine(admin_url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def server(kind: str, admin_url: str) -> str:
    if _up(admin_url):
        return admin_url
    if shutil.which(START[kind].split()[0]):
        subprocess.run(START[kind], shell=True, check=False, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _up(admin_url):
                return admin_url
            time.sleep(0.2)
    pytest.fail(f"{kind} is not answering at {admin_url} and `{START[kind]}` did not start it")


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    return server("postgresql", PG_ADMIN)


@pytest.fixture(scope="session")
def mysql_admin() -> str:
    return server("mysql", MYSQL_ADMIN)


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """``db+postgresql://`` URL of a fresh database, dropped after the test."""
    name = f"rs_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(postgres_admin, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"db+postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def mysql_url(mysql_admin: str) -> Iterator[str]:
    """``db+mysql://`` URL of a fresh MariaDB database, dropped after the test."""
    name = f"rs_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(mysql_admin)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    yield f"db+mysql://root@127.0.0.1:3306/{name}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE `{name}`"))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"db+sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test module's own (initdb once per module)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDBServer]:
    """A MariaDB server of the test module's own (started once per module)."""
    with mariadb_server() as server:
        yield server
