"""The JSON API: what the pages show, for scripts (behind the same token).

- ``GET /api/results?state=&name=&window=&since=&until=&prefix=&cursor=&limit=``:
  ``{"items": [wire meta, ...], "cursor": next or null}``;
- ``GET /api/counts?window=1h``: ``{"since", "until", "counts": {state: [n per bucket]}}``;
- ``GET /api/tasks/<id>``: the task's wire meta (Celery's keys), 404 when nothing is stored;
- ``GET /healthz``: ``ok`` once the app serves (the tests wait on it).

Served as ``application/json`` with ``nosniff``: a browser never renders it as HTML.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from resultstore import ResultStoreError

from . import present
from .app import checked_id, dashboard, read_task
from .query import BadQuery, Filters, window_of


def json_response(data: Any, status_code: int = 200) -> Response:
    body = json.dumps(data, ensure_ascii=False, default=repr, separators=(",", ":"))
    return Response(body, status_code=status_code, media_type="application/json")


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(view: Endpoint) -> Endpoint:
    @wraps(view)
    async def wrapped(request: Request) -> Response:
        try:
            return await view(request)
        except BadQuery as exc:
            return json_response({"error": str(exc)}, 400)
        except ResultStoreError as exc:
            return json_response({"error": f"the result store failed: {exc}"}, 503)

    return wrapped


def _cannot_list(request: Request) -> Response | None:
    if dashboard(request).can_list:
        return None
    url = dashboard(request).backend.url
    return json_response(
        {"error": f"the plugin of {url.scheme}:// cannot list results (no 'listing' capability)"},
        501,
    )


@endpoint
async def results(request: Request) -> Response:
    refused = _cannot_list(request)
    if refused is not None:
        return refused
    filters = Filters.parse(request.query_params)
    try:
        page = await dashboard(request).backend.alist_results(**filters.listing())
    except ValueError as exc:
        raise BadQuery(str(exc)) from None
    return json_response(
        {"items": [present.wire(meta) for meta in page.items], "cursor": page.cursor}
    )


@endpoint
async def counts(request: Request) -> Response:
    refused = _cannot_list(request)
    if refused is not None:
        return refused
    window = window_of(request.query_params)
    assert window is not None
    since, until = window.bounds(datetime.now(timezone.utc))
    found = await dashboard(request).backend.acount_results(
        since=since, until=until, buckets=window.buckets
    )
    return json_response({"since": since.isoformat(), "until": until.isoformat(), "counts": found})


@endpoint
async def task(request: Request) -> Response:
    task_id = checked_id(request.path_params["task_id"])
    try:
        meta = await read_task(dashboard(request).backend, task_id)
    except ValueError as exc:
        return json_response({"error": f"the stored record cannot be read: {exc}"}, 502)
    if meta is None:
        return json_response({"error": "no result is stored for this id"}, 404)
    return json_response(present.wire(meta))


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")
