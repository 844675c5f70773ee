"""Listing (capability ``listing``): pages and counts as indexed SQL on Celery's table.

The order is the core's (``resultstore.listing.Position``): unfinished results first,
then ``date_done``, then task id, all descending. No column says "unfinished", and
no index of (status, ...) hands out several states in ``date_done`` order, so a page
is a UNION ALL of branches, each one range of the index (status, date_done, task_id)
(see _schema) read in its order from the cursor on and cut at the page's limit; the
union is sorted by (segment, date_done, task_id) and cut again. A page reads at most
(branches x limit) index entries and rows, whatever the table holds; no OFFSET.

- Finished results: one branch per ready state (SUCCESS, FAILURE, REVOKED, or those
  of the filter), ``date_done`` within the window.
- Unfinished ones: a branch per unfinished state of the filter, read in order too;
  without a filter the states are not known ahead (custom ones), so a branch per
  range of the index around the ready states, whose rows the server sorts.
  Unfinished results are few (running now; ``cleanup()`` removes old ones).
- Rows without ``date_done`` (neither Celery nor resultstore writes one, but the
  column is nullable): one branch, by the date index Celery creates (IS NULL).

In SQL, ``date_done`` of an unfinished row holds the time of its last store (the meta
leaves it out): it is the ``at`` of the row's :class:`Position`, so a cursor taken
among unfinished results resumes exactly there.

Counts are in _counts, the hooks in _listing_hooks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from resultstore import READY_STATES
from resultstore.listing import ListQuery, Position

from ._fast import FastStatement
from ._rows import naive_utc, read_columns, unpack
from ._schema import Tables, task_id_order

READY = sorted(READY_STATES)
DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb")  # the bucket arithmetic is per engine

# The segments of the listing order, as the page query sorts them: Position's
# (unfinished, at is None) in order.
UNFINISHED, UNFINISHED_UNDATED, FINISHED, FINISHED_UNDATED = range(4)

# Compiled statements kept per backend: one per combination of filters (a few dozen).
CACHE = 256


def segment(position: Position) -> int:
    return (UNFINISHED if position.unfinished else FINISHED) + (position.at is None)


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``, in code point
    order (None: there is none). ``task_id >= prefix AND task_id < end`` is a range of
    the index where ``LIKE 'prefix%'`` would need ``%`` and ``_`` escaped, and is no
    range on PostgreSQL under a language collation."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if 0xD800 <= last <= 0xDFFF:  # surrogates are no characters of a stored id
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


@dataclass(frozen=True)
class FilterShape:
    """Which filters a query sets: statements are compiled once per combination."""

    name: bool
    prefix: bool
    prefix_end: bool
    since: bool
    until: bool


@dataclass(frozen=True)
class _PageShape(FilterShape):
    states: tuple[str, ...] | None
    after: int | None  # the cursor's segment


def filter_params(query: Any) -> tuple[dict[str, Any], dict[str, bool]]:
    params: dict[str, Any] = {}
    end = None
    if query.name is not None:
        params["name"] = query.name
    if query.id_prefix is not None:
        params["lo"] = query.id_prefix
        end = prefix_end(query.id_prefix)
        if end is not None:
            params["hi"] = end
    if query.since is not None:
        params["since"] = naive_utc(query.since)
    if query.until is not None:
        params["until"] = naive_utc(query.until)
    shape = {
        "name": query.name is not None,
        "prefix": query.id_prefix is not None,
        "prefix_end": end is not None,
        "since": query.since is not None,
        "until": query.until is not None,
    }
    return params, shape


class PageStatements:
    """One backend's page statements, compiled for its dialect once per shape (and what
    the count statements share with them, see _counts)."""

    def __init__(self, tables: Tables, dialect: sa.Dialect) -> None:
        self.dialect = dialect
        self.task = task = tables.task
        self.postgresql = dialect.name == "postgresql"
        self.mysql = dialect.name in ("mysql", "mariadb")
        self.task_id = task_id_order(task, dialect.name)
        self.columns = read_columns(task, dialect.name)
        if self.mysql:  # the packed read has no columns of its own to sort the union by
            self.columns += [task.c.date_done, task.c.task_id]
        self.unpack = _unpack_keeping_segment if self.mysql else None
        self.ready = task.c.status.in_(READY)
        self.limit = sa.bindparam("limit", type_=sa.Integer, required=False)
        self._pages: dict[_PageShape, FastStatement | None] = {}

    # --- pages ---------------------------------------------------------------------------

    def page(self, query: ListQuery) -> tuple[FastStatement | None, dict[str, Any]]:
        """The statement of ``query``'s page and its parameters (None: nothing can match)."""
        params, filters = filter_params(query)
        after = query.after
        params["limit"] = query.limit + 1  # one more tells whether a next page exists
        if after is not None:
            params["at"] = None if after.at is None else naive_utc(after.at)
            params["id"] = after.task_id
        states = None if query.states is None else tuple(sorted(query.states))
        shape = _PageShape(
            **filters, states=states, after=None if after is None else segment(after)
        )
        if shape not in self._pages:
            if len(self._pages) >= CACHE:
                self._pages.clear()
            select = self._page(shape)
            self._pages[shape] = (
                None if select is None else FastStatement(self.dialect, select, self.unpack)
            )
        return self._pages[shape], params

    def _page(self, shape: _PageShape) -> Any:
        c = self.task.c
        common = self._filters(shape)
        after, states = shape.after, shape.states
        branches = []
        if not shape.until and (after is None or after <= UNFINISHED):
            here = after == UNFINISHED
            if states is None:
                # A branch per range: as one OR with a name filter, SQLite read the
                # whole table (19 ms of 100,000 rows; 2.6 ms by the four ranges).
                dated = [*self._dated(here, sort=True), *common]
                for unfinished in self._unfinished():
                    branches.append(self._branch(UNFINISHED, [unfinished, *dated], sort=True))
            for state in [s for s in states or () if s not in READY_STATES]:
                where = [c.status == state, *self._dated(here), *common]
                branches.append(self._branch(UNFINISHED, where))
        if after is None or after <= FINISHED:
            dated = [*self._dated(after == FINISHED), *self._window(shape), *common]
            for state in [s for s in READY if states is None or s in states]:
                branches.append(self._branch(FINISHED, [c.status == state, *dated]))
        if not shape.until:
            branches.append(self._undated(shape, common))
        if not branches:
            return None
        page = sa.union_all(*(sa.select(b.subquery(f"b{i}")) for i, b in enumerate(branches)))
        rows = page.subquery("page")
        task_id = rows.c.task_id.collate("C") if self.postgresql else rows.c.task_id
        return (
            sa.select(*rows.c)
            .order_by(rows.c.seg, rows.c.date_done.desc(), task_id.desc())
            .limit(self.limit)
        )

    def _branch(self, seg: int, where: list[Any], sort: bool = False) -> Any:
        """One state's (or the unfinished states') dated rows in order, from the cursor on.

        ``sort``: order by expressions no index matches, so that the planner reads the
        rows the status ranges find and sorts them. Ordered by the columns, PostgreSQL
        and SQLite walked the date index from the newest row, testing each one's
        status: a scan of the whole table when no result, or only old ones, are
        unfinished (a worker that died leaves its STARTED rows behind).
        """
        done, task_id = self._sort_keys(sort)
        literal = sa.literal_column(str(seg), sa.Integer)
        return self._rows(literal, where, [done.desc(), task_id.desc()])

    def _sort_keys(self, sort: bool = False) -> tuple[Any, Any]:
        done, task_id = self.task.c.date_done, self.task_id
        if not sort:
            return done, task_id
        # COALESCE(x, x) is x, in an expression that no index is on.
        return sa.func.coalesce(done, done), sa.func.coalesce(task_id, task_id)

    def _undated(self, shape: _PageShape, common: list[Any]) -> Any:
        """Rows without date_done, unfinished then finished ones, each by task id."""
        c = self.task.c
        seg = sa.case((self.ready, FINISHED_UNDATED), else_=UNFINISHED_UNDATED)
        where = [c.date_done.is_(None), *common]
        if shape.states is not None:
            where.append(c.status.in_(shape.states))
        below = self.task_id < sa.bindparam("id", type_=sa.String, required=False)
        if shape.after == UNFINISHED_UNDATED:
            where.append(sa.or_(self.ready, below))
        elif shape.after == FINISHED:
            where.append(self.ready)
        elif shape.after == FINISHED_UNDATED:
            where += [self.ready, below]
        return self._rows(seg, where, [seg, self.task_id.desc()])

    def _rows(self, seg: Any, where: list[Any], order: list[Any]) -> Any:
        """The first ``limit`` rows of one branch, in ``order``, with their segment.

        On MySQL/MariaDB in two steps: the ids, by a read of the index alone, then the
        rows by primary key. Asked for the rows at once, MariaDB read the index from
        the newest entry of the state and filtered up to the cursor (its ORDER BY ...
        LIMIT shortcut prefers that "ref" access to the range that starts at the
        cursor, unless the index covers the query): a page as deep as its cursor.
        """
        task = self.task
        if not self.mysql:
            return (
                sa.select(*self.columns, seg.label("seg"))
                .where(*where)
                .order_by(*order)
                .limit(self.limit)
            )
        keys = (
            sa.select(task.c.id, seg.label("seg"))
            .where(*where)
            .order_by(*order)
            .limit(self.limit)
            .subquery()
        )
        return sa.select(*self.columns, keys.c.seg).select_from(
            keys.join(task, task.c.id == keys.c.id)
        )

    def _dated(self, here: bool, sort: bool = False) -> list[Any]:
        """Rows with a date_done; ``here``: strictly after the cursor, which is in this
        segment, (date_done, task_id) < (at, id). ``sort``: on the unindexed keys too
        (see _branch): SQLite took a range of date_done for the way to the rows."""
        done, task_id = self._sort_keys(sort)
        where = [done.is_not(None)]
        if not here:
            return where
        at = sa.bindparam("at", type_=self.task.c.date_done.type, required=False)
        after = sa.bindparam("id", type_=sa.String, required=False)
        if self.postgresql:  # a row comparison is one range of the index there
            return [*where, sa.tuple_(done, task_id) < sa.tuple_(at, after)]
        # Elsewhere the expanded form, with ``date_done <= at`` as the range the
        # index scan starts from (the OR alone is no range to MariaDB's optimizer).
        return [*where, done <= at, sa.or_(done < at, task_id < after)]

    # --- what pages and counts share ----------------------------------------------------

    def _filters(self, shape: FilterShape) -> list[Any]:
        c = self.task.c
        where = []
        if shape.name:
            where.append(c.name == sa.bindparam("name", type_=sa.String, required=False))
        if shape.prefix:
            where.append(self.task_id >= sa.bindparam("lo", type_=sa.String, required=False))
        if shape.prefix_end:
            where.append(self.task_id < sa.bindparam("hi", type_=sa.String, required=False))
        return where

    def _window(self, shape: FilterShape) -> list[Any]:
        done, kind = self.task.c.date_done, self.task.c.date_done.type
        where = []
        if shape.since:
            where.append(done >= sa.bindparam("since", type_=kind, required=False))
        if shape.until:
            where.append(done < sa.bindparam("until", type_=kind, required=False))
        return where

    def _unfinished(self) -> list[Any]:
        """``status NOT IN (ready states)`` as the ranges of the index around them: a NOT
        IN is no range to PostgreSQL's and SQLite's planners (they read every row). The
        three ready states sort alike in any collation (upper-case ASCII)."""
        status = self.task.c.status
        ranges = [status < READY[0]]
        between = itertools.pairwise(READY)
        ranges += [sa.and_(status > low, status < high) for low, high in between]
        ranges.append(status > READY[-1])
        return ranges


def _unpack_keeping_segment(row: dict[str, Any]) -> dict[str, Any]:
    found = unpack(row)
    found["seg"] = row["seg"]
    return found
