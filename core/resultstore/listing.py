"""For plugin authors: the listing order, its cursor, and the reference implementation.

A plugin that declares capability ``listing`` answers ``list_results(query)`` and
``count_results(query)``. One that reads its records anyway returns
``page_of(records, query)`` and ``count_of(records, query)``; one with indexes (SQL)
sorts by :class:`Position` itself and encodes the cursor with ``Position.encode``.
The conformance suite holds every plugin to ``page_of``'s answers.
"""

from ._listing import (
    MAX_BUCKETS,
    MAX_LIMIT,
    CountQuery,
    Filters,
    ListQuery,
    Position,
    ResultPage,
    count_of,
    page_of,
)

__all__ = [
    "MAX_BUCKETS",
    "MAX_LIMIT",
    "CountQuery",
    "Filters",
    "ListQuery",
    "Position",
    "ResultPage",
    "count_of",
    "page_of",
]
