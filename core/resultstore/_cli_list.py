"""``resultstore ls``: list stored results with the listing filters, or count them by state."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from ._backend import Backend
from ._listing import MAX_LIMIT
from ._meta import TaskMeta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def when(text: str) -> datetime:
    """A point in time from the command line: ``90s``, ``30m``, ``1h``, ``2d``, ``1w`` ago,
    or an ISO-8601 date and time (UTC unless it names its offset)."""
    ago = _AGO.match(text.strip())
    if ago:
        return datetime.now(timezone.utc) - timedelta(seconds=float(ago[1]) * _UNITS[ago[2]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use 30m, 1h, 2d ago, or ISO-8601 like 2026-11-30T12:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state", action="append", dest="states", metavar="STATE",
        help="only this state (repeat for several: --state FAILURE --state REVOKED)",
    )  # fmt: skip
    parser.add_argument("--name", help="only this task name (stored with result_extended)")
    parser.add_argument("--since", type=when, help="finished at or after: 1h, 2d, or ISO-8601")
    parser.add_argument(
        "--until", type=when, help="finished before (unfinished results are then left out)"
    )
    parser.add_argument("--prefix", help="only task ids that start with this")
    parser.add_argument(
        "--limit", type=count, default=50, help="how many results to show (default: 50)"
    )
    parser.add_argument("--all", action="store_true", help="every result, page after page")
    parser.add_argument("--cursor", help="go on where an earlier listing stopped")
    parser.add_argument(
        "--counts", action="store_true", help="count results by state instead of listing them"
    )


def run(args: argparse.Namespace, backend: Backend, emit_json: Any) -> None:
    filters = {
        "name": args.name,
        "since": args.since,
        "until": args.until,
        "id_prefix": args.prefix,
    }
    if args.counts:
        counts = backend.count_results(**filters)
        for state, (number,) in sorted(counts.items(), key=lambda item: -item[1][0]):
            if args.json:
                emit_json({"state": state, "count": number})
            else:
                print(f"{state:<10} {number}")
        return
    metas = _listed(backend, args, {**filters, "states": args.states})
    if args.json:
        for meta in metas:
            emit_json(record(meta))
        return
    print(f"{'TASK_ID':<36}  {'STATE':<8}  {'DATE_DONE':<26}  {'NAME':<20}  RESULT")
    for meta in metas:
        done = meta.date_done.isoformat() if meta.date_done else "-"
        result = repr(meta.result)
        result = result if len(result) <= 60 else result[:57] + "..."
        print(f"{meta.task_id:<36}  {meta.status:<8}  {done:<26}  {meta.name or '-':<20}  {result}")


def _listed(
    backend: Backend, args: argparse.Namespace, filters: dict[str, Any]
) -> Iterator[TaskMeta]:
    """Results up to ``--limit`` (or all), page by page. The first page is read now, so a
    bad filter or cursor fails before anything is printed."""
    left = None if args.all else args.limit

    def size() -> int:
        return MAX_LIMIT if left is None else min(left, MAX_LIMIT)

    page = backend.list_results(limit=size(), cursor=args.cursor, **filters)

    def pages() -> Iterator[TaskMeta]:
        nonlocal page, left
        while True:
            yield from page.items
            if left is not None:
                left -= len(page.items)
            if page.cursor is None:
                return
            if left == 0:
                print(f"resultstore: more results: add --cursor {page.cursor}", file=sys.stderr)
                return
            page = backend.list_results(limit=size(), cursor=page.cursor, **filters)

    return pages()


def record(meta: TaskMeta, **head: Any) -> dict[str, Any]:
    """A meta as one JSON line: id and state first, then ``head``, then the wire fields."""
    wire = meta.to_wire()
    del wire["status"]
    return {"task_id": meta.task_id, "state": meta.status, **head, **wire}
