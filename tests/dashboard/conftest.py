"""The dashboard's server as a user runs it, and a real headless Chromium to look at it.

- :func:`start_server` runs the ``resultstore-dashboard`` console script (uvicorn) in a
  process of its own, on a port the system picks (``--port 0``); it is ready when
  uvicorn prints the address it serves and ``/healthz`` answers, within a deadline,
  and it is stopped by its pid (SIGTERM, then SIGKILL to its process group).
- The store the server and the tests share is a ``db+sqlite://`` file, which several
  processes open.
- Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright (never ``playwright
  install``). A machine without it skips the browser tests, except under CI, where a
  missing browser is a failure: ``make test`` installs it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY_WITHIN = 20.0
STOP_WITHIN = 10.0
READY_LINE = re.compile(r"Uvicorn running on http://\S+?:(\d+)")
TOKEN = "test-token-0123456789-abcdefgh"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def chromium() -> str:
    """The browser's path; a skip where it is missing, a failure under CI."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = (
        f"the browser tests need Debian's chromium at {CHROMIUM} "
        "(`apt-get install -y chromium`; `make test` installs it)"
    )
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def console_script() -> Path:
    script = Path(sys.executable).with_name("resultstore-dashboard")
    if not script.exists():
        pytest.fail(
            f"{script} is missing: install the dashboard distribution "
            "(`make` does: pip install -e 'dashboard[test]')"
        )
    return script


@dataclass
class Server:
    """A ``resultstore-dashboard`` process and what it printed."""

    proc: subprocess.Popen[str]
    token: str | None
    port: int | None = None
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = READY_LINE.search(line)
            if found:
                self.port = int(found[1])
                self.ready.set()
        self.ready.set()  # it exited: wake the waiter, which looks at the exit code

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_WITHIN)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_WITHIN)
        if self.reader is not None:
            self.reader.join(STOP_WITHIN)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RESULTSTORE_DASHBOARD_TOKEN", None)
    env.update(extra or {})
    return env


def start_server(backend: str, *, host: str = "127.0.0.1", token: str | None = None) -> Server:
    argv = [str(console_script()), "--backend", backend, "--host", host, "--port", "0"]
    # The token by the environment, as the README advises (not in the process list).
    env = server_env({"RESULTSTORE_DASHBOARD_TOKEN": token} if token else None)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    server = Server(proc, token)
    server.reader = threading.Thread(target=server.read, daemon=True)
    server.reader.start()
    if not server.ready.wait(READY_WITHIN) or server.port is None:
        server.stop()
        pytest.fail(f"the dashboard did not start within {READY_WITHIN} s:\n{server.output}")
    deadline = time.monotonic() + READY_WITHIN
    while True:
        request = urllib.request.Request(f"{server.url}/healthz")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            server.stop()
            pytest.fail(f"the dashboard's /healthz did not answer:\n{server.output}")
        time.sleep(0.05)


def shared_store_url(directory: Path) -> str:
    """A store the server's process and the tests' share, and that lists."""
    return f"db+sqlite:///{directory / 'results.db'}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module; each test opens a context of its own."""
    path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path, args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        try:
            yield launched
        finally:
            launched.close()
