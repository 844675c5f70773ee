"""Listing by ``SCAN`` (the default): every task key under a prefix, within a bound.

Celery's keys carry the date a result was done inside their value only, so a listing
by ``SCAN`` reads every task key (``KeyValueStore.stored_metas``) and sorts them in the
client. It costs nothing on the store path, and a listing costs the whole database:
``SCAN`` walks every key of it whatever the ``MATCH`` pattern, and every task key it
finds is read and decoded. ``redis_list_scan_limit`` bounds that walk: a database with
more keys is refused with an error that names the option and the index mode, before any
key is read, rather than tying up a client (and its server round trips) for minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from resultstore import UnsupportedOperation

T = TypeVar("T")

# Keys one SCAN call walks: large enough that 100,000 keys take 100 round trips, small
# enough that each call holds the server for well under a millisecond.
SCAN_COUNT = 1000
# What a listing may walk by default. At the figures of bench/README.md ("Listing on
# Redis") a listing of 100,000 results by SCAN takes a few seconds of the client and
# about 100 SCAN and 200 MGET round trips; ten times that would be tens of seconds
# and a gigabyte of decoded metas, which is what the index mode is for.
DEFAULT_SCAN_LIMIT = 100_000
# Redis's glob syntax (stringmatchlen): these match something other than themselves.
_GLOB = frozenset("*?[]\\")


def listing_options(options: Mapping[str, Any]) -> tuple[bool, int]:
    """``redis_list_index`` and ``redis_list_scan_limit``, checked."""
    index = options.get("redis_list_index", False)
    if not isinstance(index, bool):
        raise TypeError(f"redis_list_index must be True or False, got {index!r}")
    limit = options.get("redis_list_scan_limit", DEFAULT_SCAN_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise TypeError(f"redis_list_scan_limit must be an int >= 1, got {limit!r}")
    return index, limit


def glob_escape(text: str) -> str:
    """``text`` as a Redis ``MATCH`` pattern that matches exactly itself."""
    return "".join("\\" + c if c in _GLOB else c for c in text)


Call = Callable[[str, Callable[[], Any]], Any]


class Scanner:
    """The task keys under a prefix, by ``SCAN MATCH <prefix>*``, each call under the
    plugin's retry policy and bounded connections (``call``)."""

    def __init__(self, client: Any, call: Call, *, cluster: bool, limit: int, where: str):
        self.client = client
        self.call = call
        self.cluster = cluster
        self.limit = limit
        self.where = where

    def keys(self, prefix: str) -> list[str]:
        self.check_bound()
        pattern = glob_escape(prefix) + "*"
        what = f"SCAN MATCH {pattern}"
        if self.cluster:
            # Every primary's keyspace, node after node (redis-py keeps a cursor per node);
            # retried whole: a cursor of a node that failed over means nothing to another.
            raw = self.call(
                what, lambda: list(self.client.scan_iter(match=pattern, count=SCAN_COUNT))
            )
            return _unique(raw)
        found: list[bytes] = []
        cursor = 0
        while True:
            # A SCAN cursor is the server's position, not a session: a call retried after
            # a lost connection goes on from the same cursor.
            scan = partial(self.client.scan, cursor, match=pattern, count=SCAN_COUNT)
            cursor, batch = self.call(what, scan)
            found.extend(batch)
            if cursor == 0:
                return _unique(found)

    def check_bound(self) -> None:
        """Refuse a database larger than the bound (its DBSIZE is what SCAN walks)."""
        if self.cluster:
            raw = self.call(
                "DBSIZE", lambda: self.client.dbsize(target_nodes=self.client.PRIMARIES)
            )
            size = sum(raw.values()) if isinstance(raw, dict) else int(raw)
        else:
            size = int(self.call("DBSIZE", self.client.dbsize))
        if size > self.limit:
            raise UnsupportedOperation(
                f"listing on {self.where} by SCAN would walk {size:,} keys, more than "
                f"redis_list_scan_limit ({self.limit:,}); raise that option, or set "
                "redis_list_index=True to list from an index that every store keeps"
            )


def _unique(raw: list[bytes]) -> list[str]:
    # SCAN may return a key twice (the table grew or shrank between calls). A key that
    # is not UTF-8 is not one this plugin wrote (its ids are str): left out.
    keys: dict[str, None] = {}
    for key in raw:
        try:
            keys[key.decode()] = None
        except UnicodeDecodeError:
            continue
    return list(keys)
