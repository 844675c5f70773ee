"""Listing of :class:`Backend`: page through stored results and count them by state.

What an operator asks first ("what failed in the last hour, and why?"), answered by
the store itself. Optional capability ``listing``; the order, the filters and the
cursor are defined in ``_listing``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import datetime
from typing import Any

from ._backend_plugin import PluginHost
from ._listing import DEFAULT_LIMIT, CountQuery, ListQuery, ResultPage, check_counts
from ._meta import TaskMeta
from ._plugins import Capability, plugin_name


class Listing(PluginHost):
    """Mixed into :class:`Backend`."""

    def list_results(
        self,
        *,
        states: Collection[str] | None = None,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        id_prefix: str | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> ResultPage:
        """One page of stored results, unfinished first, then newest ``date_done`` first.

        Every filter is optional: ``states`` (any of them), ``name`` (the task name,
        stored with ``result_extended=True``), ``since <= date_done < until``
        (unfinished results are listed when ``until`` is ``None``), ``id_prefix``. Pass
        the page's ``cursor`` back for the next page; it is ``None`` on the last.
        Needs capability ``listing``.

        >>> from resultstore import Backend
        >>> backend = Backend("memory://")
        >>> for task_id in ("a", "b", "c"):
        ...     _ = backend.mark_as_done(task_id, 1)
        >>> page = backend.list_results(limit=2)
        >>> len(page.items), backend.list_results(cursor=page.cursor).cursor
        (2, None)
        """
        query = ListQuery(
            states=None if states is None else frozenset(_states(states)),
            name=name,
            since=since,
            until=until,
            id_prefix=id_prefix,
            limit=limit,
            cursor=cursor,
        )
        self._require(Capability.LISTING, "list_results")
        return self._checked_page(self._hook.list_results(query=query))

    def count_results(
        self,
        *,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        id_prefix: str | None = None,
        buckets: int = 1,
    ) -> dict[str, list[int]]:
        """How many results each state has, ``{state: [count per bucket]}``.

        The filters are :meth:`list_results`'s but states; the window ``since <=
        date_done < until`` is cut into ``buckets`` equal slices (both ends needed
        then), and unfinished results count in the last slice of a window without
        ``until``. States without results are left out. Needs capability ``listing``.
        """
        query = CountQuery(
            name=name, since=since, until=until, id_prefix=id_prefix, buckets=buckets
        )
        self._require(Capability.LISTING, "count_results")
        counts = self._hook.count_results(query=query)
        return check_counts(counts, query, plugin_name(self.plugin))

    async def alist_results(self, **filters: Any) -> ResultPage:
        """:meth:`list_results` for coroutines: runs in a worker thread, never on the loop."""
        return await asyncio.to_thread(self.list_results, **filters)

    async def acount_results(self, **window: Any) -> dict[str, list[int]]:
        """:meth:`count_results` for coroutines: runs in a worker thread."""
        return await asyncio.to_thread(self.count_results, **window)

    def _checked_page(self, page: Any) -> ResultPage:
        if not isinstance(page, ResultPage) or not all(isinstance(m, TaskMeta) for m in page.items):
            raise TypeError(
                f"plugin {plugin_name(self.plugin)}: list_results must return a ResultPage "
                f"of TaskMeta, got {page!r:.200}"
            )
        return page


def _states(states: Collection[str]) -> Collection[str]:
    if isinstance(states, str):  # "FAILURE" would otherwise be seven one-letter states
        return (states,)
    return states
