"""Listing from an index that every store keeps (option ``redis_list_index=True``).

The index is resultstore's, beside Celery's keys (Celery never reads or writes it);
every key starts with the plugin's keyprefix, then:

- ``resultstore-list-by-state-<STATE>``: a sorted set per state of the ids in that
  state. Score: ``+inf`` for unfinished states, else ``date_done`` in seconds since the
  epoch. Redis orders equal scores by member bytes, which order UTF-8 ids as Python
  orders str, so a reverse range is exactly the listing order (unfinished first, then
  newest first, ties by id, all descending), and a cursor's position is a score and an
  id: a page is a range after it, never an offset.
- ``resultstore-list-state-of``: a hash id -> state: which sorted set holds the id,
  for the next store of it to leave.
- ``resultstore-list-states``: the set of every state name indexed.
- ``resultstore-list-expiry``: a sorted set id -> when its key expires (ms, server
  clock). Keys expire by TTL; index entries do not: each store prunes a few entries
  whose key is gone, and listings and counts prune all that are due first.

A state filter picks sorted sets, a window is a score range, counts by state over a
window are ZCOUNTs. The id prefix is tested on the members before any key is read, the
task name (``result_extended``) on the metas read, in batches until the page is full.
Every listed meta is checked against its entry: one whose key is gone is dropped from
the index, one the key says is elsewhere (written by a writer without the index) is
indexed anew from what was read, and neither is listed where it is not.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any

from resultstore import READY_STATES, DecodeError, TaskMeta
from resultstore.listing import CountQuery, Filters, ListQuery, Position, ResultPage

from ._index_scripts import PRUNE, REINDEX
from ._scan import Call

# The store script knows these three too (its ready-state guard).
READY = frozenset(READY_STATES)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Entries read per round trip when a page does not fill from its first batch (filters
# the index cannot serve, entries found stale), and per round of counting by walking.
MAX_BATCH = 1000
# Due expiries pruned per script call before a listing (each call bounded; a backlog
# left by a long time without stores takes several).
PRUNE_BATCH = 1000
PRUNE_ROUNDS = 100

Key = tuple[float, str]  # (score, id): larger sorts first, as Position.key()


def score_of(meta: TaskMeta) -> float:
    """The listing score of a meta: ``Position.key()``'s date part, ``+inf`` unfinished."""
    if meta.status not in READY:
        return math.inf
    done = meta.date_done
    if done is None:  # a ready record from elsewhere without a date: sorts last
        return -math.inf
    if done.tzinfo is None:  # naive is UTC, as the core reads it back (parse_date)
        done = done.replace(tzinfo=timezone.utc)
    return (done - _EPOCH).total_seconds()


def score_arg(score: float) -> str:
    """A score as Redis reads it back exactly (repr is the shortest exact form)."""
    if math.isinf(score):
        return "+inf" if score > 0 else "-inf"
    return repr(score)


def _date_score(when: datetime) -> float:
    return (when - _EPOCH).total_seconds()


@dataclass(frozen=True)
class Entry:
    score: float
    task_id: str
    state: str

    @property
    def key(self) -> Key:
        return (self.score, self.task_id)


class ListingIndex:
    """Reads the index (the store scripts write it)."""

    def __init__(
        self,
        client: Any,
        call: Call,
        keyprefix: str,
        task_prefix: str,
        decode: Callable[[str, bytes], TaskMeta],
    ) -> None:
        self.client = client
        self.call = call
        self.prefix = f"{keyprefix}resultstore-list-"
        self.task_prefix = task_prefix
        self.decode = decode
        self._prune = client.register_script(PRUNE)
        self._reindex = client.register_script(REINDEX)

    def state_key(self, state: str) -> str:
        return f"{self.prefix}by-state-{state}"

    def args(self, meta: TaskMeta) -> list[str]:
        """The index arguments of the store scripts: id, state, score, ix, tk."""
        return [
            meta.task_id,
            meta.status,
            score_arg(score_of(meta)),
            self.prefix,
            self.task_prefix,
        ]

    # --- listing ----------------------------------------------------------------------

    def page(self, query: ListQuery) -> ResultPage:
        states = self._states(query.states)
        want = query.limit + 1  # one more than the page says whether another follows
        found: list[TaskMeta] = []
        after = _start(query.after)
        batch = want
        while len(found) < want:
            entries, more = self._next(states, query, after, min(batch, MAX_BATCH))
            found.extend(self._read(entries, query, want - len(found)))
            if not more:
                break
            after = entries[-1].key
            batch *= 4
        items = found[: query.limit]
        cursor = Position.of(items[-1]).encode() if len(found) > query.limit else None
        return ResultPage(items, cursor)

    def _read(self, entries: Sequence[Entry], query: ListQuery, room: int) -> list[TaskMeta]:
        """The metas of ``entries`` that pass ``query``, in order, ``room`` at most."""
        if query.id_prefix is not None:
            entries = [e for e in entries if e.task_id.startswith(query.id_prefix)]
        if not entries:
            return []
        values = self._mget(entries)
        metas: list[TaskMeta] = []
        gone: list[str] = []
        moved: list[tuple[Entry, bytes, TaskMeta]] = []
        for entry, data in zip(entries, values, strict=True):
            if data is None:
                gone.append(entry.task_id)
                continue
            try:
                meta = self.decode(entry.task_id, data)
            except DecodeError:
                continue  # as by SCAN: one bad record must not hide the others
            if meta.status != entry.state or score_of(meta) != entry.score:
                moved.append((entry, data, meta))
                continue
            if query.matches(meta):
                metas.append(meta)
                if len(metas) == room:
                    break
        self._mend(gone, moved)
        return metas

    def _mget(self, entries: Sequence[Entry]) -> list[bytes | None]:
        keys = [self.task_prefix + e.task_id for e in entries]
        return list(self.call(f"MGET of {len(keys)} keys", lambda: self.client.mget(keys)))

    def _mend(self, gone: list[str], moved: list[tuple[Entry, bytes, TaskMeta]]) -> None:
        """Drop the entries of keys that are gone; index anew the keys found elsewhere.
        Both scripts check the key again first: a store since the read wins."""
        if gone:
            self.call(
                "pruning the listing index",
                lambda: self._prune(args=[self.prefix, self.task_prefix, 0, *gone]),
            )
        for _, data, meta in moved:
            args = [
                self.prefix,
                self.task_prefix,
                meta.task_id,
                hashlib.sha1(data).hexdigest(),
                meta.status,
                score_arg(score_of(meta)),
            ]
            self.call(f"indexing {meta.task_id!r} anew", partial(self._reindex, args=args))

    def _states(self, wanted: Collection[str] | None) -> list[str]:
        """The states to read, once the entries of expired keys are pruned (each call
        bounded; counts must not count results that expired)."""

        def first_round() -> Any:
            pipe = self.client.pipeline(transaction=False)
            self._prune(args=[self.prefix, self.task_prefix, PRUNE_BATCH], client=pipe)
            pipe.smembers(f"{self.prefix}states")
            return pipe.execute()

        (looked, removed), known = self.call("pruning the listing index", first_round)
        rounds = 1
        while looked == PRUNE_BATCH and removed and rounds < PRUNE_ROUNDS:
            looked, removed = self.call(
                "pruning the listing index",
                lambda: self._prune(args=[self.prefix, self.task_prefix, PRUNE_BATCH]),
            )
            rounds += 1
        if wanted is not None:
            return sorted(wanted)
        return sorted(state.decode() for state in known)

    def _next(
        self, states: Sequence[str], window: Filters, after: Key | None, batch: int
    ) -> tuple[list[Entry], bool]:
        """The next ``batch`` entries after ``after`` in listing order, of the sorted
        sets of ``states``, within the window; and whether more may follow."""
        plans = [
            (state, _reads(self.state_key(state), state, window, after, batch)) for state in states
        ]
        plans = [(state, reads) for state, reads in plans if reads]
        if not plans:
            return [], False

        def run() -> Any:
            pipe = self.client.pipeline(transaction=False)
            for _, reads in plans:
                for read in reads:
                    read.queue(pipe)
            return pipe.execute()

        replies = iter(self.call("reading the listing index", run))
        entries: list[Entry] = []
        full = False
        for state, reads in plans:
            mine = [entry for read in reads for entry in read.entries(next(replies), state, after)]
            full = full or len(mine) >= batch
            entries += mine[:batch]
        entries.sort(key=lambda e: e.key, reverse=True)
        # Each set gave its first `batch` after the cursor: the first `batch` of them
        # all are the next ones overall; the rest is read again from the next cursor.
        return (entries[:batch], True) if full else (entries, False)

    # --- counting ---------------------------------------------------------------------

    def counts(self, query: CountQuery) -> dict[str, list[int]]:
        states = self._states(None)
        if query.name is None and query.id_prefix is None:
            return self._zcounts(states, query)
        counts: dict[str, list[int]] = {}
        for state in states:
            for entries in self._walk(state, query):
                for index in self._buckets(entries, query):
                    counts.setdefault(state, [0] * query.buckets)[index] += 1
        return counts

    def _buckets(self, entries: Sequence[Entry], query: CountQuery) -> Iterator[int]:
        """The bucket of each of ``entries`` that passes ``query``: by its score when the
        id is all there is to test, else by its meta (the task name is in the value)."""
        if query.name is None:
            assert query.id_prefix is not None
            bounds = [_date_score(b) for b in _bounds(query)]
            for entry in entries:
                if entry.task_id.startswith(query.id_prefix):
                    yield _bucket(entry.score, bounds, query.buckets)
            return
        for meta in self._read(entries, _listing(query), len(entries)):
            index = query.bucket(meta)
            if index is not None:
                yield index

    def _walk(self, state: str, window: Filters) -> Iterator[list[Entry]]:
        after: Key | None = None
        while True:
            entries, more = self._next([state], window, after, MAX_BATCH)
            if entries:
                yield entries
            if not more:
                return
            after = entries[-1].key

    def _zcounts(self, states: Sequence[str], query: CountQuery) -> dict[str, list[int]]:
        """Counts by ZCOUNT: one per state and bucket, all in one round trip."""
        edges = [score_arg(_date_score(b)) for b in _bounds(query)]
        low = "-inf" if query.since is None else score_arg(_date_score(query.since))
        high = "+inf" if query.until is None else f"({score_arg(_date_score(query.until))}"
        lows = [low, *edges]
        highs = [f"({edge}" for edge in edges] + [high]

        def run() -> Any:
            pipe = self.client.pipeline(transaction=False)
            for state in states:
                key = self.state_key(state)
                if state in READY:
                    for lo, hi in zip(lows, highs, strict=True):
                        pipe.zcount(key, lo, hi)
                elif query.until is None:  # unfinished: in the last bucket of an open window
                    pipe.zcard(key)
            return pipe.execute()

        replies = iter(self.call("counting the listing index", run))
        counts: dict[str, list[int]] = {}
        for state in states:
            if state in READY:
                counts[state] = [int(next(replies)) for _ in lows]
            elif query.until is None:
                counts[state] = [0] * (query.buckets - 1) + [int(next(replies))]
        return counts


@dataclass(frozen=True)
class _Read:
    """One range read of a state's sorted set, from ``top`` down to ``low``."""

    key: str
    kind: str  # "lex": unfinished (every score +inf); "ties": at the cursor's score; "score"
    top: str
    low: str
    num: int | None = None

    def queue(self, pipe: Any) -> None:
        if self.kind == "lex":
            pipe.zrevrangebylex(self.key, self.top, self.low, start=0, num=self.num)
        elif self.kind == "ties":
            pipe.zrevrangebyscore(self.key, self.top, self.low, withscores=True)
        else:
            pipe.zrevrangebyscore(
                self.key, self.top, self.low, start=0, num=self.num, withscores=True
            )

    def entries(self, reply: Any, state: str, after: Key | None) -> list[Entry]:
        if self.kind == "lex":
            return [Entry(math.inf, member.decode(), state) for member in reply]
        found = [Entry(score, member.decode(), state) for member, score in reply]
        if self.kind == "ties":
            # Ids at the cursor's very score: those below its id follow it.
            assert after is not None
            found = [entry for entry in found if entry.task_id < after[1]]
        return found


def _reads(key: str, state: str, window: Filters, after: Key | None, batch: int) -> list[_Read]:
    """The reads of one state's next entries after ``after`` (none: nothing can follow)."""
    if state not in READY:
        # Unfinished results have no date_done: a window that ends excludes them, and
        # they all sort before any finished one.
        if window.until is not None or (after is not None and after[0] != math.inf):
            return []
        return [_Read(key, "lex", "+" if after is None else f"({after[1]}", "-", batch)]
    low = -math.inf if window.since is None else _date_score(window.since)
    high = math.inf if window.until is None else _date_score(window.until)
    reads = []
    if after is not None and after[0] != math.inf:
        at = after[0]
        if low <= at < high:
            reads.append(_Read(key, "ties", score_arg(at), score_arg(at)))
        high = min(high, at)
    top = "+inf" if high == math.inf else f"({score_arg(high)}"
    reads.append(_Read(key, "score", top, score_arg(low), batch))
    return reads


def _start(after: Position | None) -> Key | None:
    if after is None:
        return None
    if after.unfinished:
        return (math.inf, after.task_id)
    return (-math.inf if after.at is None else _date_score(after.at), after.task_id)


def _bounds(query: CountQuery) -> list[datetime]:
    """The inner edges of the buckets (none for one bucket), as CountQuery.bucket cuts."""
    step = query.step
    if step is None or query.since is None:
        return []
    return [query.since + step * i for i in range(1, query.buckets)]


def _bucket(score: float, bounds: Sequence[float], buckets: int) -> int:
    if score == math.inf:
        return buckets - 1
    return bisect_right(bounds, score)


def _listing(query: CountQuery) -> ListQuery:
    """A count's filters as a listing's, to check the metas read with."""
    return ListQuery(
        name=query.name, id_prefix=query.id_prefix, since=query.since, until=query.until
    )
