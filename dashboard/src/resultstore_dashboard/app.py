"""The ASGI application: routes, templates, and what every view shares.

``create_app(backend, token=...)`` is the whole dashboard as one Starlette app, so it
can be served by the ``resultstore-dashboard`` command (uvicorn) or mounted in an
application of your own. The backend stays the caller's: the app never closes it.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from resultstore import Backend, Capability, ResultStoreError, TaskMeta, validate_task_id

from . import present
from .query import WINDOWS, BadQuery
from .security import Csrf, Gate, check_token

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Dashboard:
    """What the views share, kept on ``app.state.dashboard``."""

    backend: Backend
    templates: Jinja2Templates
    csrf: Csrf

    @property
    def can_list(self) -> bool:
        return Capability.LISTING in self.backend.capabilities


def dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


def base(request: Request) -> str:
    """The path the app is mounted at (empty when it is the whole site)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def task_url(request: Request, task_id: str) -> str:
    # Quoted whole, "/" included: a task id may hold any printable character.
    return f"{base(request)}/tasks/{quote(task_id, safe='')}"


def link(request: Request, path: str, params: list[tuple[str, str]] | None = None) -> str:
    query = urlencode(params or [])
    return f"{base(request)}{path}" + (f"?{query}" if query else "")


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """A page, with the CSRF token its forms carry (and its cookie, set once)."""
    dash = dashboard(request)
    cookie, new = dash.csrf.cookie_for(request)
    page = {
        "request": request,
        "nav": "",
        "base": base(request),
        "backend_url": dash.backend.url.masked,
        "scheme": dash.backend.url.scheme,
        "can_list": dash.can_list,
        "csrf_token": dash.csrf.sign(cookie),
        "windows": WINDOWS.values(),
        "task_url": lambda task_id: task_url(request, task_id),
        **context,
    }
    response = dash.templates.TemplateResponse(request, template, page, status_code=status_code)
    if new:
        dash.csrf.set_cookie(response, cookie, request)
    return response


def error_page(request: Request, status_code: int, message: str) -> Response:
    return render(request, "error.html", {"status": status_code, "message": message}, status_code)


View = Callable[[Request], Awaitable[Response]]


def page(view: View) -> View:
    """A view whose expected failures become pages that say what went wrong: a bad
    query (400), and a store that cannot answer (503, its message already masked)."""

    @wraps(view)
    async def wrapped(request: Request) -> Response:
        try:
            return await view(request)
        except BadQuery as exc:
            return error_page(request, 400, str(exc))
        except ResultStoreError as exc:
            return error_page(request, 503, f"the result store failed: {exc}")

    return wrapped


def checked_id(text: str) -> str:
    try:
        return validate_task_id(text)
    except ValueError as exc:
        raise BadQuery(str(exc)) from None


async def read_task(backend: Backend, task_id: str) -> TaskMeta | None:
    """The stored meta, or ``None`` when nothing is stored (a plain read says PENDING)."""

    def read() -> TaskMeta | None:
        meta = backend.get_task_meta(task_id)
        if meta == TaskMeta(task_id) and not backend.exists(task_id):
            return None
        return meta

    return await run_in_threadpool(read)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        # Every template, whatever its name: a stored result is text, never markup.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = present.when
    return env


def create_app(backend: Backend, *, token: str | None = None) -> Starlette:
    """The dashboard on ``backend``. With ``token`` (at least 16 characters) every
    request must carry it; without one, only loopback Host names are served."""
    from . import api, sse, views  # the views import this module's helpers

    if token is not None:
        check_token(token, "127.0.0.1")
    routes = [
        Route("/", views.overview, name="overview"),
        Route("/results", views.results, name="results"),
        Route("/search", views.search, name="search"),
        Route("/tasks/{task_id:path}", views.task, name="task"),
        Route("/actions/forget", views.forget, methods=["POST"], name="forget"),
        Route("/actions/revoke", views.revoke, methods=["POST"], name="revoke"),
        Route("/api/results", api.results, name="api-results"),
        Route("/api/counts", api.counts, name="api-counts"),
        Route("/api/tasks/{task_id:path}", api.task, name="api-task"),
        Route("/api/events", sse.events, name="events"),
        Route("/healthz", api.health, name="health"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Gate, token=token)])
    app.state.dashboard = Dashboard(
        backend=backend,
        templates=Jinja2Templates(env=_environment()),
        # Per process: a restart makes open forms stale, which a reload fixes.
        csrf=Csrf(secrets.token_bytes(32)),
    )
    return app
