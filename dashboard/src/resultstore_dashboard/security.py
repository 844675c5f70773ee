"""What stands between the network and the store: the token, the Host check, CSRF, headers.

One ASGI middleware (:class:`Gate`) wraps the whole application, so no route can
forget a check: pages, the JSON API, the event stream and the actions all pass
through it, and a streaming response gets its headers like any other.

- **Token.** With a token set, every request must carry it: ``Authorization: Bearer
  <token>``, or the session cookie that ``GET ...?token=<token>`` sets (then the
  browser is redirected to the same URL without the token, so it does not stay in
  the address bar or the history). Compared in constant time.
- **Host.** Without a token the dashboard is bound to loopback, where any web page
  the operator visits could still reach it through DNS rebinding (a hostile name
  that resolves to 127.0.0.1): only loopback ``Host`` headers are served then.
- **CSRF.** Actions are POSTs that carry a form field matching the ``rsd_csrf``
  cookie (signed with a per-process secret, so a cookie planted by a sibling site
  is useless without it), and whose ``Origin`` (or ``Referer``) is the dashboard's
  own. Cookies are ``SameSite=Strict`` besides.
- **Headers.** A Content-Security-Policy without inline scripts (a stored
  ``<script>`` could not run even if it ever reached the page unescaped), no
  framing, no sniffing, no caching of results.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "rsd_session"
CSRF_COOKIE = "rsd_csrf"
CSRF_FIELD = "csrf"
# Long enough that guessing is hopeless without any rate limit.
MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Same-origin keeps Origin and Referer on our own POSTs (the CSRF check reads them);
    # "no-referrer" would make Chromium send "Origin: null".
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard on this machine."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_token(token: str | None, host: str) -> str | None:
    """The token to require, or a reason to refuse to start (``ValueError``)."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"the token is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH} "
            'characters (python -c "import secrets; print(secrets.token_urlsafe(24))")'
        )
    if token is None and not is_loopback(host):
        raise ValueError(
            f"refusing to serve on {host}: binding an address other than loopback needs a "
            "token (--token or RESULTSTORE_DASHBOARD_TOKEN), which every request must then "
            "carry; without one anybody who can reach the port could read and forget results"
        )
    return token


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Gate:
    """The ASGI middleware described in the module's docstring."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token
        # The cookie holds a digest of the token, not the token: the browser's cookie
        # store then never has the secret an operator types or scripts use.
        self.session = (
            None
            if token is None
            else hmac.new(
                token.encode(), b"resultstore-dashboard session", hashlib.sha256
            ).hexdigest()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here: close anything else
            return
        conn = HTTPConnection(scope)
        refusal = self._refusal(conn)
        if refusal is not None:
            await refusal(scope, receive, _with_headers(send))
            return
        await self.app(scope, receive, _with_headers(send))

    def _refusal(self, conn: HTTPConnection) -> Response | None:
        if self.token is None:
            host = conn.url.hostname or ""
            if not is_loopback(host):
                return PlainTextResponse(
                    "400 Bad Request: this dashboard has no token, so it serves loopback "
                    "host names only (127.0.0.1, localhost, [::1])",
                    status_code=400,
                )
            return None
        if conn.scope["method"] in ("GET", "HEAD") and "token" in conn.query_params:
            return self._login(conn)
        if self._authorized(conn):
            return None
        return PlainTextResponse(
            "401 Unauthorized: this dashboard needs its token. Open it once with "
            "?token=<token> in the URL (a cookie keeps you signed in), or send "
            "'Authorization: Bearer <token>'.",
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="resultstore-dashboard"'},
        )

    def _authorized(self, conn: HTTPConnection) -> bool:
        assert self.token is not None
        assert self.session is not None
        scheme, _, given = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given and _equal(given.strip(), self.token):
            return True
        cookie = conn.cookies.get(SESSION_COOKIE)
        return cookie is not None and _equal(cookie, self.session)

    def _login(self, conn: HTTPConnection) -> Response:
        assert self.token is not None
        assert self.session is not None
        if not _equal(conn.query_params["token"], self.token):
            return PlainTextResponse("401 Unauthorized: wrong token", status_code=401)
        rest = [(k, v) for k, v in conn.query_params.multi_items() if k != "token"]
        # The path as the browser sent it (still quoted: a task id may hold "/"), and
        # relative: the Host header chose the scheme and name we are reached by. Never
        # "//host/...", which a browser would take for another site.
        raw = conn.scope.get("raw_path") or conn.scope["path"].encode()
        path = "/" + raw.decode("latin-1").lstrip("/")
        location = path + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(location, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.session,
            httponly=True,
            samesite="strict",
            secure=conn.url.scheme == "https",
            path="/",
        )
        return response


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                headers.setdefault(name, value)
            headers.setdefault("cache-control", "no-store")
        await send(message)

    return sending


# --- CSRF -----------------------------------------------------------------------------


class Csrf:
    """Signed double-submit tokens: the cookie is random, the form field is its HMAC
    under a secret of this process."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def sign(self, cookie: str) -> str:
        return hmac.new(self.secret, cookie.encode(), hashlib.sha256).hexdigest()

    def cookie_for(self, request: Request) -> tuple[str, bool]:
        """The request's CSRF cookie, or a new one (and whether it is new)."""
        cookie = request.cookies.get(CSRF_COOKIE)
        if cookie and 20 <= len(cookie) <= 100:
            return cookie, False
        return secrets.token_urlsafe(32), True

    def set_cookie(self, response: Response, cookie: str, request: Request) -> None:
        response.set_cookie(
            CSRF_COOKIE,
            cookie,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )

    def refusal(self, request: Request, form: dict[str, str]) -> str | None:
        """Why this POST is refused, or ``None`` when it is our own page's."""
        own = f"{request.url.scheme}://{request.url.netloc}"
        origin = request.headers.get("origin")
        if origin is not None:
            if origin != own:
                return f"the request came from another origin ({origin[:100]})"
        else:
            referer = request.headers.get("referer")
            if referer is not None:
                parts = urlsplit(referer)
                if f"{parts.scheme}://{parts.netloc}" != own:
                    return "the request came from another site"
        cookie = request.cookies.get(CSRF_COOKIE)
        field = form.get(CSRF_FIELD)
        if not cookie or not field:
            return "the form's CSRF token is missing (reload the page and try again)"
        if not _equal(field, self.sign(cookie)):
            return "the form's CSRF token does not match (reload the page and try again)"
        return None
