"""``resultstore ls``, run as a real process on an SQLite file this process stores into."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from resultstore import Backend, TaskInfo

from .test_cli import cli_run, json_lines, seed_failure, store, url  # noqa: F401 (fixtures)

HEADER = f"{'TASK_ID':<36}  {'STATE':<8}  {'DATE_DONE':<26}  {'NAME':<20}  RESULT"


def row(backend: Backend, task_id: str, name: str = "-") -> str:
    """The line of ``task_id``: its result's repr, cut to 60 characters."""
    meta = backend.get_task_meta(task_id)
    done = meta.date_done.isoformat() if meta.date_done else "-"
    result = repr(meta.result)
    result = result if len(result) <= 60 else result[:57] + "..."
    return f"{task_id:<36}  {meta.status:<8}  {done:<26}  {name:<20}  {result}"


@pytest.fixture
def seeded(store: Backend) -> Backend:  # noqa: F811
    store.mark_as_done("t-1", 1, request=TaskInfo(name="tasks.add"))
    seed_failure(store, "t-2")
    store.mark_as_done("t-3", "<script>x</script>", request=TaskInfo(name="tasks.echo"))
    store.store_result("t-4", {"current": 3, "total": 9}, "PROGRESS")
    store.mark_as_done("other-5", None)
    return store


def test_ls_shows_unfinished_first_then_newest(seeded: Backend, url: str) -> None:  # noqa: F811
    run = cli_run("ls", "--backend", url)
    assert (run.rc, run.err) == (0, "")
    assert run.out.splitlines()[3].endswith("  '<script>x</script>'")
    assert run.out.splitlines()[4].endswith("'exc_message': ['divisi...")
    assert run.out.splitlines() == [
        HEADER,
        row(seeded, "t-4"),
        row(seeded, "other-5"),
        row(seeded, "t-3", "tasks.echo"),
        row(seeded, "t-2"),
        row(seeded, "t-1", "tasks.add"),
    ]


def test_ls_filters_and_json(seeded: Backend, url: str) -> None:  # noqa: F811
    def ids(*args: str) -> list[str]:
        run = cli_run("ls", "--json", "--backend", url, *args)
        assert (run.rc, run.err) == (0, "")
        return [record["task_id"] for record in json_lines(run.out)] if run.out else []

    assert ids("--state", "FAILURE") == ["t-2"]
    assert ids("--state", "SUCCESS", "--state", "PROGRESS") == ["t-4", "other-5", "t-3", "t-1"]
    assert ids("--name", "tasks.add") == ["t-1"]
    assert ids("--prefix", "other-") == ["other-5"]
    assert ids("--since", "1h") == ["t-4", "other-5", "t-3", "t-2", "t-1"]
    assert ids("--until", "1h") == []
    assert ids("--until", datetime.now(timezone.utc).isoformat()) == [
        "other-5",
        "t-3",
        "t-2",
        "t-1",
    ]
    record = json_lines(cli_run("ls", "--json", "--backend", url, "--prefix", "t-3").out)[0]
    assert record == {
        "task_id": "t-3",
        "state": "SUCCESS",
        "result": "<script>x</script>",
        "traceback": None,
        "children": [],
        "date_done": seeded.get_task_meta("t-3").date_done.isoformat(),  # type: ignore[union-attr]
        "name": "tasks.echo",
        "args": None,
        "kwargs": None,
        "worker": None,
        "retries": None,
        "queue": None,
    }


def test_ls_pages_with_a_cursor(seeded: Backend, url: str) -> None:  # noqa: F811
    first = cli_run("ls", "--json", "--backend", url, "--limit", "2")
    assert [r["task_id"] for r in json_lines(first.out)] == ["t-4", "other-5"]
    assert first.err.startswith("resultstore: more results: add --cursor ")
    cursor = first.err.split()[-1]
    rest = cli_run("ls", "--json", "--backend", url, "--cursor", cursor)
    assert ([r["task_id"] for r in json_lines(rest.out)], rest.err) == (["t-3", "t-2", "t-1"], "")
    every = cli_run("ls", "--json", "--backend", url, "--limit", "1", "--all")
    assert len(json_lines(every.out)) == 5


def test_ls_counts_by_state(seeded: Backend, url: str) -> None:  # noqa: F811
    run = cli_run("ls", "--counts", "--backend", url)
    assert run.out.splitlines() == ["SUCCESS    3", "FAILURE    1", "PROGRESS   1"]
    run = cli_run("ls", "--counts", "--json", "--backend", url, "--prefix", "t-")
    assert json_lines(run.out) == [
        {"state": "SUCCESS", "count": 2},
        {"state": "FAILURE", "count": 1},
        {"state": "PROGRESS", "count": 1},
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "argument --since: not a time: 'yesterday' (use 30m, "
         "1h, 2d ago, or ISO-8601 like 2026-11-30T12:00)"),
        (["--limit", "0"], "argument --limit: must be 1 or more: '0'"),
        (["--cursor", "abc"], "cursor 'abc' is not one a listing returned (pass the 'cursor' of "
         "the previous page as it is)"),
        (["--since", "1h", "--until", "2h"], "must be before until"),
    ],
)  # fmt: skip
def test_ls_bad_arguments_are_usage_errors(url: str, args: list[str], message: str) -> None:  # noqa: F811
    run = cli_run("ls", "--backend", url, *args)
    assert run.rc == 2
    assert message in run.err
    assert run.out == ""


def test_ls_on_a_plugin_that_cannot_list_exits_4(tmp_path: object) -> None:
    run = cli_run("ls", "--backend", f"file://{tmp_path}")
    assert run.rc == 4
    assert run.err == (
        "resultstore: error: UnsupportedOperation: list_results needs capability 'listing', "
        f"which plugin resultstore_file.FileBackend for 'file://{tmp_path}' does not declare\n"
    )
