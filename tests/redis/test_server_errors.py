"""Server answers that are not network errors are BackendUnavailable naming the masked URL
(issue 13, item 6): a database index out of range, a port that does not speak Redis's
protocol, refused credentials. The CLI exits 4 with one line, no traceback."""

from __future__ import annotations

import asyncio
import re
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from resultstore import Backend, BackendUnavailable, cli

from .servers import RedisServer

PASSWORD = "s3cret"


class _HTTP(socketserver.BaseRequestHandler):
    """Answers whatever comes the way an HTTP server answers a request it cannot parse,
    and keeps the connection open (as a keep-alive HTTP server does)."""

    def handle(self) -> None:
        while self.request.recv(1 << 16):
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def http_port() -> Iterator[int]:
    """An HTTP server where a Redis server was expected."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _HTTP)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own with a password."""
    server = RedisServer(tmp_path / "redis").start()
    with server.client() as admin:
        admin.config_set("requirepass", PASSWORD)
    yield server
    server.stop()


def test_a_database_index_out_of_range(guarded: RedisServer) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{guarded.port}/99"
    with Backend(url) as backend, pytest.raises(BackendUnavailable) as raised:
        backend.get_task_meta("t")
    assert re.fullmatch(
        re.escape(f"GET celery-task-meta-t failed on redis://:****@127.0.0.1:{guarded.port}/99")
        + r" after \d\.\d\d s, the server answered with an error: "
        + re.escape("ResponseError: DB index is out of range"),
        str(raised.value),
    ), str(raised.value)
    assert isinstance(raised.value.__cause__, redis.ResponseError)
    assert PASSWORD not in str(raised.value)


def test_a_wrong_password_is_refused_once(guarded: RedisServer) -> None:
    url = f"redis://:wrong@127.0.0.1:{guarded.port}/0"
    with Backend(url) as backend, pytest.raises(BackendUnavailable) as raised:
        backend.mark_as_done("t", 1)
    assert re.fullmatch(
        re.escape(f"storing celery-task-meta-t failed on redis://:****@127.0.0.1:{guarded.port}/0")
        + r" after \d\.\d\d s, the server refused the credentials: "
        + re.escape("AuthenticationError: invalid username-password pair or user is disabled."),
        str(raised.value),
    ), str(raised.value)


def read(backend: Backend, mode: str) -> object:
    if mode == "sync":
        return backend.get_task_meta("t")
    return asyncio.run(backend.aget_task_meta("t"))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_port_that_does_not_speak_redis(http_port: int, mode: str) -> None:
    url = f"redis://127.0.0.1:{http_port}/0"
    with Backend(url) as backend, pytest.raises(BackendUnavailable) as raised:
        read(backend, mode)
    assert re.fullmatch(
        re.escape(f"GET celery-task-meta-t failed on {url} after ")
        + r"\d\.\d\d s, the reply is not in Redis's protocol \(is a Redis server on that port\?\): "
        + re.escape("InvalidResponse: Protocol Error: b'HTTP/1.1 400 Bad Request'"),
        str(raised.value),
    ), str(raised.value)


@pytest.mark.parametrize("command", [["show", "t"], ["wait", "t"], ["forget", "t"]])
def test_the_cli_exits_4_with_one_line(
    guarded: RedisServer, http_port: int, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    for url, says in (
        (
            f"redis://:{PASSWORD}@127.0.0.1:{guarded.port}/99",
            "ResponseError: DB index is out of range",
        ),
        (f"redis://127.0.0.1:{http_port}/0", "InvalidResponse: Protocol Error: "),
    ):
        assert cli.main(["--backend", url, *command]) == cli.EXIT_BACKEND
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith("resultstore: error: BackendUnavailable: "), err
        assert says in err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        assert PASSWORD not in err
