"""Rows <-> metas: Celery's columns, the serializer's bytes, naive UTC dates."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from resultstore import READY_STATES, Codec, TaskMeta

# The columns a store writes (all of Celery's but the id).
STORED = (
    "task_id", "status", "result", "date_done", "traceback", "children",
    "name", "args", "kwargs", "worker", "retries", "queue", "stamps",
)  # fmt: skip


def row_values(codec: Codec, meta: TaskMeta) -> dict[str, Any]:
    """The stored columns of ``meta`` but its id."""
    dumps = codec.dumps
    what = f"result of task {meta.task_id!r}"
    return {
        "status": meta.status,
        "result": dumps(meta.result, what),
        "date_done": naive_utc(meta.date_done or datetime.now(timezone.utc)),
        "traceback": meta.traceback,
        "children": dumps(meta.children, what) if meta.children else None,
        "name": meta.name,
        "args": dumps(meta.args, what) if meta.extended else None,
        "kwargs": dumps(meta.kwargs, what) if meta.extended else None,
        "worker": meta.worker,
        "retries": meta.retries,
        "queue": meta.queue,
        "stamps": dumps(_stamps(meta.extra), what) if meta.extra else None,
    }


def _stamps(extra: Mapping[str, Any]) -> dict[str, Any]:
    """A meta's extra fields in Celery's ``stamps`` column: Celery's database backend
    merges ``stamps`` into the meta it reads (and sets ``stamped_headers``), as its
    Redis backend keeps them top-level, so a host's fields read the same on both."""
    stamps = {k: v for k, v in extra.items() if k != "stamped_headers"}
    if "stamped_headers" in extra:
        return {"stamped_headers": extra["stamped_headers"], "stamps": stamps}
    return {"stamps": stamps}


def _extra(info: Any) -> dict[str, Any] | None:
    """The extra fields back from the ``stamps`` column (see :func:`_stamps`)."""
    if not isinstance(info, Mapping):
        return None
    extra = dict(info["stamps"]) if isinstance(info.get("stamps"), Mapping) else {}
    if "stamped_headers" in info:
        extra["stamped_headers"] = info["stamped_headers"]
    return extra or None


def meta_of(codec: Codec, row: Mapping[str, Any]) -> TaskMeta:
    loads = codec.loads
    task_id = row["task_id"]
    what = f"stored result of task {task_id!r}"
    status, result, children = row["status"], row["result"], row["children"]
    name, args, kwargs, worker = row["name"], row["args"], row["kwargs"], row["worker"]
    date_done = row["date_done"] if status in READY_STATES else None
    return TaskMeta.from_fields(
        {
            "task_id": task_id,
            "status": status,
            "result": loads(result, what) if result is not None else None,
            "traceback": row["traceback"],
            "children": loads(children, what) if children is not None else [],
            "date_done": date_done.replace(tzinfo=timezone.utc) if date_done else None,
            "group_id": None,
            "parent_id": None,
            "extended": name is not None or args is not None or worker is not None,
            "name": name,
            "args": loads(args, what) if args is not None else None,
            "kwargs": loads(kwargs, what) if kwargs is not None else None,
            "worker": worker,
            "retries": row["retries"],
            "queue": row["queue"],
            "extra": _extra(loads(row["stamps"], what)) if row["stamps"] is not None else None,
        }
    )


def now() -> datetime:
    return datetime.now(timezone.utc)


def naive_utc(value: datetime) -> datetime:
    """Celery's DateTime columns hold naive UTC."""
    return value.astimezone(timezone.utc).replace(tzinfo=None)
