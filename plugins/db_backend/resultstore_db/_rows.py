"""Rows <-> metas: Celery's columns, the serializer's bytes, naive UTC dates."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from resultstore import READY_STATES, Codec, TaskMeta

# The columns a store writes (all of Celery's but the id).
STORED = (
    "task_id", "status", "result", "date_done", "traceback", "children",
    "name", "args", "kwargs", "worker", "retries", "queue", "stamps",
)  # fmt: skip


# On MySQL/MariaDB a read packs every column of the meta but the result into one
# JSON array (binary ones in base64). PyMySQL parses a description packet per column
# of each result set and a value per column of each row: a get of the 15 columns took
# 750 us where one of 2 took 390 us (the raw driver's read of status and result).
_PACKED = (
    "task_id", "status", "date_done", "traceback", "children",
    "name", "args", "kwargs", "worker", "retries", "queue", "stamps",
)  # fmt: skip
_PACKED_BINARY = ("children", "args", "kwargs", "stamps")


def read_columns(task: sa.Table, dialect: str) -> list[Any]:
    """What a read selects: the columns of a meta (not ``id``)."""
    if dialect not in ("mysql", "mariadb"):
        return [task.c[name] for name in STORED]
    parts = [sa.func.to_base64(task.c[n]) if n in _PACKED_BINARY else task.c[n] for n in _PACKED]
    return [task.c.result, sa.func.json_array(*parts).label("packed")]


def unpack(row: dict[str, Any]) -> dict[str, Any]:
    """A packed MySQL/MariaDB row (see read_columns) as the row of its columns."""
    found = dict(zip(_PACKED, json.loads(row["packed"]), strict=True))
    found["result"] = row["result"]
    for name in _PACKED_BINARY:
        if found[name] is not None:
            found[name] = base64.b64decode(found[name])  # skips the newlines TO_BASE64 adds
    if found["date_done"] is not None:
        found["date_done"] = datetime.fromisoformat(found["date_done"])
    return found


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
