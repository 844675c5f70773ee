"""Counts by state (capability ``listing``): the ready states' ranges of the window,
and the ranges of unfinished states when the window reaches now, each grouped by
status along the listing index (see _listing); a histogram's buckets are ranges of
their own, or computed by the server, exactly as ``CountQuery.bucket`` does."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from resultstore.listing import CountQuery

from ._fast import FastStatement
from ._listing import CACHE, FilterShape, PageStatements, filter_params
from ._rows import naive_utc
from ._schema import Tables

# Histograms up to this many buckets count one range of the index per bucket; wider
# ones compute each row's bucket (SQLite takes up to 500 SELECTs in one UNION).
RANGED_BUCKETS = 100
COMPUTED = -1
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class _CountShape(FilterShape):
    # 1, the number of buckets counted one range each, or COMPUTED (see counts())
    buckets: int


class ListingStatements(PageStatements):
    """One backend's listing statements: pages (see _listing) and counts."""

    def __init__(self, tables: Tables, dialect: sa.Dialect) -> None:
        super().__init__(tables, dialect)
        self._counts: dict[_CountShape, FastStatement] = {}

    def counts(self, query: CountQuery) -> tuple[FastStatement, dict[str, Any]]:
        """The statement of ``query``'s counts and its parameters.

        A histogram's buckets end at ``bound[i] = since + i * step`` (computed here; the
        last one ``until``), which is ``CountQuery.bucket`` in whole microseconds. On
        SQLite and MariaDB, up to RANGED_BUCKETS buckets are one range of the index each,
        ``bound[i] <= date_done < bound[i + 1]``, with no arithmetic on any row: of
        100,000 results in 24 buckets, SQLite took 62 ms computing each row's bucket and
        14 ms by ranges, MariaDB 200 and 71 ms. Wider ones compute it (see _bucket).
        PostgreSQL computes it always, by ``width_bucket`` over the bounds (a binary
        search): by ranges it read each bucket's rows from the table, in 73 ms."""
        params, filters = filter_params(query)
        step = query.step
        buckets = query.buckets
        if step is not None:
            assert query.since is not None
            since = naive_utc(query.since)
            if self.postgresql:
                buckets = COMPUTED
                params["bounds"] = [since + i * step for i in range(1, query.buckets)]
            elif buckets <= RANGED_BUCKETS:
                params.update({f"b{i}": since + i * step for i in range(1, buckets)})
                params[f"b{buckets}"] = params.pop("until")
                params["b0"] = params.pop("since")
            else:
                buckets = COMPUTED
                params["step"] = step // _MICROSECOND
                params["since_us"] = (since - _EPOCH) // _MICROSECOND
        shape = _CountShape(**filters, buckets=buckets)
        statement = self._counts.get(shape)
        if statement is None:
            if len(self._counts) >= CACHE:
                self._counts.clear()
            statement = self._counts[shape] = FastStatement(self.dialect, self._count(shape))
        return statement, params

    def _count(self, shape: _CountShape) -> Any:
        """Counts by (status, bucket) of each part; a status may come from two parts (the
        caller adds them up). Each part groups by itself: by status alone, MariaDB and
        SQLite count along the index, with no temporary table of every row."""
        c = self.task.c
        common = self._filters(shape)
        if shape.buckets > 1:
            kind = c.date_done.type
            bounds = [
                sa.bindparam(f"b{i}", type_=kind, required=False) for i in range(shape.buckets + 1)
            ]
            parts = [
                self._grouped(self.ready, c.date_done >= low, c.date_done < high, *common, bucket=i)
                for i, (low, high) in enumerate(itertools.pairwise(bounds))
            ]
        elif shape.buckets == COMPUTED:
            parts = [self._computed(self.ready, *self._window(shape), *common)]
        else:
            parts = [self._grouped(self.ready, *self._window(shape), *common)]
        if not shape.until:
            # A window that reaches now: what runs now, and finished rows without a
            # date (which a window with ``since`` left out above), count in it.
            # One part per range: grouped by status, SQLite read the whole index in
            # status order rather than the four ranges of an OR.
            parts += [self._grouped(r, *common) for r in self._unfinished()]
            if shape.since:
                parts.append(self._grouped(self.ready, c.date_done.is_(None), *common))
        return sa.union_all(*parts) if len(parts) > 1 else parts[0]

    def _grouped(self, *where: Any, bucket: int = 0) -> Any:
        status = self.task.c.status
        number = sa.literal_column(str(bucket), sa.Integer).label("bucket")
        return sa.select(status, number, sa.func.count().label("n")).where(*where).group_by(status)

    def _computed(self, *where: Any) -> Any:
        # The bucket is named in a subquery and grouped by its name: PostgreSQL takes
        # an expression with parameters in GROUP BY for another one than in SELECT.
        rows = sa.select(self.task.c.status, self._bucket().label("bucket")).where(*where)
        found = rows.subquery()
        return sa.select(found.c.status, found.c.bucket, sa.func.count().label("n")).group_by(
            found.c.status, found.c.bucket
        )

    def _bucket(self) -> Any:
        """A row's bucket, computed by the server, exactly (see counts)."""
        done = self.task.c.date_done
        if self.postgresql:
            kind = postgresql.ARRAY(done.type)
            return sa.func.width_bucket(done, sa.bindparam("bounds", type_=kind, required=False))
        # ``(date_done - since) // step`` in whole microseconds.
        step = sa.bindparam("step", type_=sa.BigInteger, required=False)
        if self.dialect.name == "sqlite":
            # DateTime is text there, "YYYY-MM-DD HH:MM:SS.ffffff" (SQLAlchemy's format,
            # and _fast's): whole seconds by strftime of the text up to the seconds (of
            # the whole text, SQLite rounds to the millisecond first: 35.9999995 -> 36),
            # microseconds from the text.
            since = sa.bindparam("since_us", type_=sa.BigInteger, required=False)
            seconds = sa.cast(sa.func.strftime("%s", sa.func.substr(done, 1, 19)), sa.BigInteger)
            micros = sa.cast(sa.func.substr(done, 21, 6), sa.BigInteger)
            return (seconds * 1_000_000 + micros - since) // step
        start = sa.bindparam("since", type_=done.type, required=False)
        return sa.func.timestampdiff(sa.literal_column("MICROSECOND"), start, done).op("DIV")(step)
