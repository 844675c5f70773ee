"""The hooks of capability ``listing`` (statements in _listing and _counts), and the
warning for a table without the listing index."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from datetime import timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from resultstore import Codec, DecodeError, hookimpl
from resultstore.listing import CountQuery, ListQuery, Position, ResultPage

from ._counts import ListingStatements
from ._listing import FINISHED
from ._rows import meta_of
from ._schema import Tables


class ListingIndexWarning(UserWarning):
    """The task table lacks the listing index (created before it existed): listing
    works, but sorts; the warning gives the CREATE INDEX to run."""


def has_listing_index(engine: Engine, tables: Tables) -> bool:
    """Whether the task table has an index that leads with (status, date_done)."""
    task = tables.task
    indexes = sa.inspect(engine).get_indexes(task.name, schema=task.schema)
    return any(
        index["name"] == tables.listing.name
        or list(index.get("column_names") or [])[:2] == ["status", "date_done"]
        for index in indexes
    )


class ListingHooks:
    """Mixed into DatabaseBackend, whose ``_run`` runs a statement on the fast path."""

    codec: Codec
    tables: Tables
    where: str
    listing: ListingStatements | None
    _run: Callable[..., Any]
    _retried: Callable[..., Any]
    _index_checked = False

    @property
    def engine(self) -> Engine:  # DatabaseBackend's
        raise NotImplementedError

    @hookimpl
    def list_results(self, query: ListQuery) -> ResultPage:
        assert self.listing is not None  # declared with capability "listing" only
        self._check_index()
        statement, params = self.listing.page(query)
        if statement is None:
            return ResultPage([], None)

        def read(db: Any) -> list[dict[str, Any]]:
            return db.all(statement, params)  # type: ignore[no-any-return]

        rows = self._run("listing results", read, True)
        page, more = rows[: query.limit], len(rows) > query.limit
        items = []
        for row in page:
            try:
                items.append(meta_of(self.codec, row))
            except DecodeError:
                # As the key-value plugins do: one record this client cannot decode
                # must not hide the others (a get of its id raises the error).
                continue
        if not more:
            return ResultPage(items, None)
        last = page[-1]
        at = last["date_done"]
        position = Position(
            last["seg"] < FINISHED,
            None if at is None else at.replace(tzinfo=timezone.utc),
            last["task_id"],
        )
        return ResultPage(items, position.encode())

    @hookimpl
    def count_results(self, query: CountQuery) -> Mapping[str, list[int]]:
        assert self.listing is not None
        self._check_index()
        statement, params = self.listing.counts(query)

        def read(db: Any) -> list[dict[str, Any]]:
            return db.all(statement, params)  # type: ignore[no-any-return]

        counts: dict[str, list[int]] = {}
        for row in self._run("counting results", read, True):
            # A date at the very end of the window may fall one bucket past the last:
            # the step is rounded to the microsecond, as CountQuery.bucket clamps it.
            bucket = min(int(row["bucket"]), query.buckets - 1)
            counts.setdefault(row["status"], [0] * query.buckets)[bucket] += int(row["n"])
        return counts

    def _check_index(self) -> None:
        """Once per backend: warn when the table lacks the listing index."""
        if self._index_checked:
            return
        self._index_checked = True
        found = self._retried(
            "reading the indexes", lambda: has_listing_index(self.engine, self.tables)
        )
        if found:
            return
        create = sa.schema.CreateIndex(self.tables.listing).compile(dialect=self.engine.dialect)
        warnings.warn(
            ListingIndexWarning(
                f"the table {self.tables.task.fullname} on {self.where} has no listing index "
                "(it was created before resultstore-db had one): listing and counting work, "
                f"but read and sort more rows than they need; create it with:\n{create};"
            ),
            stacklevel=4,
        )
