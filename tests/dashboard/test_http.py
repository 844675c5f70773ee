"""The dashboard over HTTP, in-process (Starlette's TestClient): the token, the Host
check, CSRF, escaping, masking, the filters and paging, a plugin that cannot list,
and the event stream. The browser tests (test_browser.py) run the real server."""

from __future__ import annotations

import argparse
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from resultstore import Backend, TaskInfo
from resultstore_dashboard import create_app
from resultstore_dashboard.cli import main, option
from resultstore_dashboard.security import CSRF_COOKIE, SESSION_COOKIE

from .conftest import TOKEN

LOCAL = "http://127.0.0.1"
SCRIPT = "<script>alert('stored')</script>"
IMG = '<img src=x onerror="alert(1)">'


@pytest.fixture
def store(store_url: str) -> Iterator[Backend]:
    with Backend(store_url, extended=True) as backend:
        yield backend


@pytest.fixture
def client(store: Backend) -> Iterator[TestClient]:
    with TestClient(create_app(store), base_url=LOCAL, follow_redirects=False) as c:
        yield c


@pytest.fixture
def guarded(store: Backend) -> Iterator[TestClient]:
    app = create_app(store, token=TOKEN)
    with TestClient(app, base_url="http://dashboard.example:8000", follow_redirects=False) as c:
        yield c


def fail(store: Backend, task_id: str, message: str = "boom") -> None:
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        store.mark_as_failure(task_id, exc, request=TaskInfo(name="app.fails"))


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, page
    return found[1]


# --- the token ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/", "/results", "/tasks/t1", "/api/results", "/api/events?id=t1", "/static/dashboard.js"],
)
def test_with_a_token_every_path_refuses_a_request_without_it(
    guarded: TestClient, store: Backend, path: str
) -> None:
    store.mark_as_done("t1", 1)
    answer = guarded.get(path)
    assert answer.status_code == 401
    assert "needs its token" in answer.text
    assert answer.headers["www-authenticate"].startswith("Bearer")
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    assert guarded.get(path, headers=wrong).status_code == 401
    assert guarded.post("/actions/forget", data={"task_id": "t1"}).status_code == 401
    assert store.exists("t1")


def test_the_token_opens_by_header_or_by_a_login_that_sets_a_cookie(
    guarded: TestClient, store: Backend
) -> None:
    store.mark_as_done("t1", 1)
    by_header = guarded.get("/api/tasks/t1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert by_header.status_code == 200
    assert by_header.json()["status"] == "SUCCESS"

    assert guarded.get(f"/results?token=wrong-{TOKEN}").status_code == 401
    login = guarded.get(f"/results?window=1h&token={TOKEN}")
    assert login.status_code == 303
    # Back to the same page, the token gone from the address bar and the history.
    assert login.headers["location"] == "/results?window=1h"
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert TOKEN not in cookie  # a digest of it, not the token
    assert guarded.get("/tasks/t1").status_code == 200  # the client keeps the cookie
    # The login keeps a quoted path as it is, and never redirects to another host.
    odd = guarded.get(f"/tasks/a%2Fb?token={TOKEN}")
    assert odd.headers["location"] == "/tasks/a%2Fb"
    twice = guarded.get(f"http://dashboard.example:8000//evil.example/x?token={TOKEN}")
    assert twice.headers["location"] == "/evil.example/x"
    guarded.cookies.clear()
    assert guarded.get("/tasks/t1").status_code == 401


def test_without_a_token_only_loopback_host_names_are_served(store: Backend) -> None:
    # DNS rebinding: a hostile page whose name resolves to 127.0.0.1 sends its own Host.
    with TestClient(create_app(store), base_url="http://evil.example") as c:
        answer = c.get("/")
        assert answer.status_code == 400
        assert "loopback" in answer.text
    for host in ("http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"):
        with TestClient(create_app(store), base_url=host) as c:
            assert c.get("/").status_code == 200, host


def test_the_command_refuses_another_address_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESULTSTORE_DASHBOARD_TOKEN", raising=False)
    assert main(["--backend", "memory://", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve on 0.0.0.0" in err
    assert "needs a token" in err
    assert main(["--backend", "memory://", "--host", "0.0.0.0", "--token", "short"]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 16"):
        create_app(Backend("memory://"), token="short")


def test_the_command_passes_backend_options_and_refuses_unknown_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert option("redis_list_index=true") == ("redis_list_index", True)
    assert option('database_table_names={"task": "t"}') == (
        "database_table_names",
        {"task": "t"},
    )
    assert option("name=plain text") == ("name", "plain text")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^not NAME=VALUE: 'nothing'$"):
        option("nothing")
    assert main(["--backend", "memory://", "--option", "clocks=1"]) == 2
    assert capsys.readouterr().err == (
        "resultstore-dashboard: cannot open the backend: memory://: plugin "
        "resultstore_memory.MemoryBackend does not take option 'clocks'; did you mean "
        "'clock'? (it takes: clock)\n"
    )


# --- CSRF -----------------------------------------------------------------------------


def test_actions_need_the_pages_csrf_token_and_origin(client: TestClient, store: Backend) -> None:
    store.mark_as_done("t1", 1)
    page = client.get("/tasks/t1")
    token = csrf_of(page.text)
    assert client.cookies.get(CSRF_COOKIE)

    refused = [
        client.post("/actions/forget", data={"task_id": "t1"}),  # no field
        client.post("/actions/forget", data={"task_id": "t1", "csrf": "0" * 64}),
        client.post(  # the right token, from another site's page
            "/actions/forget",
            data={"task_id": "t1", "csrf": token},
            headers={"Origin": "http://evil.example"},
        ),
        client.post(
            "/actions/forget",
            data={"task_id": "t1", "csrf": token},
            headers={"Referer": "http://evil.example/page"},
        ),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403]
    assert "another origin" in refused[2].text
    assert store.exists("t1")

    # Without the cookie the field is worthless (it is the cookie's signature).
    cookie = client.cookies[CSRF_COOKIE]
    client.cookies.clear()
    assert client.post("/actions/forget", data={"task_id": "t1", "csrf": token}).status_code == 403
    client.cookies.clear()  # the refusal's page set a cookie of its own
    client.cookies.set(CSRF_COOKIE, cookie)

    assert client.get("/actions/forget").status_code == 405
    assert client.post("/actions/forget", json={"task_id": "t1", "csrf": token}).status_code == 400

    done = client.post(
        "/actions/forget", data={"task_id": "t1", "csrf": token}, headers={"Origin": LOCAL}
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/results?forgotten=t1"
    assert not store.exists("t1")
    assert "Forgot <code>t1</code>" in client.get(done.headers["location"]).text


def test_revoke_marks_an_unfinished_task_revoked(client: TestClient, store: Backend) -> None:
    store.mark_as_started("r1")
    token = csrf_of(client.get("/tasks/r1").text)
    done = client.post("/actions/revoke", data={"task_id": "r1", "csrf": token})
    assert done.status_code == 303
    assert store.get_state("r1") == "REVOKED"
    assert store.is_revoked("r1")
    page = client.get(done.headers["location"]).text
    assert 'data-state="REVOKED"' in page
    assert 'id="revoke"' not in page  # a finished task has nothing left to revoke


# --- nothing stored is markup; nothing secret is shown ---------------------------------


def test_stored_markup_is_shown_as_text_on_every_page(client: TestClient, store: Backend) -> None:
    store.mark_as_done("x<b>1", {"html": SCRIPT}, request=TaskInfo(name=IMG, args=[SCRIPT]))
    fail(store, "f1", IMG)
    store.store_result("c1", {"note": SCRIPT}, '<svg onload="alert(1)">')
    pages = {
        "task": client.get(f"/tasks/{quote('x<b>1', safe='')}"),
        "failure": client.get("/tasks/f1"),
        "custom": client.get("/tasks/c1"),
        "results": client.get("/results"),
        "overview": client.get("/"),
        "search": client.get("/search", params={"id": SCRIPT}),
    }
    for name, answer in pages.items():
        assert answer.status_code in (200, 404), name
        body = answer.text
        for markup in (SCRIPT, IMG, "<b>1", '<svg onload="alert(1)">'):
            assert markup not in body, (name, markup)
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
    assert "&lt;script&gt;alert(&#39;stored&#39;)&lt;/script&gt;" in pages["task"].text
    assert "x&lt;b&gt;1" in pages["results"].text
    assert "&lt;svg onload=&#34;alert(1)&#34;&gt;" in pages["overview"].text  # the state's name
    assert "RuntimeError" in pages["failure"].text
    # The only script of every page is the dashboard's own file.
    for answer in pages.values():
        assert re.findall(r"<script[^>]*>", answer.text) == [
            '<script src="/static/dashboard.js" defer>'
        ]
    api = client.get("/api/tasks/f1")
    assert api.headers["content-type"] == "application/json"


def test_the_backends_password_is_masked_on_the_page() -> None:
    # No Redis at this port: a plugin error (503) must be masked too.
    url = "redis://:hunter2-secret@127.0.0.1:1/0"
    options = {"result_backend_transport_options": {"retry_policy": {"max_retries": 0}}}
    with (
        Backend(url, options=options) as backend,
        TestClient(create_app(backend), base_url=LOCAL) as c,
    ):
        for path in ("/", "/results", "/tasks/t1", "/search?id=t1", "/api/tasks/t1"):
            answer = c.get(path)
            assert "hunter2" not in answer.text, path
            assert answer.status_code in (200, 503), (path, answer.text)
        assert "redis://:****@127.0.0.1:1/0" in c.get("/").text


# --- the pages -------------------------------------------------------------------------


def test_the_task_page_shows_failure_fields_children_and_progress(
    client: TestClient, store: Backend
) -> None:
    fail(store, "f1", "the disk is full")
    page = client.get("/tasks/f1").text
    assert 'id="traceback"' in page
    assert "Traceback (most recent call last)" in page
    assert "RuntimeError" in page
    assert "the disk is full" in page
    assert "app.fails" in page

    info = TaskInfo(
        name="app.parent",
        args=[1, 2],
        kwargs={"k": "v"},
        worker="1@host",
        retries=2,
        queue="q1",
        group_id="g1",
        parent_id="p0",
        children=[[["child-1", None], None]],
    )
    store.mark_as_done("p1", {"answer": 42}, request=info)
    page = client.get("/tasks/p1").text
    for text in ("app.parent", "[1, 2]", "{&#34;k&#34;: &#34;v&#34;}", "1@host", "q1", "g1"):
        assert text in page, text
    assert 'href="/tasks/child-1"' in page
    assert 'href="/tasks/p0"' in page
    assert "&#34;answer&#34;: 42" in page  # pretty JSON, escaped

    store.store_result("w1", {"current": 3, "total": 12}, "PROGRESS")
    page = client.get("/tasks/w1").text
    assert '<progress id="progress" max="12.0" value="3.0">' in page
    assert "3 / 12 (25%)" in page
    assert 'data-events="/api/events?id=w1"' in page


def test_ids_with_any_printable_character_round_trip(client: TestClient, store: Backend) -> None:
    odd = "a/b?c=d#e é"  # "%20" too in test_browser (TestClient decodes paths twice)
    store.mark_as_done(odd, "ok")
    found = client.get("/search", params={"id": odd})
    assert found.status_code == 303
    assert found.headers["location"] == "/tasks/" + quote(odd, safe="")
    page = client.get(found.headers["location"])
    assert page.status_code == 200
    assert "a/b?c=d#e é" in page.text
    assert client.get("/search", params={"id": "nothing-here"}).status_code == 404
    assert client.get("/tasks/nothing-here").status_code == 404
    assert client.get("/search", params={"id": "a\x01b"}).status_code == 400


def test_filters_and_paging(client: TestClient, store: Backend) -> None:
    for n in range(5):
        store.mark_as_done(f"ok-{n}", n, request=TaskInfo(name="app.add"))
    fail(store, "bad-1")
    store.store_result("run-1", {"current": 1, "total": 2}, "PROGRESS")

    def ids(page: str) -> list[str]:
        return re.findall(r'<tr data-task-id="([^"]+)">', page)

    assert ids(client.get("/results", params={"state": "FAILURE"}).text) == ["bad-1"]
    # The "other state" box takes custom states, upper-cased, several by commas.
    assert ids(client.get("/results", params=[("state", "progress, retry")]).text) == ["run-1"]
    assert sorted(ids(client.get("/results", params={"name": "app.add"}).text)) == [
        f"ok-{n}" for n in range(5)
    ]
    assert ids(client.get("/results", params={"prefix": "ok-3"}).text) == ["ok-3"]
    # Unfinished results have no date_done: a window open towards now includes them.
    since = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert ids(client.get("/results", params={"since": since}).text) == ["run-1"]
    assert len(ids(client.get("/results", params={"window": "15m"}).text)) == 7

    seen: list[str] = []
    url = "/results?limit=3&prefix=ok-"
    pages = 0
    while url:
        page = client.get(url).text
        seen += ids(page)
        pages += 1
        found = re.search(r'href="([^"]+)" id="next-page"', page)
        url = found[1].replace("&amp;", "&") if found else ""
    assert pages == 2
    assert sorted(seen) == [f"ok-{n}" for n in range(5)]
    assert len(set(seen)) == 5

    for bad in ("cursor=nope", "window=2y", "limit=0", "since=yesterday", "state=" + "X" * 80):
        answer = client.get(f"/results?{bad}")
        assert answer.status_code == 400, bad
    api = client.get("/api/results", params={"state": "FAILURE"}).json()
    assert [m["task_id"] for m in api["items"]] == ["bad-1"]
    assert api["items"][0]["result"]["exc_type"] == "RuntimeError"
    assert client.get("/api/results?cursor=nope").status_code == 400


def test_the_overview_counts_by_state_and_draws_the_chart(
    client: TestClient, store: Backend
) -> None:
    for n in range(3):
        store.mark_as_done(f"ok-{n}", n)
    fail(store, "bad-1", "out of memory")
    store.mark_as_started("run-1")
    page = client.get("/?window=1h").text
    found = re.findall(r'<span class="n">(\d+)</span> (\w+)</a>', page)
    counts = {state: int(n) for n, state in found}
    assert counts == {"SUCCESS": 3, "FAILURE": 1, "STARTED": 1}
    assert "5</span> results in the last 1 hour" in page
    assert len(re.findall(r"<rect x=", page)) >= 2  # finished results, in their bucket
    assert "out of memory" in page  # the latest failures
    api = client.get("/api/counts?window=1h").json()
    assert sum(api["counts"]["SUCCESS"]) == 3
    assert len(api["counts"]["SUCCESS"]) == 60
    assert client.get("/?window=nope").status_code == 400


def test_a_plugin_that_cannot_list_still_shows_tasks(tmp_path: Path) -> None:
    with (
        Backend(f"file://{tmp_path}") as backend,
        TestClient(create_app(backend), base_url=LOCAL, follow_redirects=False) as c,
    ):
        backend.mark_as_done("t1", {"v": 1})
        for path in ("/", "/results"):
            page = c.get(path)
            assert page.status_code == 200
            assert 'id="cannot-list"' in page.text
            assert "cannot list results" in page.text
        assert c.get("/api/results").status_code == 501
        assert c.get("/search?id=t1").status_code == 303
        task = c.get("/tasks/t1")
        assert task.status_code == 200
        assert "&#34;v&#34;: 1" in task.text


# --- the event stream -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_the_event_stream_follows_progress_until_the_task_finishes(
    client: TestClient, store: Backend
) -> None:
    store.mark_as_started("job")

    def work() -> None:
        time.sleep(0.2)
        for n in range(1, 4):
            store.store_result("job", {"current": n, "total": 3}, "PROGRESS")
            time.sleep(0.1)
        store.mark_as_done("job", "all done")

    worker = threading.Thread(target=work)
    worker.start()
    # TestClient hands the body over when the stream ends: at the task's end.
    answer = client.get("/api/events?id=job")
    worker.join()
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = re.findall(r"event: state\ndata: (.*)\n\n", answer.text)
    assert '"state": "STARTED"' in events[0]
    assert any('"label": "' in e for e in events)  # some progress (stores may coalesce)
    assert '"state": "SUCCESS"' in events[-1]
    assert '"ready": true' in events[-1]
    assert client.get("/api/events?id=").status_code == 400


def test_mounted_under_a_prefix_every_link_keeps_it(store: Backend) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    store.mark_as_done("t1", 1)
    outer = Starlette(routes=[Mount("/ops/results", app=create_app(store))])
    with TestClient(outer, base_url=LOCAL, follow_redirects=False) as c:
        page = c.get("/ops/results/results").text
        assert 'href="/ops/results/tasks/t1"' in page
        assert 'href="/ops/results/static/dashboard.css"' in page
        assert c.get("/ops/results/static/dashboard.css").status_code == 200
        found = c.get("/ops/results/search?id=t1")
        assert found.headers["location"] == "/ops/results/tasks/t1"
        task = c.get(found.headers["location"]).text
        assert 'action="/ops/results/actions/forget"' in task
        done = c.post("/ops/results/actions/forget", data={"task_id": "t1", "csrf": csrf_of(task)})
        assert done.headers["location"] == "/ops/results/results?forgotten=t1"
        assert not store.exists("t1")


@pytest.mark.timeout(30)
def test_a_closed_event_stream_leaves_no_watch_behind(store: Backend) -> None:
    import asyncio

    from resultstore_dashboard.sse import EventStream

    store.mark_as_started("running")
    sent: list[dict[str, object]] = []

    async def scenario() -> None:
        first = asyncio.Event()
        leave = asyncio.Event()

        async def receive() -> dict[str, object]:
            await leave.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(dict(message))
            if b"event: state" in message.get("body", b""):  # type: ignore[operator]
                first.set()

        stream = asyncio.ensure_future(EventStream(store, "running")({}, receive, send))
        await asyncio.wait_for(first.wait(), 10)
        assert store.waiting_ids() == {"running"}  # watched while the page is open
        leave.set()  # the browser goes away
        await asyncio.wait_for(stream, 10)

    asyncio.run(scenario())
    assert store.waiting_ids() == frozenset()
    assert sent[0]["status"] == 200
