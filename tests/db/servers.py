"""Database servers the tests own: they can be crash-stopped, frozen and restarted.

PostgreSQL: ``initdb`` into a temporary directory, its own port. MariaDB: ``mariadbd`` on an
empty data directory with ``--skip-grant-tables`` (no ``mariadb-install-db`` needed: the
server creates its InnoDB files at first start, in a fraction of a second). Both are frozen
with SIGSTOP of every process of the server, which keeps its sockets open and answers
nothing: the fault a timeout must survive (tests/silent.py's ``frozen`` for one
process; a PostgreSQL server is many).
"""

from __future__ import annotations

import contextlib
import gc
import glob
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def remove_later(directory: Path) -> None:
    """Delete a server's files in the background: once the server has written them, that
    takes seconds on this machine's disk (discard on delete), which no test needs to wait."""
    subprocess.run(["sh", "-c", 'rm -rf -- "$1" &', "sh", str(directory)], check=True)


def _children(pid: int) -> list[int]:
    found = []
    for path in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):  # the process ended meanwhile
            fields = Path(path).read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(path.split("/")[2]))
    return found


def _stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped, or gone (a session that ended just before
    the freeze stays a zombie: its stopped parent cannot reap it)."""
    for path in glob.glob(f"/proc/{pid}/task/*/stat"):
        with contextlib.suppress(OSError):
            if Path(path).read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t", "Z", "X"):
                return False
    return True


class Freezer:
    """Freeze a server now, from anywhere (a hook of a plugin), and thaw it at the end.

    The main process first: once it is stopped it forks no new session, and then every
    child it has is stopped too (a child that exits meanwhile is no longer there to stop).
    ``freeze()`` returns once every thread has stopped: the kernel stops a process some
    time after the signal, and a busy machine lets a thread serve a request meanwhile.
    """

    def __init__(self, server: PostgresServer | MariaDBServer) -> None:
        self.server = server
        self._stopped: list[int] = []
        self.frozen_at = 0.0

    def freeze(self) -> None:
        assert not self._stopped, "frozen twice"
        main = self.server.pid()
        os.kill(main, signal.SIGSTOP)
        self._stopped = [main]
        for pid in _children(main):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                self._stopped.append(pid)
        deadline = time.monotonic() + 10
        while not all(_stopped(pid) for pid in self._stopped):
            assert time.monotonic() < deadline, "the server did not stop"
            time.sleep(0.001)
        self.frozen_at = time.monotonic()

    def thaw(self) -> None:
        stopped, self._stopped = self._stopped, []
        for pid in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# --- PostgreSQL --------------------------------------------------------------------------------


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: len(p))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """One PostgreSQL cluster: ``stop()`` is a crash (``-m immediate``), ``start()`` brings it
    back on the same port (running crash recovery)."""

    def __init__(self, bindir: Path, directory: Path) -> None:
        self.bindir = bindir
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = free_port()
        # The server refuses to run as root: run its tools as the postgres OS user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.as_user, str(self.bindir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=100"  # fsync: only an OS crash would lose data
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "30", "start")  # fmt: skip

    def stop(self) -> None:
        """Crash-like: the postmaster and its backends quit at once, no checkpoint."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def pid(self) -> int:
        """The postmaster's: it forks a process per session."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True
        )

    def create_database(self) -> str:
        name = f"rs_{uuid.uuid4().hex[:12]}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def listening(self, dbname: str) -> bool:
        """Whether some session of ``dbname`` is LISTENing (the plugin's channel)."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND query ILIKE 'LISTEN%%'",
                (dbname,),
            ).fetchone()
        return bool(row and row[0])


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = pg_bin()
    if bindir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("needs PostgreSQL's initdb/pg_ctl (/usr/lib/postgresql/*/bin)")
    # Not under pytest's tmp_path: its root is mode 0700 for root, and a concurrent
    # pytest session resets that mode, which would lock the postgres user out mid-run.
    directory = Path(tempfile.mkdtemp(prefix="resultstore-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
            directory.chmod(stat.S_IRWXU)
        server = PostgresServer(bindir, directory)
        server.init()
        server.start()
        yield server
        # A connect that a coroutine's cancellation abandoned keeps its socket until the
        # exception's traceback is collected, and the server a session waiting for its
        # startup packet, which an immediate stop waits 5 s for.
        gc.collect()
        if server.running():
            server.stop()
    finally:
        remove_later(directory)


# --- MariaDB -----------------------------------------------------------------------------------


class MariaDBServer:
    """One ``mariadbd`` on a temporary data directory, logins without passwords."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        log = self.directory / "error.log"
        self.process = subprocess.Popen(
            [
                self.binary, "--no-defaults", f"--datadir={data}",
                f"--socket={self.directory / 'sock'}", f"--port={self.port}",
                "--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-name-resolve",
                f"--log-error={log}", f"--pid-file={self.directory / 'pid'}",
                "--skip-log-bin", "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M",
                "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
                # The machine's server's defaults, which the collation tests are about.
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
                *(["--user=root"] if os.geteuid() == 0 else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                self.connect().close()
                return
            except pymysql.err.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"mariadbd did not start:\n{text}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """At once: the data directory is thrown away."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)
            self.process = None

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def connect(self, database: str | None = None) -> pymysql.Connection:
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", database=database, autocommit=True
        )

    def create_database(self) -> str:
        name = f"rs_{uuid.uuid4().hex[:12]}"
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}`")
        return name


@contextmanager
def mariadb_server() -> Iterator[MariaDBServer]:
    binary = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
    if binary is None:
        pytest.skip("needs MariaDB's server binary (mariadbd)")
    directory = Path(tempfile.mkdtemp(prefix="resultstore-mariadb-"))
    server = MariaDBServer(binary, directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        remove_later(directory)
