"""Listing stored results (capability ``listing``): the query, the page, the order and cursor.

The order is the same on every engine, so that a cursor means one thing: results
still unfinished first (they are live now), then finished ones newest first by
``date_done``, ties broken by task id, descending. A cursor is the position of the
last result of a page; the next page starts strictly after it. Paging is keyset
paging: results stored while a client pages sort before its cursor (they are newer)
and are not seen, and every result that existed when paging began and is not stored
again meanwhile is seen exactly once.

``page_of`` and ``count_of`` do the work over an iterable of metas, for plugins that
read their records anyway (memory://, a Redis ``SCAN``); engines with indexes answer
the same queries with them (the db plugin's SQL).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import math
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ._meta import TaskMeta
from ._states import READY_STATES

# A page bigger than this is a dump, not a page: use a loop over cursors.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
# Histogram buckets one count query may ask for.
MAX_BUCKETS = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _aware(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (e.g. tzinfo=timezone.utc), got {value}")
    return value.astimezone(timezone.utc)


@dataclass(frozen=True)
class Position:
    """Where a result sorts: ``unfinished`` first, then ``at`` (``date_done``), then
    ``task_id``, every part descending. ``at`` of an unfinished result is the time of
    its last store where the engine records one (SQL), else ``None``."""

    unfinished: bool
    at: datetime | None
    task_id: str

    @classmethod
    def of(cls, meta: TaskMeta) -> Position:
        unfinished = meta.status not in READY_STATES
        return cls(unfinished, None if unfinished else meta.date_done, meta.task_id)

    def key(self) -> tuple[bool, float, str]:
        """A sort key: larger sorts first."""
        at = -math.inf if self.at is None else (self.at - _EPOCH).total_seconds()
        return (self.unfinished, at, self.task_id)

    def encode(self) -> str:
        at = None if self.at is None else self.at.isoformat()
        raw = json.dumps([int(self.unfinished), at, self.task_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        """The position a cursor names; ``ValueError`` for one no backend gave."""
        if not isinstance(cursor, str):
            raise TypeError(f"cursor must be a str, got {type(cursor).__name__}")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            unfinished, at, task_id = json.loads(raw)
            when = None if at is None else _aware(datetime.fromisoformat(at), "cursor")
            if unfinished not in (0, 1) or not isinstance(task_id, str) or not task_id:
                raise ValueError(cursor)
            return cls(bool(unfinished), when, task_id)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ValueError(
                f"cursor {cursor[:80]!r} is not one a listing returned "
                "(pass the 'cursor' of the previous page as it is)"
            ) from None


@dataclass(frozen=True)
class Filters:
    """What listing and counting share: ``name`` (the task name, stored with
    ``result_extended=True`` only), ``id_prefix``, and the window ``since <= date_done <
    until`` of finished results; unfinished ones have no ``date_done`` and pass when
    ``until`` is ``None`` (a window that reaches now includes what runs now)."""

    name: str | None = None
    id_prefix: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for what in ("name", "id_prefix"):
            value = getattr(self, what)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{what} must be a non-empty str, got {value!r}")
        object.__setattr__(self, "since", _aware(self.since, "since"))
        object.__setattr__(self, "until", _aware(self.until, "until"))
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(
                f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})"
            )

    def matches(self, meta: TaskMeta) -> bool:
        """Whether ``meta`` passes these filters."""
        if self.name is not None and meta.name != self.name:
            return False
        if self.id_prefix is not None and not meta.task_id.startswith(self.id_prefix):
            return False
        if meta.status not in READY_STATES or meta.date_done is None:
            return self.until is None
        if self.since is not None and meta.date_done < self.since:
            return False
        return self.until is None or meta.date_done < self.until


@dataclass(frozen=True)
class ListQuery(Filters):
    """What to list: the :class:`Filters`, and

    - ``states``: only these states (``{"FAILURE"}``, custom states too);
    - ``limit``: results per page (1 to 1,000);
    - ``cursor``: the ``cursor`` of the previous page, to get the next one
      (``after`` is its decoded :class:`Position`).
    """

    states: frozenset[str] | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    after: Position | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.states is not None:
            if isinstance(self.states, str) or not isinstance(self.states, Collection):
                raise TypeError(f"states must be a collection of str, got {self.states!r}")
            bad = [s for s in self.states if not isinstance(s, str) or not s]
            if bad or not self.states:
                raise ValueError(
                    f"states must be non-empty str, got {sorted(map(repr, self.states))}"
                )
            object.__setattr__(self, "states", frozenset(self.states))
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            raise TypeError(f"limit must be an int, got {self.limit!r}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be from 1 to {MAX_LIMIT}, got {self.limit}")
        if self.cursor is not None:
            object.__setattr__(self, "after", Position.decode(self.cursor))

    def matches(self, meta: TaskMeta) -> bool:
        """Whether ``meta`` passes every filter but the cursor."""
        if self.states is not None and meta.status not in self.states:
            return False
        return super().matches(meta)


@dataclass(frozen=True)
class ResultPage:
    """One page of a listing: ``items`` in listing order, and the ``cursor`` of the
    next page (``None`` when this is the last)."""

    items: list[TaskMeta]
    cursor: str | None


@dataclass(frozen=True)
class CountQuery(Filters):
    """Counts by state of the results that pass the :class:`Filters`, in ``buckets``
    equal slices of the window (both ends needed for more than one). Unfinished
    results count in the last slice of a window without ``until``, as listing shows
    them."""

    buckets: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.buckets, bool) or not isinstance(self.buckets, int):
            raise TypeError(f"buckets must be an int, got {self.buckets!r}")
        if not 1 <= self.buckets <= MAX_BUCKETS:
            raise ValueError(f"buckets must be from 1 to {MAX_BUCKETS}, got {self.buckets}")
        if self.buckets > 1 and (self.since is None or self.until is None):
            raise ValueError("counting in buckets needs both since and until")

    @property
    def step(self) -> timedelta | None:
        """The width of one bucket (``None`` for one bucket)."""
        if self.buckets == 1 or self.since is None or self.until is None:
            return None
        return (self.until - self.since) / self.buckets

    def bucket(self, meta: TaskMeta) -> int | None:
        """The bucket ``meta`` counts in, or ``None`` when it does not pass the filters."""
        if not self.matches(meta):
            return None
        step = self.step
        if step is None:
            return 0
        if meta.date_done is None or meta.status not in READY_STATES:
            return self.buckets - 1
        assert self.since is not None
        return min(int((meta.date_done - self.since) / step), self.buckets - 1)


Counts = Mapping[str, list[int]]


def page_of(metas: Iterable[TaskMeta], query: ListQuery) -> ResultPage:
    """The page ``query`` asks for, out of every stored meta (any order).

    Keeps the ``limit + 1`` first in the order only (a heap), not every meta read.
    """
    after = None if query.after is None else query.after.key()

    def candidates() -> Iterator[tuple[tuple[bool, float, str], TaskMeta]]:
        for meta in metas:
            if query.matches(meta):
                key = Position.of(meta).key()
                if after is None or key < after:
                    yield key, meta

    # Keys are unique (the task id is their last part): the metas are never compared.
    chosen = heapq.nlargest(query.limit + 1, candidates(), key=lambda pair: pair[0])
    page = [meta for _, meta in chosen[: query.limit]]
    more = len(chosen) > query.limit
    return ResultPage(page, Position.of(page[-1]).encode() if more else None)


def count_of(metas: Iterable[TaskMeta], query: CountQuery) -> dict[str, list[int]]:
    """The counts ``query`` asks for, out of every stored meta."""
    counts: dict[str, list[int]] = {}
    for meta in metas:
        index = query.bucket(meta)
        if index is not None:
            counts.setdefault(meta.status, [0] * query.buckets)[index] += 1
    return counts


def check_counts(counts: Any, query: CountQuery, plugin: str) -> dict[str, list[int]]:
    """A plugin's answer to ``count_results``, checked: a wrong shape is the plugin's bug."""
    if not isinstance(counts, Mapping) or not all(
        isinstance(state, str)
        and isinstance(row, list)
        and len(row) == query.buckets
        and all(isinstance(n, int) and n >= 0 for n in row)
        for state, row in counts.items()
    ):
        raise TypeError(
            f"plugin {plugin}: count_results must return {{state: [count per bucket]}} "
            f"with {query.buckets} counts per state, got {counts!r:.200}"
        )
    return {state: list(row) for state, row in counts.items() if any(row)}
