"""What a page asks the store for, read from its URL: the time window and the filters.

Everything here comes from the query string, so everything is checked: an unknown
window, a malformed date or an out-of-range limit is a :class:`BadQuery` (a 400 page
that says what was wrong), never an exception from deep inside a plugin.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from resultstore import validate_task_id

STANDARD_STATES = ("STARTED", "RECEIVED", "RETRY", "PENDING", "SUCCESS", "FAILURE", "REVOKED")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_STATES = 20


class BadQuery(ValueError):
    """A query string the dashboard cannot answer; the message says why."""


@dataclass(frozen=True)
class Window:
    """A window of time up to now, and how the overview's chart slices it."""

    key: str
    label: str
    span: timedelta
    buckets: int

    @property
    def step(self) -> timedelta:
        return self.span / self.buckets

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """``(since, until)``: the window's end rounded up to a whole bucket, so that the
        chart's bars keep their edges from one reload to the next."""
        step = self.step.total_seconds()
        end = datetime.fromtimestamp((now.timestamp() // step + 1) * step, timezone.utc)
        return end - self.span, end


WINDOWS = {
    w.key: w
    for w in (
        Window("15m", "15 minutes", timedelta(minutes=15), 15),
        Window("1h", "1 hour", timedelta(hours=1), 60),
        Window("6h", "6 hours", timedelta(hours=6), 72),
        Window("24h", "24 hours", timedelta(hours=24), 96),
        Window("7d", "7 days", timedelta(days=7), 84),
        Window("30d", "30 days", timedelta(days=30), 60),
    )
}
DEFAULT_WINDOW = "1h"


def window_of(params: QueryParams, default: str | None = DEFAULT_WINDOW) -> Window | None:
    key = params.get("window") or default
    if key is None:
        return None
    try:
        return WINDOWS[key]
    except KeyError:
        raise BadQuery(f"unknown window {key[:40]!r}; choose one of {', '.join(WINDOWS)}") from None


def _instant(params: QueryParams, name: str) -> datetime | None:
    text = params.get(name)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"{name} {text[:60]!r} is not an ISO 8601 date and time") from None
    # A bare date and time is read as UTC, the zone every stored date_done is in.
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _text(params: QueryParams, name: str) -> str | None:
    value = (params.get(name) or "").strip()
    if len(value) > 255:
        raise BadQuery(f"{name} is longer than 255 characters")
    return value or None


@dataclass(frozen=True)
class Filters:
    """The result table's filters, as the URL gave them."""

    states: tuple[str, ...] = ()
    name: str | None = None
    prefix: str | None = None
    window: Window | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None
    limit: int = DEFAULT_LIMIT
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc), compare=False)

    @classmethod
    def parse(cls, params: QueryParams) -> Filters:
        states: list[str] = []
        for raw in params.getlist("state"):
            # The "other state" box may hold several, separated by commas.
            states.extend(s.strip().upper() for s in raw.split(",") if s.strip())
        states = list(dict.fromkeys(states))
        if len(states) > MAX_STATES or any(len(s) > 64 or not s.isprintable() for s in states):
            raise BadQuery(f"choose at most {MAX_STATES} states of at most 64 characters")
        prefix = _text(params, "prefix")
        if prefix is not None:
            try:
                validate_task_id(prefix, "id prefix")
            except ValueError as exc:
                raise BadQuery(str(exc)) from None
        try:
            limit = int(params.get("limit") or DEFAULT_LIMIT)
        except ValueError:
            raise BadQuery("limit must be a whole number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadQuery(f"limit must be from 1 to {MAX_LIMIT}")
        since, until = _instant(params, "since"), _instant(params, "until")
        if since is not None and until is not None and since >= until:
            raise BadQuery("since must be before until")
        return cls(
            states=tuple(states),
            name=_text(params, "name"),
            prefix=prefix,
            window=window_of(params, default=None),
            since=since,
            until=until,
            cursor=_text(params, "cursor"),
            limit=limit,
        )

    def listing(self) -> dict[str, Any]:
        """The keyword arguments of ``Backend.list_results``."""
        since = self.since
        if since is None and self.window is not None:
            since = self.now - self.window.span
        return {
            "states": self.states or None,
            "name": self.name,
            "id_prefix": self.prefix,
            "since": since,
            "until": self.until,
            "limit": self.limit,
            "cursor": self.cursor,
        }

    def params(self, **changes: Any) -> list[tuple[str, str]]:
        """These filters as query parameters (with ``changes``), for links."""
        chosen = replace(self, **changes)
        pairs = [("state", s) for s in chosen.states]
        for key, value in (
            ("name", chosen.name),
            ("prefix", chosen.prefix),
            ("window", chosen.window.key if chosen.window else None),
            ("since", chosen.since.isoformat() if chosen.since else None),
            ("until", chosen.until.isoformat() if chosen.until else None),
            ("limit", str(chosen.limit) if chosen.limit != DEFAULT_LIMIT else None),
            ("cursor", chosen.cursor),
        ):
            if value is not None:
                pairs.append((key, value))
        return pairs

    def link(self, path: str, **changes: Any) -> str:
        query = urlencode(self.params(**changes))
        return f"{path}?{query}" if query else path

    @property
    def filtered(self) -> bool:
        return bool(self.states or self.name or self.prefix or self.window or self.since)

    @property
    def custom_states(self) -> list[str]:
        return [s for s in self.states if s not in STANDARD_STATES]
