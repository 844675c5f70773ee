"""A stored task meta as the pages show it: text, never markup.

Every value that came from the store leaves this module as a ``str`` (pretty JSON, a
one-line summary, a date) or a number, and the templates escape every ``str`` they
print. Nothing here builds HTML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from numbers import Real
from typing import Any

from resultstore import EXCEPTION_STATES, READY_STATES, TaskMeta

# A result bigger than this is cut on the page (the JSON API has it whole).
MAX_SHOWN = 200_000
SUMMARY_LENGTH = 100


def pretty(value: Any) -> str:
    """Indented JSON; what JSON cannot show (a pickled object) as its ``repr``."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    if len(text) > MAX_SHOWN:
        return text[:MAX_SHOWN] + f"\n... ({len(text) - MAX_SHOWN:,} more characters)"
    return text


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr, separators=(", ", ": "))


def shorten(text: str, length: int = SUMMARY_LENGTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"


def when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return ""
    seconds = int((now - value).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


@dataclass(frozen=True)
class Failure:
    exc_type: str
    exc_message: str
    exc_module: str


def failure(meta: TaskMeta) -> Failure | None:
    """The stored exception of FAILURE, RETRY and REVOKED (Celery's dict form)."""
    if meta.status not in EXCEPTION_STATES:
        return None
    result = meta.result
    if isinstance(result, Mapping) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, (list, tuple)):  # Celery stores the exception's args
            message = ", ".join(m if isinstance(m, str) else compact(m) for m in message)
        return Failure(
            str(result.get("exc_type") or ""),
            message if isinstance(message, str) else compact(message),
            str(result.get("exc_module") or ""),
        )
    return Failure(type(result).__name__, compact(result), "") if result is not None else None


@dataclass(frozen=True)
class Progress:
    current: float
    total: float

    @property
    def percent(self) -> int:
        return max(0, min(100, int(self.current * 100 / self.total)))

    @property
    def label(self) -> str:
        return f"{_number(self.current)} / {_number(self.total)} ({self.percent}%)"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def progress(meta: TaskMeta) -> Progress | None:
    """``current``/``total`` of an unfinished task's meta (``update_state("PROGRESS",
    {"current": 3, "total": 10})``), or ``None``."""
    if meta.status in READY_STATES or not isinstance(meta.result, Mapping):
        return None
    current, total = meta.result.get("current"), meta.result.get("total")
    numbers = all(isinstance(v, Real) and not isinstance(v, bool) for v in (current, total))
    if not numbers or not total or total <= 0:
        return None
    return Progress(float(current), float(total))  # type: ignore[arg-type]


def summary(meta: TaskMeta) -> str:
    """One line for the results table: the exception, or the result's JSON, shortened."""
    found = failure(meta)
    if found is not None:
        return shorten(f"{found.exc_type}: {found.exc_message}")
    step = progress(meta)
    if step is not None:
        return step.label
    return "" if meta.result is None else shorten(compact(meta.result))


@dataclass(frozen=True)
class Child:
    task_id: str | None
    text: str


def children(meta: TaskMeta) -> list[Child]:
    """The meta's children, with the task id of each where its form has one (Celery
    stores a result as ``[[id, parent], None]`` and a group as ``[[id, None], [...]]``)."""
    found = []
    for child in meta.children:
        task_id = None
        if isinstance(child, str):
            task_id = child
        elif (
            isinstance(child, (list, tuple))
            and child
            and isinstance(child[0], (list, tuple))
            and child[0]
            and isinstance(child[0][0], str)
        ):
            task_id = child[0][0]
        found.append(Child(task_id, compact(child)))
    return found


def extended(meta: TaskMeta) -> list[tuple[str, str]]:
    """The extended fields (``result_extended=True``) as label and text."""
    if not meta.extended:
        return []
    rows = [("Name", meta.name), ("Worker", meta.worker), ("Queue", meta.queue)]
    shown = [(label, value or "") for label, value in rows]
    shown.append(("Retries", "" if meta.retries is None else str(meta.retries)))
    shown.append(("Args", "" if meta.args is None else compact(meta.args)))
    shown.append(("Kwargs", "" if meta.kwargs is None else compact(meta.kwargs)))
    return shown


def snapshot(meta: TaskMeta | None) -> dict[str, Any]:
    """What the event stream sends of a task: small, and only data (the page's script
    puts it into the page as text)."""
    if meta is None:
        return {"state": None, "ready": True, "missing": True}
    step = progress(meta)
    return {
        "state": meta.status,
        "ready": meta.status in READY_STATES,
        "missing": False,
        "date_done": meta.date_done.isoformat() if meta.date_done else None,
        "progress": None
        if step is None
        else {
            "current": step.current,
            "total": step.total,
            "percent": step.percent,
            "label": step.label,
        },
        "summary": summary(meta),
        # The page's "Meta" box follows the stored meta (kept short: it is progress).
        "result": shorten_block(pretty(meta.result)),
    }


def shorten_block(text: str, length: int = 10_000) -> str:
    return text if len(text) <= length else text[:length] + "\n..."


def wire(meta: TaskMeta) -> dict[str, Any]:
    """The JSON API's form: Celery's wire meta (what ``resultstore show`` prints)."""
    return meta.to_wire()
