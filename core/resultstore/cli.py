"""The ``resultstore`` command: list results, look at, wait for, forget and revoke them.

Exit codes: 0 success, 1 a task failed or was revoked, 2 usage error (bad
arguments, URL or id), 3 a wait timed out, 4 the backend failed (unreachable,
unreadable data).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import __version__, _cli_list, _registry
from ._args import validate_task_id
from ._backend import Backend
from ._errors import (
    AmbiguousBackend,
    BackendNotFound,
    InvalidURL,
    ResultStoreError,
    TimeoutError,
)
from ._meta import EXTENDED_FIELDS, TaskMeta
from ._plugins import Capability
from ._serialization import DEFAULT_SERIALIZER
from ._states import PROPAGATE_STATES, REVOKED

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_BACKEND = 4

ENV_BACKEND = "RESULTSTORE_BACKEND"


class UsageError(Exception):
    """Bad input from the command line: exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is cmd_demo:
        # The demo's worker processes must see Ctrl-C too (see _start_deaf_to_sigint) and
        # be shut down by its executor: it unwinds the usual way.
        return _run(parser, args)
    return _interruptible(lambda: _run(parser, args))


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        # Every id before any is acted on: a usage error (exit 2) must have changed nothing.
        for task_id in getattr(args, "task_ids", ()):
            validate_task_id(task_id)
        return int(args.command(args))
    except UsageError as exc:
        parser.error(str(exc))  # exits 2
    except BrokenPipeError:  # `resultstore show ... | head`: the reader has all it wanted
        # Python flushes stdout at exit: point it at nothing so that does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except TimeoutError as exc:
        _fail(f"timed out: {exc}")
        return EXIT_TIMEOUT
    except (InvalidURL, BackendNotFound, AmbiguousBackend) as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except (ResultStoreError, OSError) as exc:  # before ValueError: DecodeError is one too
        _fail(f"{type(exc).__name__}: {exc}")
        return EXIT_BACKEND
    except (ValueError, TypeError) as exc:  # a bad task id, option or setting
        _fail(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _interruptible(command: Callable[[], int]) -> int:
    """Run ``command`` in a thread of its own, so that Ctrl-C ends the process at once
    with exit code 130.

    A KeyboardInterrupt is raised wherever the main thread happens to be: inside
    redis-py sending on the subscriber connection (which it then closes under the
    listener thread), or between a lock's acquire and the ``try`` that releases it
    (the cleanup then hangs on that lock). Here it can only land in the join below.
    The process then ends without unwinding the command: the system closes its
    sockets, the server drops its subscriptions, and SQLite rolls back a write in
    flight."""
    outcome: list[int] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(command())
        except BaseException as exc:  # SystemExit from argparse too: re-raised below
            error.append(exc)

    thread = threading.Thread(target=target, name="resultstore-command", daemon=True)
    _start_deaf_to_sigint(thread)
    try:
        thread.join()
    except KeyboardInterrupt:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe
                stream.flush()
        os._exit(130)
    if error:
        raise error[0]
    return outcome[0]


def _start_deaf_to_sigint(thread: threading.Thread) -> None:
    """Start ``thread`` (and the threads it starts) with SIGINT blocked, so that the
    system delivers it to the main thread: one delivered to another thread sets
    Python's flag but leaves the main thread asleep in its join (POSIX; elsewhere
    Python's handler runs in the main thread anyway)."""
    if not hasattr(signal, "pthread_sigmask"):
        thread.start()
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _fail(message: str) -> None:
    print(f"resultstore: error: {message}", file=sys.stderr)


# --- the commands -----------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    plugins = _registry.installed_plugins()
    if args.json:
        for plugin in plugins:
            _emit_json(dataclasses.asdict(plugin))
        return EXIT_OK
    table = [("SCHEME", "DISTRIBUTION", "VERSION", "CAPABILITIES", "STATUS")]
    for plugin in plugins:
        caps = "per URL" if plugin.capabilities is None else ",".join(plugin.capabilities)
        table.append(
            (
                plugin.scheme,
                plugin.distribution or f"register_backend: {plugin.target}",
                plugin.version or "-",
                "-" if plugin.error else caps,
                plugin.error or "ok",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for *cells, status in table:
        row = "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True))
        print(f"{row}  {status}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        metas = backend.get_many(args.task_ids)
        found = {t: backend.exists(t) for t in args.task_ids if metas[t].status == "PENDING"}
        for task_id in args.task_ids:
            _print_meta(args, backend, metas[task_id], exists=found.get(task_id, True))
        return _exit_for(metas.values())


def cmd_wait(args: argparse.Namespace) -> int:
    def progress(meta: TaskMeta) -> None:
        if not meta.ready and not args.json:
            print(f"{meta.task_id}  {meta.status}  {_short(meta.result)}", file=sys.stderr)

    with _backend(args) as backend:
        ready = []
        with backend.iter_ready(args.task_ids, args.timeout, on_message=progress) as metas:
            for meta in metas:
                _print_meta(args, backend, meta, exists=True)
                ready.append(meta)
        return _exit_for(ready)


def cmd_forget(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        for task_id in args.task_ids:
            forgotten = backend.forget(task_id)
            if args.json:
                _emit_json({"task_id": task_id, "forgotten": forgotten})
            else:
                print(f"{task_id}  {'forgotten' if forgotten else 'nothing stored'}")
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        for task_id in args.task_ids:
            revoked = backend.revoke(task_id, args.reason)
            state = REVOKED if revoked else backend.get_state(task_id)
            if args.json:
                _emit_json({"task_id": task_id, "revoked": revoked, "state": state})
            elif revoked:
                print(f"{task_id}  revoked")
            else:
                print(f"{task_id}  already finished ({state}); kept")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        _cli_list.run(args, backend, _emit_json)
    return EXIT_OK


def cmd_cleanup(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        if Capability.CLEANUP not in backend.capabilities:
            deleted = 0
            note = f"{backend.url.masked} expires results itself; nothing to clean up"
        else:
            with _progress_bar(enabled=not args.json) as advance:
                deleted = backend.cleanup(progress=advance)
            note = f"deleted {deleted} expired result{'s' * (deleted != 1)}"
    if args.json:
        _emit_json({"deleted": deleted})
    else:
        print(note)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    url = args.url or args.backend  # --backend is accepted here too: do not ignore it
    return demo.main([url] if url else [])


# --- helpers ------------------------------------------------------------------------------


@contextmanager
def _backend(args: argparse.Namespace) -> Iterator[Backend]:
    url = args.backend or os.environ.get(ENV_BACKEND)
    if not url:
        raise UsageError(f"no backend: pass --backend URL or set {ENV_BACKEND}")
    accept = args.accept.split(",") if args.accept else None
    # The commands write only revocations: in a serializer the user accepts (the
    # backend refuses a result_serializer missing from result_accept_content).
    serializer = DEFAULT_SERIALIZER if not accept or DEFAULT_SERIALIZER in accept else accept[0]
    with Backend(url, serializer=serializer, accept_content=accept) as backend:
        if backend.process_local:
            print(
                f"resultstore: note: {backend.url.masked} keeps results inside one process; "
                "this command's store is its own, and empty",
                file=sys.stderr,
            )
        yield backend


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr when tqdm is installed (``pip install resultstore[cli]``)."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        yield lambda count: None
        return
    with tqdm(desc="deleting", unit=" results", file=sys.stderr) as bar:
        yield bar.update


def _exit_for(metas: Any) -> int:
    failed = any(meta.status in PROPAGATE_STATES for meta in metas)
    return EXIT_TASK_FAILED if failed else EXIT_OK


def _print_meta(args: argparse.Namespace, backend: Backend, meta: TaskMeta, exists: bool) -> None:
    if args.json:
        _emit_json(_cli_list.record(meta, exists=exists))
        return
    state = meta.status if exists else f"{meta.status} (nothing stored)"
    lines = [f"task       {meta.task_id}", f"state      {state}"]
    if exists:
        lines.append(f"result     {backend.result_value(meta)!r}")
        if meta.date_done:
            lines.append(f"date_done  {meta.date_done.isoformat()}")
        for name in ("group_id", "parent_id", *EXTENDED_FIELDS):
            if getattr(meta, name) is not None:
                lines.append(f"{name:<10} {getattr(meta, name)!r}")
        for name, value in (meta.extra or {}).items():  # a host's own fields (taskiq's, ...)
            lines.append(f"{name:<10} {value!r}")
        if meta.traceback:
            lines.append("traceback:")
            lines.append(textwrap.indent(meta.traceback.rstrip(), "  "))
    print("\n".join(lines) + "\n")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _emit_json(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=repr, ensure_ascii=False))


def _common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--backend", metavar="URL", default=default, help=f"backend URL (default: ${ENV_BACKEND})"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="one JSON object per line instead of text",
    )
    parser.add_argument(
        "--accept",
        metavar="NAMES",
        default=default,
        help="serializers to read, comma-separated (default: json)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resultstore",
        description="Look at, wait for, forget and revoke task results.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    _common_options(parser, None)
    parser.add_argument("--version", action="version", version=f"resultstore {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        sub = commands.add_parser(name, help=help, description=help)
        # SUPPRESS: an option given after the command must not reset one given before it.
        _common_options(sub, argparse.SUPPRESS)
        sub.set_defaults(command=func)
        return sub

    add("plugins", cmd_plugins, "list installed backend plugins and whether each loads")
    for name, func, help in (
        ("show", cmd_show, "show tasks' state, result and traceback"),
        ("forget", cmd_forget, "delete tasks' stored results"),
        ("revoke", cmd_revoke, "revoke tasks (a finished task keeps its result)"),
    ):
        sub = add(name, func, help)
        sub.add_argument("task_ids", nargs="+", metavar="TASK_ID")
        if name == "revoke":
            sub.add_argument("--reason", default="revoked", help="stored with the revocation")
    wait = add("wait", cmd_wait, "wait until tasks are ready (push where the plugin has it)")
    wait.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    wait.add_argument(
        "--timeout", type=_seconds, default=None, help="seconds to wait (default: forever)"
    )
    _cli_list.add_arguments(add("ls", cmd_ls, "list stored results, newest first, or count them"))
    add("cleanup", cmd_cleanup, "delete expired results now")
    demo = add("demo", cmd_demo, "run the lifecycle demo")
    demo.add_argument("url", nargs="?", help="backend URL (default: a temporary SQLite file)")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0: {text!r}")
    return value  # inf waits forever: Backend takes what no lock can wait as no deadline


if __name__ == "__main__":
    raise SystemExit(main())
