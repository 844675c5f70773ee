"""The overview's chart, results over time by state, as numbers for an inline SVG.

Drawn on the server from ``Backend.count_results(..., buckets=n)``: no chart library,
no script, nothing to load; the template (``_chart.html``) turns these shapes into
``<rect>`` elements. Colours are chosen here from a fixed palette, never taken from
stored data; a custom state's name reaches the page only as escaped text.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

# The standard states in the order they stack, bottom up: the outcome first.
STACK_ORDER = ("SUCCESS", "FAILURE", "REVOKED", "RETRY", "STARTED", "RECEIVED", "PENDING")
COLOURS = {
    "SUCCESS": "#2f9e5b",
    "FAILURE": "#d64545",
    "REVOKED": "#7d8590",
    "RETRY": "#e0962d",
    "STARTED": "#3a7bd5",
    "RECEIVED": "#7fb2ee",
    "PENDING": "#b8bec7",
}
CUSTOM_COLOURS = ("#8e5bd6", "#1c9ca8", "#c2498f", "#6b8e23", "#b8860b", "#4b6cb7")

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 26


def colour(state: str) -> str:
    """A state's colour: fixed for the standard ones, stable per name for custom ones."""
    known = COLOURS.get(state)
    if known is not None:
        return known
    return CUSTOM_COLOURS[zlib.crc32(state.encode()) % len(CUSTOM_COLOURS)]


def stack_order(states: list[str]) -> list[str]:
    standard = [s for s in STACK_ORDER if s in states]
    return standard + sorted(s for s in states if s not in STACK_ORDER)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str
    since: datetime
    until: datetime


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Gridline:
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    baseline: float
    bars: list[Bar]
    ticks: list[Tick]
    grid: list[Gridline]
    legend: list[tuple[str, str, int]]  # state, colour, total
    total: int


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value``."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def _marks(top: int) -> list[int]:
    """Round values from 0 to ``top`` (a 1, 2 or 5 times a power of ten) for gridlines:
    10 -> 0, 2, ..., 10; 20 -> 0, 5, ..., 20; 5 -> 0, 1, ..., 5."""
    step = top // 4 if str(top).startswith("2") else top // 5
    step = max(step, 1)
    return list(range(0, top + 1, step))


def _tick_label(when: datetime, step: timedelta) -> str:
    if step >= timedelta(days=1):
        return when.strftime("%b %d")
    if step >= timedelta(hours=6):
        return when.strftime("%b %d %H:%M")
    return when.strftime("%H:%M")


def build(counts: Mapping[str, list[int]], since: datetime, until: datetime) -> Chart:
    """The chart of ``counts`` (``{state: [count per bucket]}``) over ``[since, until)``."""
    buckets = max((len(row) for row in counts.values()), default=1)
    states = stack_order([s for s, row in counts.items() if any(row)])
    step = (until - since) / buckets
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_h
    totals = [sum(counts[s][i] for s in states) for i in range(buckets)]
    top = _nice_ceiling(max(totals, default=0) or 1)
    slot = plot_w / buckets
    gap = 1.0 if slot > 4 else 0.0

    bars = []
    for i in range(buckets):
        start, end = since + step * i, since + step * (i + 1)
        y = float(baseline)
        for state in states:
            n = counts[state][i]
            if not n:
                continue
            height = plot_h * n / top
            y -= height
            bars.append(
                Bar(
                    x=round(LEFT + slot * i + gap / 2, 2),
                    y=round(y, 2),
                    width=round(max(slot - gap, 0.5), 2),
                    height=round(height, 2),
                    colour=colour(state),
                    title=(f"{state}: {n} ({start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC)"),
                    since=start,
                    until=end,
                )
            )

    # About six labelled ticks, on bucket edges.
    every = max(1, round(buckets / 6))
    ticks = [
        Tick(round(LEFT + slot * i, 2), _tick_label(since + step * i, step * every))
        for i in range(0, buckets, every)
    ]
    grid = [Gridline(round(baseline - plot_h * m / top, 2), str(m)) for m in _marks(top)]
    legend = [(s, colour(s), sum(counts[s])) for s in states]
    return Chart(WIDTH, HEIGHT, LEFT, baseline, bars, ticks, grid, legend, sum(totals))
