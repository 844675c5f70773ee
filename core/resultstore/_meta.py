"""What a plugin stores: the task meta and group meta, and their Celery wire form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._states import PENDING, READY_STATES

# Celery's extended fields (result_extended=True), in its order on the wire.
EXTENDED_FIELDS = ("name", "args", "kwargs", "worker", "retries", "queue")
_NO_EXTENDED = dict.fromkeys(EXTENDED_FIELDS)


@dataclass(frozen=True)
class TaskInfo:
    """What the provider knows about a running task (Celery's ``request``).

    ``group_id`` and ``parent_id`` are always stored; the other fields only
    when the backend runs with ``result_extended=True``.
    """

    name: str | None = None
    args: Sequence[Any] | None = None
    kwargs: Mapping[str, Any] | None = None
    worker: str | None = None
    retries: int | None = None
    queue: str | None = None
    group_id: str | None = None
    parent_id: str | None = None
    children: Sequence[Any] = ()


@dataclass(frozen=True)
class TaskMeta:
    """One task's stored state, as every plugin receives and returns it.

    ``result`` is already in storable form: the return value, the progress
    meta of a custom state, or an exception as ``{exc_type, exc_message,
    exc_module}``. ``extended`` says whether the extended fields are part of
    the record (they are written even when ``None``, as Celery does).
    ``extra`` holds a host's own fields (taskiq's labels, Celery's stamps): top-level
    keys of the wire meta that Celery's readers ignore, kept by every plugin.
    """

    task_id: str
    status: str = PENDING
    result: Any = None
    traceback: str | None = None
    children: list[Any] = field(default_factory=list)
    date_done: datetime | None = None
    group_id: str | None = None
    parent_id: str | None = None
    extended: bool = False
    name: str | None = None
    args: Any = None
    kwargs: Any = None
    worker: str | None = None
    retries: int | None = None
    queue: str | None = None
    extra: Mapping[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return self.status in READY_STATES

    def to_wire(self) -> dict[str, Any]:
        """The dict Celery's key-value backends serialize, key for key and in order."""
        wire: dict[str, Any] = {
            "status": self.status,
            "result": self.result,
            "traceback": self.traceback,
            "children": self.children,
            "date_done": self.date_done.isoformat() if self.date_done else None,
        }
        if self.group_id:
            wire["group_id"] = self.group_id
        if self.parent_id:
            wire["parent_id"] = self.parent_id
        if self.extended:
            for name in EXTENDED_FIELDS:
                wire[name] = getattr(self, name)
        if self.extra:
            wire.update(self.extra)
        wire["task_id"] = self.task_id
        return wire

    @classmethod
    def from_wire(cls, task_id: str, wire: Mapping[str, Any]) -> TaskMeta:
        """Read a decoded Celery meta dict; unknown keys (e.g. stamps) go to ``extra``."""
        # This runs once per record read (a join of 1,000 runs it 1,000 times): keep it lean.
        status = wire.get("status") if isinstance(wire, dict) else None
        if not isinstance(status, str):
            raise ValueError(f"meta of task {task_id!r} is not a task record: {wire!r:.200}")
        date_done = wire.get("date_done")
        if date_done is not None:
            try:
                date_done = parse_date(date_done)
            except ValueError as exc:
                raise ValueError(f"meta of task {task_id!r} has a bad date_done: {exc}") from None
        children = wire.get("children")
        if type(children) is not list:
            if children is not None and not isinstance(children, (list, tuple)):
                raise ValueError(
                    f"meta of task {task_id!r}: children must be a list or null, "
                    f"got {children!r:.100}"
                )
            children = list(children or ())
        traceback, group_id, parent_id = (
            wire.get("traceback"),
            wire.get("group_id"),
            wire.get("parent_id"),
        )
        if (
            type(traceback) not in _STR_OR_NONE
            or type(group_id) not in _STR_OR_NONE
            or type(parent_id) not in _STR_OR_NONE
        ):
            _refuse_types(task_id, wire)
        fields = {
            "task_id": task_id,
            "status": status,
            "result": wire.get("result"),
            "traceback": traceback,
            "children": children,
            "date_done": date_done,
            "group_id": group_id,
            "parent_id": parent_id,
            "extended": False,
            **_NO_EXTENDED,
            "extra": None,
        }
        if "name" in wire or "args" in wire or "worker" in wire:
            fields["extended"] = True
            fields.update((name, wire[name]) for name in EXTENDED_FIELDS if name in wire)
            if (
                type(fields["name"]) not in _STR_OR_NONE
                or type(fields["worker"]) not in _STR_OR_NONE
                or type(fields["queue"]) not in _STR_OR_NONE
                or type(fields["retries"]) not in _INT_OR_NONE
            ):
                _refuse_types(task_id, wire)
        if not wire.keys() <= KNOWN_KEYS:
            extra = {k: v for k, v in wire.items() if k not in KNOWN_KEYS}
            fields["extra"] = extra or None
        return cls.from_fields(fields)

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> TaskMeta:
        """Build from every field by name, unchecked: for plugins' hot read paths.

        A frozen dataclass's ``__init__`` sets each field through
        ``object.__setattr__``, which cost more than decoding the record.
        """
        meta = object.__new__(cls)
        meta.__dict__.update(fields)
        return meta


# The wire keys of TaskMeta's own fields; any other key is a host's extra field.
KNOWN_KEYS = frozenset(
    {"status", "result", "traceback", "children", "date_done", "group_id", "parent_id"}
    | {"task_id", *EXTENDED_FIELDS}
)


def check_extra(extra: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A host's extra fields, checked: str keys that name none of the meta's own."""
    if extra is None:
        return None
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a mapping, got {type(extra).__name__}")
    for key in extra:
        if not isinstance(key, str) or key in KNOWN_KEYS:
            raise ValueError(f"extra field {key!r} is not a str or names a field of the meta")
    return dict(extra) or None


# The types a stored meta's fields may have: checked on every read, so kept to set lookups.
_STR_OR_NONE = frozenset({str, type(None)})
_INT_OR_NONE = frozenset({int, type(None)})
_TYPED_FIELDS = {
    "traceback": (_STR_OR_NONE, "a str"),
    "group_id": (_STR_OR_NONE, "a str"),
    "parent_id": (_STR_OR_NONE, "a str"),
    "name": (_STR_OR_NONE, "a str"),
    "worker": (_STR_OR_NONE, "a str"),
    "queue": (_STR_OR_NONE, "a str"),
    "retries": (_INT_OR_NONE, "an int"),
}


def _refuse_types(task_id: str, wire: Mapping[str, Any]) -> None:
    """Name the first field of the wrong type: a record that is not a meta must not turn
    into a wrong value, or into a TypeError far from here."""
    for name, (types, what) in _TYPED_FIELDS.items():
        value = wire.get(name)
        if type(value) not in types:
            raise ValueError(
                f"meta of task {task_id!r}: {name} must be {what} or null, got {value!r:.100}"
            )


@dataclass(frozen=True)
class GroupMeta:
    """A saved group: its id and its members in Celery's ``as_tuple`` form."""

    group_id: str
    result: Any

    def to_wire(self) -> dict[str, Any]:
        return {"result": self.result}

    @classmethod
    def from_wire(cls, group_id: str, wire: Mapping[str, Any]) -> GroupMeta:
        if not isinstance(wire, Mapping) or "result" not in wire:
            raise ValueError(f"meta of group {group_id!r} is not a group record: {wire!r:.200}")
        return cls(group_id, wire["result"])


def parse_date(value: object) -> datetime | None:
    """Celery writes ISO-8601 strings; older versions wrote naive UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ValueError(f"date_done must be an ISO-8601 string, got {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
