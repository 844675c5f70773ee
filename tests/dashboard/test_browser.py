"""The dashboard in a real headless Chromium, served by the real command in its own
process, on a store that this test process writes to as a worker would.

Every wait has a deadline: Playwright's (``TIMEOUT_MS`` per step) and pytest-timeout's
per test. With ``RESULTSTORE_SCREENSHOT=1`` the first test also writes the README's
screenshot (``make screenshot``); otherwise it goes to the test's temporary folder.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import resultstore._backend as backend_module
from resultstore import Backend, TaskInfo

from .conftest import (
    ROOT,
    TOKEN,
    Server,
    console_script,
    server_env,
    shared_store_url,
    start_server,
)

TIMEOUT_MS = 10_000
SCREENSHOT = ROOT / "docs" / "dashboard.png"
MARKUP = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(60),
]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_store_url(tmp_path_factory.mktemp("dashboard-store"))


@pytest.fixture(scope="module")
def writer(store_url: str) -> Iterator[Backend]:
    """The tests' side of the store: a worker's process, as far as the server knows."""
    with Backend(store_url, extended=True) as backend:
        yield backend


@pytest.fixture(scope="module")
def server(store_url: str) -> Iterator[Server]:
    started = start_server(store_url)
    yield started
    started.stop()


def open_page(browser: Any, **options: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, **options)
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    opened.alerts = []  # any alert() would be a stored script that ran
    opened.on("dialog", lambda dialog: _answer(opened, dialog))
    return opened


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    opened = open_page(browser)
    yield opened
    opened.context.close()


def _answer(page: Any, dialog: Any) -> None:
    if dialog.type == "confirm":
        dialog.accept()  # the dashboard's own "Forget task ...?"
    else:
        page.alerts.append(dialog.message)
        dialog.dismiss()


def row_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#results tbody tr", "rows => rows.map(r => r.dataset.taskId)")


# --- a realistic hour, for the overview and the README's screenshot -------------------


class _Clock(datetime):
    at = datetime.now(timezone.utc)

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return cls.at


def seed_an_hour(store: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """About 250 results over the last hour, stored as if at their own times."""
    monkeypatch.setattr(backend_module, "datetime", _Clock)
    pick = random.Random(18)
    names = ["app.resize_image", "app.send_email", "app.sync_inventory", "app.build_report"]
    now = datetime.now(timezone.utc)
    for minute in range(60, 0, -1):
        for n in range(pick.choice((1, 2, 3, 4, 4, 5, 6))):
            _Clock.at = now - timedelta(minutes=minute, seconds=pick.randrange(60))
            task_id = f"{pick.getrandbits(128):032x}"
            name = pick.choice(names)
            info = TaskInfo(name=name, args=[n], worker=f"{4000 + n}@worker-{n % 3}")
            roll = pick.random()
            if roll < 0.08:
                store.mark_as_failure(task_id, _error(name), request=info)
            elif roll < 0.10:
                store.mark_as_revoked(task_id, "revoked", request=info)
            else:
                store.mark_as_done(task_id, {"ok": True, "items": n * 7}, request=info)
    monkeypatch.undo()
    store.mark_as_started("import-catalogue", request=TaskInfo(name="app.import_catalogue"))
    store.store_result("a1b2-progress", {"current": 640, "total": 1000}, "PROGRESS")


def _error(name: str) -> Exception:
    errors = {
        "app.send_email": TimeoutError("SMTP server mail.internal did not answer in 30 s"),
        "app.resize_image": ValueError("cannot identify image file 'upload-1187.heic'"),
        "app.sync_inventory": ConnectionError("inventory API returned 503"),
        "app.build_report": KeyError("region"),
    }
    try:
        raise errors[name]
    except Exception as exc:
        return exc


def test_the_overview_loads_with_counts_and_chart(
    server: Server, writer: Backend, page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_an_hour(writer, monkeypatch)
    answer = page.goto(f"{server.url}/?window=1h")
    assert answer.status == 200
    assert page.title() == "Overview · resultstore"
    bars = page.locator("#chart rect").count()
    assert bars > 60  # stacked bars of finished results, over many minutes
    counts = page.locator("#counts").inner_text()
    assert "SUCCESS" in counts
    assert "FAILURE" in counts
    assert "results in the last 1 hour" in counts
    assert page.locator("#failures tbody tr").count() > 0
    shot = SCREENSHOT if os.environ.get("RESULTSTORE_SCREENSHOT") else tmp_path / "shot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The chart's bars open the results of their slice of time.
    page.locator("#chart a").first.click()
    page.wait_for_url("**/results?since=*")
    assert len(row_ids(page)) > 0


def test_filters_and_the_id_search(server: Server, writer: Backend, page: Any) -> None:
    for n in range(3):
        writer.mark_as_done(f"flt-ok-{n}", n, request=TaskInfo(name="app.add"))
    for n in range(2):
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError as exc:
            writer.mark_as_failure(f"flt-bad-{n}", exc, request=TaskInfo(name="app.div"))
    writer.store_result("flt-run", {"current": 1, "total": 4}, "PROGRESS")

    page.goto(f"{server.url}/results?prefix=flt-")
    assert sorted(row_ids(page)) == sorted(
        ["flt-ok-0", "flt-ok-1", "flt-ok-2", "flt-bad-0", "flt-bad-1", "flt-run"]
    )
    page.locator("#filters input[value=FAILURE]").check()
    page.locator("#filters button[type=submit]").click()
    page.wait_for_url("**state=FAILURE**")
    assert sorted(row_ids(page)) == ["flt-bad-0", "flt-bad-1"]

    page.locator("#filters input[value=FAILURE]").uncheck()
    page.locator("#filters input[name=name]").fill("app.add")
    page.locator("#filters button[type=submit]").click()
    page.wait_for_url("**name=app.add**")
    assert sorted(row_ids(page)) == ["flt-ok-0", "flt-ok-1", "flt-ok-2"]

    page.locator("#filters input[name=name]").fill("")
    page.locator("#filters input[aria-label='Other state']").fill("progress")
    page.locator("#filters button[type=submit]").click()
    page.wait_for_url("**state=progress**")
    assert row_ids(page) == ["flt-run"]

    # The id box opens an exact id, whatever characters it holds.
    odd = "flt/odd %20 ?#é"
    writer.mark_as_done(odd, "found me")
    page.locator("header input[name=id]").fill(odd)
    page.locator("header input[name=id]").press("Enter")
    page.wait_for_selector("h1.task-id")
    assert page.locator("h1.task-id").inner_text() == odd
    assert page.locator("#result").inner_text() == '"found me"'


def test_a_failures_traceback_is_shown(server: Server, writer: Backend, page: Any) -> None:
    def parse_amount(text: str) -> int:
        return int(text)

    try:
        parse_amount("12,50 EUR")
    except ValueError as exc:
        writer.mark_as_failure("tb-1", exc, request=TaskInfo(name="app.invoice"))

    page.goto(f"{server.url}/results?state=FAILURE&prefix=tb-")
    page.locator("#results a", has_text="tb-1").click()
    page.wait_for_selector("#traceback")
    assert page.locator("#state").inner_text() == "FAILURE"
    assert page.locator("#exc-type").inner_text() == "ValueError"
    assert "invalid literal for int()" in page.locator("#exc-message").inner_text()
    traceback = page.locator("#traceback").inner_text()
    assert traceback.startswith("Traceback (most recent call last)")
    assert "in parse_amount" in traceback
    assert "ValueError: invalid literal for int() with base 10: '12,50 EUR'" in traceback


def test_the_progress_bar_advances_by_push(server: Server, writer: Backend, page: Any) -> None:
    writer.mark_as_started("prog-1", request=TaskInfo(name="app.crunch"))
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/api/events" in r.url else None)
    page.goto(f"{server.url}/tasks/prog-1")
    page.wait_for_function("() => document.getElementById('live-status').textContent === 'live'")
    assert page.locator("#progress").is_hidden()
    # Every value the bar takes, as the page sees it.
    page.evaluate(
        """() => {
            window.__seen = [];
            const bar = document.getElementById('progress');
            new MutationObserver(() => window.__seen.push(bar.value))
                .observe(bar, {attributes: true});
        }"""
    )

    finish = threading.Event()
    failed: list[BaseException] = []

    def work() -> None:
        try:
            for n in range(1, 11):
                writer.store_result("prog-1", {"current": n, "total": 10}, "PROGRESS")
                if finish.wait(0.25):
                    break
            finish.wait(20)
            writer.mark_as_done("prog-1", {"crunched": 10})
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        page.wait_for_function("() => document.getElementById('progress').value >= 3")
        assert page.locator("#progress").is_visible()
        page.wait_for_function("() => document.getElementById('progress').value === 10")
        assert page.locator("#progress-label").inner_text() == "10 / 10 (100%)"
        assert page.locator("#state").inner_text() == "PROGRESS"
        assert '"current": 10' in page.locator("#result").inner_text()  # the meta follows
        seen = page.evaluate("window.__seen")
    finally:
        finish.set()
        worker.join(30)
    assert not failed, failed
    assert seen == sorted(seen), seen
    assert len(set(seen)) >= 3, seen  # it advanced step by step, not in one jump
    # On SUCCESS the page shows the outcome.
    page.wait_for_function("() => document.getElementById('state').textContent === 'SUCCESS'")
    assert '"crunched": 10' in page.locator("#result").inner_text()
    # One stream, no polling: the page asked for the events once.
    assert len(streams) == 1, streams


def test_forget_removes_a_result(server: Server, writer: Backend, page: Any) -> None:
    writer.mark_as_done("fgt-1", {"keep": False})
    writer.mark_as_done("fgt-2", {"keep": True})
    page.goto(f"{server.url}/results?prefix=fgt-")
    assert sorted(row_ids(page)) == ["fgt-1", "fgt-2"]
    page.locator("#results a", has_text="fgt-1").click()
    page.wait_for_selector("#forget")
    page.locator("#forget").click()  # the confirm() is accepted
    page.wait_for_selector("#forgotten")
    assert page.locator("#forgotten").inner_text() == "Forgot fgt-1."
    assert not writer.exists("fgt-1")
    page.goto(f"{server.url}/results?prefix=fgt-")
    assert row_ids(page) == ["fgt-2"]
    assert page.goto(f"{server.url}/tasks/fgt-1").status == 404


def test_a_script_result_is_shown_as_text(server: Server, writer: Backend, browser: Any) -> None:
    # Without the page's Content-Security-Policy: escaping alone must keep it text (the
    # policy is a second wall; test_http checks that every answer carries it).
    page = open_page(browser, bypass_csp=True)
    writer.mark_as_done("xss-<b>1", MARKUP, request=TaskInfo(name=MARKUP))
    try:
        raise RuntimeError(MARKUP)
    except RuntimeError as exc:
        writer.mark_as_failure("xss-2", exc)

    page.goto(f"{server.url}/results?prefix=xss-")
    assert sorted(row_ids(page)) == ["xss-2", "xss-<b>1"]
    assert MARKUP in page.locator("#results").inner_text()
    page.locator("#results a", has_text="xss-<b>1").click()
    page.wait_for_selector("#result")
    assert page.locator("h1.task-id").inner_text() == "xss-<b>1"
    assert page.locator("#result").inner_text() == f'"{MARKUP.replace(chr(34), chr(92) + chr(34))}"'
    assert MARKUP in page.locator("#fields").inner_text()  # the task's name
    page.goto(f"{server.url}/tasks/xss-2")
    assert MARKUP in page.locator("#exc-message").inner_text()
    assert MARKUP in page.locator("#traceback").inner_text()
    # Nothing of it became an element, and nothing of it ran.
    assert page.evaluate("document.querySelectorAll('img, b').length") == 0
    assert page.evaluate("Array.from(document.scripts).map(s => s.src)") == [
        f"{server.url}/static/dashboard.js"
    ]
    assert page.evaluate("window.__pwned") is None
    assert page.alerts == []
    page.context.close()


def test_beyond_loopback_a_request_without_the_token_is_refused(
    store_url: str, writer: Backend, browser: Any
) -> None:
    # Without a token the command refuses to bind a non-loopback address at all.
    refused = subprocess.run(
        [str(console_script()), "--backend", store_url, "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=server_env(),
        check=False,
    )
    assert refused.returncode == 2
    assert "needs a token" in refused.stderr

    writer.mark_as_done("tok-1", "secret result")
    guarded = start_server(store_url, host="0.0.0.0", token=TOKEN)
    try:
        assert "serving beyond this machine" in guarded.output
        assert TOKEN not in guarded.output
        for headers in ({}, {"Authorization": "Bearer not-the-token-0123456789"}):
            request = urllib.request.Request(f"{guarded.url}/api/tasks/tok-1", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refusal:
                urllib.request.urlopen(request, timeout=5)
            assert refusal.value.code == 401

        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        for path in ("/", "/tasks/tok-1", "/api/events?id=tok-1", "/static/dashboard.css"):
            answer = page.goto(f"{guarded.url}{path}")
            assert answer.status == 401, path
            assert "secret result" not in page.content()
        assert "needs its token" in page.content()

        # Signed in once by the URL, the cookie carries the browser on.
        answer = page.goto(f"{guarded.url}/tasks/tok-1?token={TOKEN}")
        assert answer.status == 200
        assert page.url == f"{guarded.url}/tasks/tok-1"  # the token left the address bar
        assert page.locator("#result").inner_text() == '"secret result"'
        assert page.goto(f"{guarded.url}/results?prefix=tok-").status == 200
        assert row_ids(page) == ["tok-1"]
        context.close()
    finally:
        guarded.stop()
