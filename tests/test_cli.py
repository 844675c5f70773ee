"""The ``resultstore`` command, run as a real process against real backends.

Most tests share a ``db+sqlite://`` file between this process (which stores
results with :class:`resultstore.Backend`) and the command; the push tests use
the machine's Redis. The command cannot be given a Redis key prefix (it is an
option, not part of the URL), so the Redis tests use task ids unique to the
test and delete their keys afterwards.

Waits are synchronised on what the command shows, never on sleeps: its progress
line on stderr (it is in its wait loop), or its subscription on the Redis
server (it waits by push).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import pytest
import redis

import resultstore
from resultstore import Backend, TaskInfo, _registry, cli

from .redis import conftest as redis_fixtures
from .threads import DEADLINE, wait_until

# The session fixture of tests/redis: the machine's Redis URL (the server started if down).
redis_server = redis_fixtures.redis_url

ENV = "RESULTSTORE_BACKEND"
MODULE = [sys.executable, "-m", "resultstore.cli"]
SCRIPT = shutil.which("resultstore", path=os.path.dirname(sys.executable))
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "tasks.py", line 3, in divide\n'
    "    return n / 0\n"
    "ZeroDivisionError: division by zero\n"
)
SHOW_KEYS = ["task_id", "state", "exists", "result", "traceback", "children", "date_done"]
EXTENDED = ["name", "args", "kwargs", "worker", "retries", "queue"]
INFO = TaskInfo(
    name="tasks.add",
    args=[1, 2],
    kwargs={"x": 1},
    worker="w1@host",
    retries=0,
    queue="celery",
    group_id="g1",
    parent_id="p1",
)


# --- running the command --------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str


def environ(backend: str | None = None) -> dict[str, str]:
    # faulthandler: a command that hangs prints every thread's stack on SIGABRT (finish).
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    env.pop(ENV, None)
    if backend is not None:
        env[ENV] = backend
    return env


def command(script: bool) -> list[str]:
    if script:
        assert SCRIPT is not None, f"no resultstore script next to {sys.executable}"
        return [SCRIPT]
    return list(MODULE)


def cli_run(*args: str, env: str | None = None, script: bool = False) -> Run:
    """Run ``resultstore ARGS`` to its end; ``env`` is $RESULTSTORE_BACKEND (unset if None)."""
    proc = subprocess.run(
        [*command(script), *args],
        capture_output=True,
        text=True,
        env=environ(env),
        timeout=60,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


# The command as a terminal starts it: Ctrl-C raises KeyboardInterrupt. A process started
# in the background by a non-interactive shell (CI scripts, `make test &`) inherits SIGINT
# ignored, and Python then leaves it ignored: the Ctrl-C test would wait forever.
INTERACTIVE = [
    sys.executable,
    "-c",
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('resultstore.cli', run_name='__main__', alter_sys=True)",
]


@contextmanager
def spawn(*args: str, command: Sequence[str] = MODULE) -> Iterator[subprocess.Popen[str]]:
    """Start ``resultstore ARGS``; killed (and its pipes closed) on the way out."""
    proc = subprocess.Popen(
        [*command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ(),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def read_line(stream: IO[str] | None, timeout: float = DEADLINE) -> str:
    """The next line of ``stream``; fail the test if none comes within ``timeout``."""
    assert stream is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"the command wrote no line within {timeout} s")


def finish(proc: subprocess.Popen[str]) -> Run:
    """Wait for ``proc``, reading what is left of its output meanwhile (a full pipe must
    not hold it up). One that does not end within a minute is made to print its threads'
    stacks (faulthandler, on SIGABRT), and the test fails with them."""
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"the command did not end within 60 s; its threads then:\n{err[-8000:]}")
    return Run(proc.returncode, out, err)


def block(*lines: str) -> str:
    """One task as the text output shows it: its lines, then an empty line."""
    return "\n".join(lines) + "\n\n"


def json_lines(out: str) -> list[dict[str, Any]]:
    assert out.endswith("\n")
    return [json.loads(line) for line in out.splitlines()]


def date_done(backend: Backend, task_id: str) -> str:
    done = backend.get_task_meta(task_id).date_done
    assert done is not None
    return done.isoformat()


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    """An SQLite file this process and the command's processes share."""
    return f"db+sqlite:///{tmp_path / 'r.sqlite'}"


@pytest.fixture
def store(url: str) -> Iterator[Backend]:
    with Backend(url, extended=True) as backend:
        yield backend


@pytest.fixture
def redis_store(redis_server: str) -> Iterator[Backend]:
    with Backend(redis_server, extended=True) as backend:
        yield backend


@pytest.fixture
def rid(redis_server: str) -> Iterator[Callable[[str], str]]:
    """Task ids of this test's own on the shared Redis; their keys are deleted afterwards."""
    token = f"cli-{uuid.uuid4().hex[:12]}-"

    def task_id(name: str) -> str:
        return token + name

    yield task_id
    client = redis.Redis.from_url(redis_server)
    keys = list(client.scan_iter(match=f"*{token}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def subscribed(redis_server: str, task_id: str) -> Callable[[], bool]:
    """Whether a client (the waiting command) is subscribed to ``task_id``'s channel."""
    channel = f"celery-task-meta-{task_id}"

    def check() -> bool:
        client = redis.Redis.from_url(redis_server)
        try:
            return any(count > 0 for _, count in client.pubsub_numsub(channel))
        finally:
            client.close()

    return check


def seed_failure(backend: Backend, task_id: str) -> None:
    backend.mark_as_failure(task_id, ZeroDivisionError("division by zero"), TRACEBACK)


def failure_block(backend: Backend, task_id: str) -> str:
    return block(
        f"task       {task_id}",
        "state      FAILURE",
        "result     ZeroDivisionError('division by zero')",
        f"date_done  {date_done(backend, task_id)}",
        "traceback:",
        "  Traceback (most recent call last):",
        '    File "tasks.py", line 3, in divide',
        "      return n / 0",
        "  ZeroDivisionError: division by zero",
    )


# --- plugins ----------------------------------------------------------------------------

PLUGINS_TABLE = """\
SCHEME         DISTRIBUTION        VERSION  CAPABILITIES                                                   STATUS
database       resultstore-db      0.1.0    per URL                                                        ok
db             resultstore-db      0.1.0    per URL                                                        ok
file           resultstore-file    0.1.0    cleanup,counter,groups,revoke,ttl                              ok
memory         resultstore-memory  0.1.0    async,cleanup,counter,get_many,groups,listing,push,revoke,ttl  ok
redis          resultstore-redis   0.1.0    async,counter,get_many,groups,listing,push,revoke,ttl          ok
redis+cluster  resultstore-redis   0.1.0    async,counter,get_many,groups,listing,push,revoke,ttl          ok
redis+socket   resultstore-redis   0.1.0    async,counter,get_many,groups,listing,push,revoke,ttl          ok
rediss         resultstore-redis   0.1.0    async,counter,get_many,groups,listing,push,revoke,ttl          ok
sentinel       resultstore-redis   0.1.0    async,counter,get_many,groups,listing,push,revoke,ttl          ok
unix           resultstore-redis   0.1.0    async,counter,get_many,groups,listing,push,revoke,ttl          ok
"""
REDIS_SCHEMES = ["redis", "redis+cluster", "redis+socket", "rediss", "sentinel", "unix"]


def test_console_script_is_installed_next_to_the_interpreter() -> None:
    assert SCRIPT is not None
    assert Path(SCRIPT).parent == Path(sys.executable).parent


def test_plugins_lists_every_installed_scheme_as_a_table() -> None:
    run = cli_run("plugins", script=True)
    assert run == Run(0, PLUGINS_TABLE, "")


def test_plugins_json_is_one_object_per_scheme() -> None:
    run = cli_run("plugins", "--json")
    assert (run.rc, run.err) == (0, "")
    records = json_lines(run.out)
    keys = ["scheme", "distribution", "version", "target", "capabilities", "error"]
    assert all(list(record) == keys for record in records)
    by_scheme = {record["scheme"]: record for record in records}
    assert list(by_scheme) == ["database", "db", "file", "memory", *REDIS_SCHEMES]
    assert by_scheme["memory"] == {
        "scheme": "memory",
        "distribution": "resultstore-memory",
        "version": "0.1.0",
        "target": "resultstore_memory:MemoryBackend",
        "capabilities": [
            "async",
            "cleanup",
            "counter",
            "get_many",
            "groups",
            "listing",
            "push",
            "revoke",
            "ttl",
        ],
        "error": None,
    }
    assert by_scheme["db"] == {
        "scheme": "db",
        "distribution": "resultstore-db",
        "version": "0.1.0",
        "target": "resultstore_db:DatabaseBackend",
        "capabilities": None,  # per URL
        "error": None,
    }
    assert by_scheme["file"] == {
        "scheme": "file",
        "distribution": "resultstore-file",
        "version": "0.1.0",
        "target": "resultstore_file:FileBackend",
        "capabilities": ["cleanup", "counter", "groups", "revoke", "ttl"],
        "error": None,
    }
    for scheme in REDIS_SCHEMES:
        assert by_scheme[scheme] == {
            "scheme": scheme,
            "distribution": "resultstore-redis",
            "version": "0.1.0",
            "target": "resultstore_redis:RedisBackend",
            "capabilities": [
                "async",
                "counter",
                "get_many",
                "groups",
                "listing",
                "push",
                "revoke",
                "ttl",
            ],
            "error": None,
        }


def test_plugins_shows_why_a_registered_plugin_does_not_load(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = (
        "BackendLoadError: the plugin registered for scheme 'broken' (no_such_module_xyz:Plugin) "
        "failed to import: ModuleNotFoundError: No module named 'no_such_module_xyz'"
    )
    resultstore.register_backend("broken", "no_such_module_xyz:Plugin")
    try:
        [broken] = [p for p in _registry.installed_plugins() if p.scheme == "broken"]
        assert broken == _registry.InstalledPlugin(
            scheme="broken",
            distribution=None,
            version=None,
            target="no_such_module_xyz:Plugin",
            capabilities=None,
            error=error,
        )
        assert cli.main(["plugins"]) == 0
        table = capsys.readouterr().out.splitlines()
        assert cli.main(["plugins", "--json"]) == 0
        records = json_lines(capsys.readouterr().out)
    finally:
        resultstore.unregister_backend("broken")
    [row] = [line for line in table if line.startswith("broken ")]
    assert re.fullmatch(
        r"broken +register_backend: no_such_module_xyz:Plugin +- +- +" + re.escape(error), row
    )
    # The other plugins still load.
    assert all(line.endswith("  ok") for line in table[1:] if line is not row)
    assert {
        "scheme": "broken",
        "distribution": None,
        "version": None,
        "target": "no_such_module_xyz:Plugin",
        "capabilities": None,
        "error": error,
    } in records
    assert "broken" not in resultstore.installed_schemes()


# --- show -------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [True, False], ids=["console-script", "python-m"])
def test_show_success(store: Backend, url: str, script: bool) -> None:
    store.mark_as_done("t1", {"a": [1, 2], "b": None})
    run = cli_run("--backend", url, "show", "t1", script=script)
    expected = block(
        "task       t1",
        "state      SUCCESS",
        "result     {'a': [1, 2], 'b': None}",
        f"date_done  {date_done(store, 't1')}",
    )
    assert run == Run(0, expected, "")


def test_show_failure_prints_the_traceback_and_exits_1(store: Backend, url: str) -> None:
    seed_failure(store, "bad")
    run = cli_run("--backend", url, "show", "bad")
    assert run == Run(1, failure_block(store, "bad"), "")


def test_show_of_an_unknown_id_is_pending_with_nothing_stored(url: str) -> None:
    run = cli_run("--backend", url, "show", "never-stored")
    assert run == Run(
        0, block("task       never-stored", "state      PENDING (nothing stored)"), ""
    )


def test_show_several_ids_in_order_exits_1_when_one_failed(store: Backend, url: str) -> None:
    store.mark_as_done("ok", 3)
    store.store_result("busy", {"current": 3, "total": 10}, "PROGRESS")
    store.store_result("queued", None, "PENDING")  # stored, unlike "unknown"
    seed_failure(store, "bad")
    run = cli_run("--backend", url, "show", "ok", "busy", "unknown", "queued", "bad")
    assert run.rc == 1
    assert run.err == ""
    assert run.out == (
        block(
            "task       ok",
            "state      SUCCESS",
            "result     3",
            f"date_done  {date_done(store, 'ok')}",
        )
        + block("task       busy", "state      PROGRESS", "result     {'current': 3, 'total': 10}")
        + block("task       unknown", "state      PENDING (nothing stored)")
        + block("task       queued", "state      PENDING", "result     None")
        + failure_block(store, "bad")
    )
    # No failure among them: exit 0; a revoked task counts as failed.
    assert cli_run("--backend", url, "show", "ok", "busy", "unknown").rc == 0
    store.mark_as_revoked("stopped", "no longer needed")
    assert cli_run("--backend", url, "show", "ok", "stopped").rc == 1


def test_show_json(store: Backend, url: str) -> None:
    store.mark_as_done("ok", [1, "two"])
    store.store_result("busy", {"current": 3}, "PROGRESS")
    seed_failure(store, "bad")
    run = cli_run("--backend", url, "show", "--json", "ok", "busy", "unknown", "bad")
    assert (run.rc, run.err) == (1, "")
    records = json_lines(run.out)
    assert [list(record) for record in records] == [SHOW_KEYS] * 4
    assert records == [
        {
            "task_id": "ok",
            "state": "SUCCESS",
            "exists": True,
            "result": [1, "two"],
            "traceback": None,
            "children": [],
            "date_done": date_done(store, "ok"),
        },
        {
            "task_id": "busy",
            "state": "PROGRESS",
            "exists": True,
            "result": {"current": 3},
            "traceback": None,
            "children": [],
            "date_done": None,
        },
        {
            "task_id": "unknown",
            "state": "PENDING",
            "exists": False,
            "result": None,
            "traceback": None,
            "children": [],
            "date_done": None,
        },
        {
            "task_id": "bad",
            "state": "FAILURE",
            "exists": True,
            "result": {
                "exc_type": "ZeroDivisionError",
                "exc_message": ["division by zero"],
                "exc_module": "builtins",
            },
            "traceback": TRACEBACK,
            "children": [],
            "date_done": date_done(store, "bad"),
        },
    ]


def test_show_a_hosts_extra_fields(store: Backend, url: str) -> None:
    store.store_result("tq", 5, "SUCCESS", extra={"taskiq": {"labels": {"a": 1}}})
    run = cli_run("--backend", url, "show", "tq")
    expected = block(
        "task       tq",
        "state      SUCCESS",
        "result     5",
        f"date_done  {date_done(store, 'tq')}",
        "taskiq     {'labels': {'a': 1}}",
    )
    assert run == Run(0, expected, "")
    [record] = json_lines(cli_run("--backend", url, "show", "tq", "--json").out)
    assert record["taskiq"] == {"labels": {"a": 1}}


def test_show_extended_fields(store: Backend, url: str) -> None:
    # The database keeps the extended fields but (like Celery's) no group_id or parent_id.
    store.mark_as_done("ext", 42, request=INFO)
    run = cli_run("--backend", url, "show", "ext")
    expected = block(
        "task       ext",
        "state      SUCCESS",
        "result     42",
        f"date_done  {date_done(store, 'ext')}",
        "name       'tasks.add'",
        "args       [1, 2]",
        "kwargs     {'x': 1}",
        "worker     'w1@host'",
        "retries    0",
        "queue      'celery'",
    )
    assert run == Run(0, expected, "")
    run = cli_run("--backend", url, "show", "ext", "--json")
    assert (run.rc, run.err) == (0, "")
    [record] = json_lines(run.out)
    assert list(record.items()) == [
        ("task_id", "ext"),
        ("state", "SUCCESS"),
        ("exists", True),
        ("result", 42),
        ("traceback", None),
        ("children", []),
        ("date_done", date_done(store, "ext")),
        ("name", "tasks.add"),
        ("args", [1, 2]),
        ("kwargs", {"x": 1}),
        ("worker", "w1@host"),
        ("retries", 0),
        ("queue", "celery"),
    ]


def test_show_on_redis_with_group_and_parent(
    redis_store: Backend,
    redis_server: str,
    rid: Callable[[str], str],
) -> None:
    ext = rid("ext")
    redis_store.mark_as_done(ext, "done", request=INFO)
    run = cli_run("--backend", redis_server, "show", ext)
    expected = block(
        f"task       {ext}",
        "state      SUCCESS",
        "result     'done'",
        f"date_done  {date_done(redis_store, ext)}",
        "group_id   'g1'",
        "parent_id  'p1'",
        "name       'tasks.add'",
        "args       [1, 2]",
        "kwargs     {'x': 1}",
        "worker     'w1@host'",
        "retries    0",
        "queue      'celery'",
    )
    assert run == Run(0, expected, "")
    run = cli_run("--backend", redis_server, "--json", "show", ext)
    assert (run.rc, run.err) == (0, "")
    [record] = json_lines(run.out)
    assert list(record) == [*SHOW_KEYS, "group_id", "parent_id", *EXTENDED]
    assert (record["group_id"], record["parent_id"], record["result"]) == ("g1", "p1", "done")


def test_show_reads_other_serializers_only_when_accepted(url: str) -> None:
    with Backend(url, serializer="pickle", accept_content=["pickle"]) as pickling:
        pickling.mark_as_done("pickled", {1, 2})
        done = date_done(pickling, "pickled")
    run = cli_run("--backend", url, "show", "pickled")
    assert run == Run(
        4,
        "",
        "resultstore: error: DecodeError: stored result of task 'pickled' refused: it is "
        "pickle data and 'pickle' is not in result_accept_content\n",
    )
    expected = block(
        "task       pickled", "state      SUCCESS", "result     {1, 2}", f"date_done  {done}"
    )
    assert cli_run("--backend", url, "--accept", "json,pickle", "show", "pickled") == Run(
        0, expected, ""
    )
    # Only pickle: the command's own writes (revocations) then go out as pickle too.
    assert cli_run("--backend", url, "show", "--accept", "pickle", "pickled") == Run(
        0, expected, ""
    )
    assert cli_run("--backend", url, "--accept", "pickle", "revoke", "p2") == Run(
        0, "p2  revoked\n", ""
    )
    with Backend(url, serializer="pickle", accept_content=["pickle"]) as pickling:
        assert pickling.get_state("p2") == "REVOKED"
    assert cli_run("--backend", url, "show", "p2").rc == 4  # pickle, refused by default
    run = cli_run("--backend", url, "--accept", "yaml2", "show", "pickled")
    assert run == Run(
        2,
        "",
        "resultstore: error: result_serializer 'yaml2' is not registered with kombu; choose one "
        "of ['json', 'msgpack', 'pickle', 'yaml']\n",
    )
    run = cli_run("--backend", url, "--accept", "json,yaml2", "show", "pickled")
    assert run == Run(
        2, "", "resultstore: error: result_accept_content: No encoder/decoder installed for yaml2\n"
    )


# --- wait -------------------------------------------------------------------------------


def test_wait_returns_a_result_stored_while_it_polls(store: Backend, url: str) -> None:
    store.store_result("job", {"step": 1}, "PROGRESS")
    with spawn("--backend", url, "wait", "job", "--timeout", "30") as proc:
        # The progress line: the command is in its wait loop, polling the file.
        assert read_line(proc.stderr) == "job  PROGRESS  {'step': 1}\n"
        store.mark_as_done("job", 7)
        run = finish(proc)
    expected = block(
        "task       job",
        "state      SUCCESS",
        "result     7",
        f"date_done  {date_done(store, 'job')}",
    )
    assert run == Run(0, expected, "")


def test_wait_for_a_task_stored_later(store: Backend, url: str) -> None:
    # The delay is the point: nothing is stored when the command starts waiting.
    timer = threading.Timer(0.3, store.mark_as_done, ("later", "finally"))
    timer.start()
    try:
        run = cli_run("--backend", url, "wait", "later", "--timeout", "30", "--json")
    finally:
        timer.cancel()
        timer.join()
    assert (run.rc, run.err) == (0, "")
    assert json_lines(run.out) == [
        {
            "task_id": "later",
            "state": "SUCCESS",
            "exists": True,
            "result": "finally",
            "traceback": None,
            "children": [],
            "date_done": date_done(store, "later"),
        }
    ]


def test_wait_by_push_on_redis(
    redis_store: Backend,
    redis_server: str,
    rid: Callable[[str], str],
) -> None:
    job = rid("job")
    with spawn("--backend", redis_server, "wait", job, "--timeout", "30") as proc:
        wait_until(subscribed(redis_server, job), "the command subscribed to the task's channel")
        redis_store.store_result(job, {"done": 1, "of": 2}, "PROGRESS")
        assert read_line(proc.stderr) == f"{job}  PROGRESS  {{'done': 1, 'of': 2}}\n"
        redis_store.mark_as_done(job, [1, 2])
        run = finish(proc)
    expected = block(
        f"task       {job}",
        "state      SUCCESS",
        "result     [1, 2]",
        f"date_done  {date_done(redis_store, job)}",
    )
    assert run == Run(0, expected, "")


def test_wait_with_an_infinite_timeout_waits_for_the_result(
    redis_store: Backend,
    redis_server: str,
    rid: Callable[[str], str],
) -> None:
    # inf (or more seconds than a lock can wait) means forever, not OverflowError.
    job = rid("job")
    with spawn("--backend", redis_server, "wait", job, "--timeout", "inf") as proc:
        wait_until(subscribed(redis_server, job), "the command subscribed to the task's channel")
        redis_store.mark_as_done(job, "ok")
        run = finish(proc)
    assert (run.rc, run.err) == (0, "")
    assert run.out.startswith(f"task       {job}\nstate      SUCCESS\nresult     'ok'\n")


@pytest.mark.parametrize("url_of", ["sqlite", "redis"])
def test_wait_is_interrupted_by_ctrl_c(
    store: Backend,
    url: str,
    redis_server: str,
    rid: Callable[[str], str],
    url_of: str,
) -> None:
    backend_url = url if url_of == "sqlite" else redis_server
    job = rid("job")
    if url_of == "sqlite":
        store.store_result(job, None, "STARTED")
    with spawn("--backend", backend_url, "wait", job, command=INTERACTIVE) as proc:
        if url_of == "sqlite":
            assert read_line(proc.stderr) == f"{job}  STARTED  None\n"
        else:
            wait_until(
                subscribed(redis_server, job), "the command subscribed to the task's channel"
            )
        proc.send_signal(signal.SIGINT)
        run = finish(proc)
    assert run == Run(130, "", "")


@pytest.mark.parametrize("how", ["failed", "revoked"])
def test_wait_for_a_failed_or_revoked_task_exits_1(store: Backend, url: str, how: str) -> None:
    if how == "failed":
        seed_failure(store, "bad")
        expected = failure_block(store, "bad")
    else:
        store.mark_as_revoked("bad", "stop it")
        expected = block(
            "task       bad",
            "state      REVOKED",
            "result     TaskRevokedError('stop it')",
            f"date_done  {date_done(store, 'bad')}",
        )
    store.mark_as_done("ok", 1)
    run = cli_run("--backend", url, "wait", "bad", "--timeout", "5")
    assert run == Run(1, expected, "")
    # Every id is printed as it is ready; one failure among them decides the exit code.
    run = cli_run("--backend", url, "wait", "ok", "bad")
    assert run.rc == 1
    assert run.out.count("task       ") == 2
    assert run.err == ""


def test_wait_times_out_with_exit_3(url: str) -> None:
    run = cli_run("--backend", url, "wait", "X", "--timeout", "0.2")
    assert run == Run(
        3,
        "",
        "resultstore: error: timed out: task 'X' was not ready within 0.2 s (state PENDING)\n",
    )


def test_wait_timeout_shows_progress_and_the_tasks_that_were_ready(
    store: Backend, url: str
) -> None:
    store.mark_as_done("ok", 1)
    store.store_result("busy", {"step": 2}, "PROGRESS")
    run = cli_run("--backend", url, "wait", "ok", "busy", "--timeout", "0.2")
    expected = block(
        "task       ok",
        "state      SUCCESS",
        "result     1",
        f"date_done  {date_done(store, 'ok')}",
    )
    assert run == Run(
        3,
        expected,
        "busy  PROGRESS  {'step': 2}\n"
        "resultstore: error: timed out: task 'busy' was not ready within 0.2 s (state PROGRESS)\n",
    )
    run = cli_run("--backend", url, "wait", "ok", "busy", "never", "--timeout", "0.2")
    assert run.rc == 3
    assert run.err.endswith(
        "resultstore: error: timed out: 2 tasks were not ready within 0.2 s: 'busy', 'never'\n"
    )
    # --json: no progress lines, only the JSON of the ready tasks.
    run = cli_run("--backend", url, "--json", "wait", "ok", "busy", "--timeout", "0.2")
    assert run.rc == 3
    assert [record["task_id"] for record in json_lines(run.out)] == ["ok"]
    assert run.err == (
        "resultstore: error: timed out: task 'busy' was not ready within 0.2 s (state PROGRESS)\n"
    )


def test_long_progress_is_shortened(store: Backend, url: str) -> None:
    store.store_result("busy", "x" * 100, "PROGRESS")
    run = cli_run("--backend", url, "wait", "busy", "--timeout", "0")
    assert run.rc == 3
    assert run.err.splitlines()[0] == "busy  PROGRESS  '" + "x" * 76 + "..."


# --- forget, revoke ---------------------------------------------------------------------


def test_forget(store: Backend, url: str) -> None:
    store.mark_as_done("a", 1)
    seed_failure(store, "b")
    run = cli_run("--backend", url, "forget", "a", "never")
    assert run == Run(0, "a  forgotten\nnever  nothing stored\n", "")
    assert not store.exists("a")
    run = cli_run("--backend", url, "forget", "--json", "a", "b")
    assert run.rc == 0
    assert json_lines(run.out) == [
        {"task_id": "a", "forgotten": False},
        {"task_id": "b", "forgotten": True},
    ]
    assert not store.exists("b")


def test_revoke(store: Backend, url: str) -> None:
    store.store_result("busy", {"step": 1}, "PROGRESS")
    store.mark_as_done("done", 5)
    run = cli_run("--backend", url, "revoke", "busy", "done", "queued", "--reason", "because")
    assert run == Run(
        0, "busy  revoked\ndone  already finished (SUCCESS); kept\nqueued  revoked\n", ""
    )
    revoked = {
        "exc_type": "TaskRevokedError",
        "exc_message": ["because"],
        "exc_module": "celery.exceptions",
    }
    for task_id in ("busy", "queued"):
        meta = store.get_task_meta(task_id)
        assert (meta.status, meta.result) == ("REVOKED", revoked)
        assert store.is_revoked(task_id)
    assert (store.get_state("done"), store.get_result("done")) == ("SUCCESS", 5)

    seed_failure(store, "bad")
    run = cli_run("--backend", url, "revoke", "--json", "busy", "bad", "new")
    assert run.rc == 0
    assert json_lines(run.out) == [
        {"task_id": "busy", "revoked": True, "state": "REVOKED"},
        {"task_id": "bad", "revoked": False, "state": "FAILURE"},
        {"task_id": "new", "revoked": True, "state": "REVOKED"},
    ]
    assert store.get_task_meta("new").result["exc_message"] == ["revoked"]  # the default reason


def test_show_revoke_and_forget_on_redis(
    redis_store: Backend,
    redis_server: str,
    rid: Callable[[str], str],
) -> None:
    busy, done = rid("busy"), rid("done")
    redis_store.mark_as_started(busy)
    redis_store.mark_as_done(done, 1)
    run = cli_run("revoke", busy, done, env=redis_server)
    assert run == Run(0, f"{busy}  revoked\n{done}  already finished (SUCCESS); kept\n", "")
    assert redis_store.get_state(busy) == "REVOKED"
    assert redis_store.is_revoked(busy)
    run = cli_run("show", busy, env=redis_server)
    assert run.rc == 1
    assert run.out.startswith(f"task       {busy}\nstate      REVOKED\n")
    run = cli_run("forget", busy, done, env=redis_server)
    assert run == Run(0, f"{busy}  forgotten\n{done}  forgotten\n", "")
    assert not redis_store.exists(busy)
    assert not redis_store.exists(done)


# --- cleanup ----------------------------------------------------------------------------


def age(store: Backend, *task_ids: str) -> None:
    """Date the tasks three days back: past the default result_expires of a day."""
    long_ago = (datetime.now(timezone.utc) - timedelta(days=3)).replace(tzinfo=None)
    task = store.plugin.tables.task
    with store.plugin.engine.begin() as conn:
        conn.execute(task.update().where(task.c.task_id.in_(task_ids)).values(date_done=long_ago))


def test_cleanup_deletes_expired_results_on_sqlite(store: Backend, url: str) -> None:
    for n in range(4):
        store.mark_as_done(f"t{n}", n)
    age(store, "t0", "t1", "t2")
    run = cli_run("--backend", url, "cleanup")
    assert (run.rc, run.out) == (0, "deleted 3 expired results\n")
    assert "deleting: 3 results" in run.err  # the progress bar (tqdm is installed)
    assert [store.exists(f"t{n}") for n in range(4)] == [False, False, False, True]

    age(store, "t3")
    assert cli_run("--backend", url, "cleanup", "--json") == Run(0, '{"deleted": 1}\n', "")
    assert not store.exists("t3")
    run = cli_run("--backend", url, "cleanup")
    assert (run.rc, run.out) == (0, "deleted 0 expired results\n")
    store.mark_as_done("t4", 4)
    age(store, "t4")
    run = cli_run("--backend", url, "cleanup")
    assert (run.rc, run.out) == (0, "deleted 1 expired result\n")


def test_cleanup_on_redis_has_nothing_to_do(redis_server: str) -> None:
    run = cli_run("--backend", redis_server, "cleanup")
    assert run == Run(0, f"{redis_server} expires results itself; nothing to clean up\n", "")
    assert cli_run("cleanup", "--json", env=redis_server) == Run(0, '{"deleted": 0}\n', "")


# --- usage and backend errors ------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["show", "x"], ["wait", "x"], ["forget", "x"], ["revoke", "x"], ["cleanup"]],
    ids=lambda args: args[0],
)
def test_no_backend_is_a_usage_error(args: list[str]) -> None:
    run = cli_run(*args)
    assert (run.rc, run.out) == (2, "")
    assert run.err.startswith("usage: resultstore ")
    assert run.err.endswith(
        "\nresultstore: error: no backend: pass --backend URL or set RESULTSTORE_BACKEND\n"
    )


def test_unknown_scheme_is_a_usage_error_with_the_password_masked() -> None:
    run = cli_run("--backend", "foo://user:s3cret@h/0", "show", "x")
    schemes = ", ".join(["database", "db", "file", "memory", *REDIS_SCHEMES])
    assert run == Run(
        2,
        "",
        "resultstore: error: no resultstore backend for scheme 'foo' in 'foo://user:****@h/0'; "
        f"installed schemes: {schemes}\n",
    )
    assert "s3cret" not in run.err


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        ("", "task id must not be empty"),
        (" x", "task id ' x' contains whitespace at its ends or control characters"),
        ("a" * 156, "task id is 156 characters long; the limit is 155"),
    ],
    ids=["empty", "whitespace", "too-long"],
)
@pytest.mark.parametrize("cmd", ["show", "wait", "forget", "revoke"])
def test_bad_task_id_is_a_usage_error(
    store: Backend, url: str, cmd: str, task_id: str, message: str
) -> None:
    store.store_result("ok", {"step": 1}, "PROGRESS")
    run = cli_run("--backend", url, cmd, "ok", task_id)
    assert run == Run(2, "", f"resultstore: error: {message}\n")
    # Every id is checked before any is acted on: "ok" was neither forgotten nor revoked.
    assert store.get_state("ok") == "PROGRESS"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "not a number of seconds: 'abc'"),
        ("-1", "must be a number of seconds >= 0: '-1'"),
        ("nan", "must be a number of seconds >= 0: 'nan'"),
    ],
)
def test_bad_timeout_is_a_usage_error(url: str, value: str, message: str) -> None:
    run = cli_run("--backend", url, "wait", "x", "--timeout", value)
    assert (run.rc, run.out) == (2, "")
    assert run.err.startswith("usage: resultstore wait ")
    assert run.err.endswith(f"\nresultstore wait: error: argument --timeout: {message}\n")


def test_no_command_is_a_usage_error() -> None:
    run = cli_run()
    assert (run.rc, run.out) == (2, "")
    assert run.err.endswith("resultstore: error: the following arguments are required: COMMAND\n")


def test_version() -> None:
    assert cli_run("--version") == Run(0, f"resultstore {resultstore.__version__}\n", "")


@pytest.mark.parametrize("cmd", [["show", "x"], ["wait", "x", "--timeout", "5"], ["forget", "x"]])
def test_unreachable_backend_exits_4_with_the_password_masked(cmd: list[str]) -> None:
    run = cli_run("--backend", "redis://:s3cret@127.0.0.1:1/0", *cmd)
    assert (run.rc, run.out) == (4, "")
    assert re.fullmatch(
        r"resultstore: error: BackendUnavailable: \w+ celery-task-meta-x failed on "
        r"redis://:\*\*\*\*@127\.0\.0\.1:1/0 after 4 attempts in [\d.]+ s, no retries left "
        r"\(max_retries=3\): ConnectionError: Error 111 connecting to 127\.0\.0\.1:1\. "
        r"Connection refused\.\n",
        run.err,
    ), run.err
    assert "s3cret" not in run.err


def test_unopenable_database_exits_4(tmp_path: Path) -> None:
    url = f"db+sqlite:///{tmp_path / 'missing' / 'r.sqlite'}"
    run = cli_run("--backend", url, "show", "x")
    assert (run.rc, run.out) == (4, "")
    assert re.fullmatch(
        re.escape(f"resultstore: error: BackendUnavailable: creating tables failed on {url} ")
        + r"after 4 attempts in \d+\.\d\d s, no retries left \(max_retries=3\): "
        + "OperationalError: unable to open database file\n",
        run.err,
    ), run.err


@pytest.mark.parametrize(
    "args",
    [
        ["--json", "--backend", "{url}", "show", "t1"],
        ["--backend", "{url}", "show", "t1", "--json"],
        ["show", "--json", "t1", "--backend", "{url}"],
        ["--json", "--backend", "foo://nowhere", "show", "--backend", "{url}", "t1"],
    ],
    ids=["before", "after", "mixed", "after-overrides-before"],
)
def test_options_before_or_after_the_command(store: Backend, url: str, args: list[str]) -> None:
    store.mark_as_done("t1", "v")
    run = cli_run(*(arg.format(url=url) for arg in args))
    assert (run.rc, run.err) == (0, "")
    assert [(r["task_id"], r["result"]) for r in json_lines(run.out)] == [("t1", "v")]


def test_backend_from_the_environment_and_overridden(store: Backend, url: str) -> None:
    store.mark_as_done("t1", "v")
    expected = block(
        "task       t1",
        "state      SUCCESS",
        "result     'v'",
        f"date_done  {date_done(store, 't1')}",
    )
    assert cli_run("show", "t1", env=url) == Run(0, expected, "")
    # --backend, before or after the command, wins over $RESULTSTORE_BACKEND.
    assert cli_run("show", "t1", "--backend", url, env="foo://nowhere") == Run(0, expected, "")
    assert cli_run("--backend", url, "show", "t1", env="foo://nowhere") == Run(0, expected, "")
    run = cli_run("show", "t1", env="foo://nowhere")
    assert run.rc == 2
    assert run.err.startswith("resultstore: error: no resultstore backend for scheme 'foo'")


# --- demo -------------------------------------------------------------------------------


def check_demo(run: Run) -> list[str]:
    assert (run.rc, run.err) == (0, ""), run.err
    lines = run.out.splitlines()
    assert "join() re-raised the failure: ZeroDivisionError: division by zero" in lines
    assert "completed: 4 of 5 succeeded" in lines
    assert lines[-1].endswith("left: none")
    return lines


def test_demo_on_a_temporary_sqlite_file() -> None:
    lines = check_demo(cli_run("demo"))
    assert re.fullmatch(
        r"backend: db\+sqlite:///\S+/results\.sqlite  \(workers: process pool\)", lines[0]
    )


@pytest.mark.parametrize(
    "args", [["demo", "memory://x"], ["--backend", "memory://x", "demo"]], ids=["arg", "option"]
)
def test_demo_on_a_given_url(args: Sequence[str]) -> None:
    lines = check_demo(cli_run(*args))
    assert lines[0] == "backend: memory://x  (workers: thread pool)"
