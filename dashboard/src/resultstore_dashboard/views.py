"""The HTML pages and the two actions (forget, revoke).

Reads go through the backend's async twins (or a worker thread), never blocking the
event loop that also serves the event streams. A backend without capability
``listing`` still serves the task page and the id search; the listing pages say
that its plugin cannot list.
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from resultstore import READY_STATES, TaskMeta

from . import chart, present
from .app import (
    base,
    checked_id,
    dashboard,
    error_page,
    link,
    page,
    read_task,
    render,
    task_url,
)
from .query import STANDARD_STATES, BadQuery, Filters, window_of

MAX_FORM_BYTES = 8192
RECENT_FAILURES = 10
REVOKE_REASON = "revoked from the dashboard"


@page
async def overview(request: Request) -> Response:
    """Counts by state over a window, the chart of it, and the latest failures."""
    window = window_of(request.query_params)
    assert window is not None
    dash = dashboard(request)
    context: dict[str, object] = {"nav": "overview", "window": window}
    if dash.can_list:
        now = datetime.now(timezone.utc)
        since, until = window.bounds(now)
        # Without ``until`` the counts include what still runs; the chart's buckets
        # need both ends and show finished results by their date_done.
        totals = await dash.backend.acount_results(since=since)
        sliced = await dash.backend.acount_results(since=since, until=until, buckets=window.buckets)
        failures = await dash.backend.alist_results(
            states=["FAILURE"], since=since, limit=RECENT_FAILURES
        )
        drawn = chart.build(sliced, since, until)
        context.update(
            now=now,
            since=since,
            totals=[
                (state, sum(totals[state]), chart.colour(state))
                for state in chart.stack_order(list(totals))
            ],
            total=sum(sum(row) for row in totals.values()),
            chart=drawn,
            bar_links=[
                link(
                    request,
                    "/results",
                    [("since", bar.since.isoformat()), ("until", bar.until.isoformat())],
                )
                for bar in drawn.bars
            ],
            failures=[_row(request, meta, now) for meta in failures.items],
            state_link=lambda state: link(
                request, "/results", [("state", state), ("window", window.key)]
            ),
        )
    return render(request, "overview.html", context)


def _row(request: Request, meta: TaskMeta, now: datetime) -> dict[str, object]:
    return {
        "task_id": meta.task_id,
        "url": task_url(request, meta.task_id),
        "state": meta.status,
        "colour": chart.colour(meta.status),
        "name": meta.name or "",
        "worker": meta.worker or "",
        "date_done": present.when(meta.date_done),
        "ago": present.ago(meta.date_done, now),
        "summary": present.summary(meta),
    }


@page
async def results(request: Request) -> Response:
    """The table of results, filtered, newest first, one page per cursor."""
    filters = Filters.parse(request.query_params)
    dash = dashboard(request)
    forgotten = request.query_params.get("forgotten")
    context: dict[str, object] = {
        "nav": "results",
        "filters": filters,
        "states": list(STANDARD_STATES) + filters.custom_states,
        "forgotten": checked_id(forgotten) if forgotten else None,
    }
    if dash.can_list:
        try:
            found = await dash.backend.alist_results(**filters.listing())
        except ValueError as exc:  # a cursor that no listing gave, a bad filter
            raise BadQuery(str(exc)) from None
        context.update(
            rows=[_row(request, meta, filters.now) for meta in found.items],
            next_link=None
            if found.cursor is None
            else link(request, "/results", filters.params(cursor=found.cursor)),
            first_link=link(request, "/results", filters.params(cursor=None))
            if filters.cursor
            else None,
        )
    return render(request, "results.html", context)


@page
async def search(request: Request) -> Response:
    """An exact id opens its task page; anything else says nothing is stored there."""
    text = (request.query_params.get("id") or "").strip()
    if not text:
        return RedirectResponse(f"{base(request)}/results", status_code=303)
    task_id = checked_id(text)
    meta = await read_task(dashboard(request).backend, task_id)
    if meta is not None:
        return RedirectResponse(task_url(request, task_id), status_code=303)
    return missing(request, task_id)


@page
async def task(request: Request) -> Response:
    """One task: state, result, failure and traceback, fields, children, live progress."""
    task_id = checked_id(request.path_params["task_id"])
    dash = dashboard(request)
    try:
        meta = await read_task(dash.backend, task_id)
    except ValueError as exc:  # undecodable, or a content type the backend does not accept
        return error_page(request, 502, f"the stored record of this task cannot be read: {exc}")
    if meta is None:
        return missing(request, task_id)
    ready = meta.status in READY_STATES
    failure = present.failure(meta)
    return render(
        request,
        "task.html",
        {
            "nav": "results",
            "meta": meta,
            "colour": chart.colour(meta.status),
            "ready": ready,
            "failure": failure,
            # A failure's result is its exception, shown above as such.
            "result": None if failure is not None else present.pretty(meta.result),
            "progress": present.progress(meta),
            "fields": present.extended(meta),
            "children": [
                (child, None if child.task_id is None else task_url(request, child.task_id))
                for child in present.children(meta)
            ],
            "extra": present.pretty(dict(meta.extra)) if meta.extra else None,
            "events": None if ready else link(request, "/api/events", [("id", task_id)]),
            "revoked": request.query_params.get("revoked") == "1",
            "date_done": present.when(meta.date_done),
            "ago": present.ago(meta.date_done, datetime.now(timezone.utc)),
        },
    )


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the actions' forms hold two fields)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadQuery("actions take a form (application/x-www-form-urlencoded)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadQuery("the form is too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise BadQuery("the form cannot be read") from None
    return dict(pairs)


async def _action(request: Request) -> tuple[str, Response | None]:
    """The task id of an action, or the refusal of a request that is not our page's."""
    form = await _form(request)
    refusal = dashboard(request).csrf.refusal(request, form)
    if refusal is not None:
        return "", error_page(request, 403, f"refused: {refusal}")
    return checked_id(form.get("task_id", "")), None


@page
async def forget(request: Request) -> Response:
    task_id, refused = await _action(request)
    if refused is not None:
        return refused
    await dashboard(request).backend.aforget(task_id)
    return RedirectResponse(link(request, "/results", [("forgotten", task_id)]), status_code=303)


@page
async def revoke(request: Request) -> Response:
    task_id, refused = await _action(request)
    if refused is not None:
        return refused
    await run_in_threadpool(dashboard(request).backend.revoke, task_id, REVOKE_REASON)
    return RedirectResponse(task_url(request, task_id) + "?revoked=1", status_code=303)


def missing(request: Request, task_id: str) -> Response:
    """Nothing stored under ``task_id``: a 404 page with a link to the ids it begins."""
    return render(
        request,
        "missing.html",
        {
            "nav": "results",
            "task_id": task_id,
            "prefix_link": link(request, "/results", [("prefix", task_id)]),
        },
        status_code=404,
    )
