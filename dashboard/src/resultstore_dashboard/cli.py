"""``resultstore-dashboard --backend URL [--host 127.0.0.1] [--port 8000] [--token TOKEN]``.

The backend is opened before the server starts, so a wrong URL or a missing plugin
fails at once with resultstore's own message (password masked), not at the first
request. Binding anything but loopback without a token is refused before a socket
is opened.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from resultstore import Backend, ResultStoreError

from . import __version__
from .app import create_app
from .security import check_token, is_loopback

TOKEN_ENV = "RESULTSTORE_DASHBOARD_TOKEN"
BACKEND_ENV = "RESULTSTORE_BACKEND"
# A stream still open at shutdown is cut after this long (the browser reconnects).
GRACEFUL_SHUTDOWN = 3


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resultstore-dashboard",
        description="Serve a dashboard of the results stored in a resultstore backend.",
    )
    parser.add_argument(
        "--backend",
        default=os.environ.get(BACKEND_ENV),
        metavar="URL",
        help=(
            "the store to show, e.g. redis://localhost:6379/0 or db+sqlite:///results.db "
            f"(default: ${BACKEND_ENV}, as for the resultstore command)"
        ),
    )
    parser.add_argument(
        "--accept",
        metavar="NAMES",
        default=None,
        help="serializers to read, comma-separated (default: json; pickle only if you trust "
        "every writer of the store)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        type=option,
        metavar="NAME=VALUE",
        help=(
            "a backend option, repeatable, e.g. --option redis_list_index=true; the value is "
            "read as JSON where it parses (true, 5, {...}), else as text"
        ),
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to bind (default 127.0.0.1; any other needs a token)",
    )
    parser.add_argument("--port", type=int, default=8000, help="the port (default 8000)")
    parser.add_argument(
        "--token",
        default=None,
        help=(
            f"require this token (at least 16 characters) on every request; also read "
            f"from ${TOKEN_ENV}, which keeps it out of the process list"
        ),
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="IPS",
        help=(
            "behind a reverse proxy (TLS): trust its X-Forwarded-Proto and X-Forwarded-For "
            "from these addresses (comma-separated), so that the CSRF check sees the scheme "
            "the browser used; off by default"
        ),
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default info)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line: the value as JSON where it parses."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def main(argv: Sequence[str] | None = None) -> int:
    options = parser()
    args = options.parse_args(argv)
    if not args.backend:
        options.error(f"--backend URL is required (or ${BACKEND_ENV})")
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    try:
        check_token(token, args.host)
    except ValueError as exc:
        print(f"resultstore-dashboard: {exc}", file=sys.stderr)
        return 2
    try:
        accept = None if args.accept is None else [n for n in args.accept.split(",") if n]
        backend = Backend(args.backend, accept_content=accept, options=dict(args.option))
    except (ResultStoreError, ValueError, TypeError) as exc:
        print(f"resultstore-dashboard: cannot open the backend: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(backend, token=token)
        shown = f"[{args.host}]" if ":" in args.host else args.host
        # Port 0: the system picks one, and uvicorn's own line below names it.
        where = f"http://{shown}:{args.port}/" if args.port else f"{shown}, a free port"
        login = "" if token is None else " (open it once with ?token=<your token>)"
        print(
            f"resultstore-dashboard {__version__}: {backend.url.masked} on {where}{login}",
            file=sys.stderr,
            flush=True,
        )
        if not is_loopback(args.host):
            print(
                "resultstore-dashboard: serving beyond this machine; every request needs the "
                "token. Put it behind TLS (a reverse proxy) when the network is not trusted.",
                file=sys.stderr,
                flush=True,
            )
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
            # Trust no forwarded headers unless told which proxy sends them.
            proxy_headers=args.forwarded_allow_ips is not None,
            forwarded_allow_ips=args.forwarded_allow_ips,
            server_header=False,
        )
    finally:
        backend.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
