"""The conformance tests of capability ``listing``: pages, filters, counts, and paging
through many results while stores go on.

Mixed into :class:`BackendTests`. Every test lists under an id prefix of its own, so
that results other tests stored in the same store never show.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from .. import FAILURE, STARTED, SUCCESS, Backend, Capability, ResultPage, TaskInfo, TaskMeta
from ..listing import ListQuery, Position, page_of
from ._plumbing import Plumbing

# Results stored after each page of the paging test, while the next one is read.
LATE_PER_PAGE = 10


def _prefix() -> str:
    return f"listing-{uuid.uuid4().hex[:12]}-"


def _pages(backend: Backend, limit: int, **filters: object) -> Iterator[ResultPage]:
    page = backend.list_results(limit=limit, **filters)  # type: ignore[arg-type]
    yield page
    while page.cursor is not None:
        page = backend.list_results(limit=limit, cursor=page.cursor, **filters)  # type: ignore[arg-type]
        yield page


def _ids(backend: Backend, limit: int, **filters: object) -> list[str]:
    return [meta.task_id for page in _pages(backend, limit, **filters) for meta in page.items]


def _after(moment: datetime) -> datetime:
    """Now, once the wall clock has moved past ``moment`` (dates are kept to the µs)."""
    while (now := datetime.now(timezone.utc)) <= moment:
        pass
    return now


class ListingTests(Plumbing):
    """Capability ``listing``."""

    # Results the paging test lists while stores go on (the figure).
    listing_results = 10_000

    def seed_results(self, backend: Backend, metas: Sequence[TaskMeta]) -> None:
        """Store ``metas`` for the paging test; override with a bulk load where one
        store per result would take minutes (each engine's own tests still prove the
        stores). The default stores them from 8 threads."""
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda m: backend.store_result(m.task_id, m.result, m.status), metas))

    def test_listing_pages_in_order(self, backend: Backend, other: Backend) -> None:
        self.require(backend, Capability.LISTING)
        prefix = _prefix()
        done = [f"{prefix}done-{i:02}" for i in range(12)]
        for i, task_id in enumerate(done):
            backend.mark_as_done(task_id, {"i": i})
        backend.mark_as_failure(f"{prefix}failed", ValueError("no <b>"))
        backend.mark_as_started(f"{prefix}running")
        stored = other.get_many([*done, f"{prefix}failed", f"{prefix}running"])
        expected = page_of(stored.values(), ListQuery(limit=1000)).items
        assert [m.task_id for m in expected][:2] == [f"{prefix}running", f"{prefix}failed"]
        assert [m.task_id for m in expected][2:] == done[::-1]
        for limit in (1, 5, 14, 1000):
            pages = list(_pages(other, limit, id_prefix=prefix))
            assert [m for page in pages for m in page.items] == expected
            assert [len(page.items) for page in pages[:-1]] == [limit] * (len(pages) - 1)
            assert pages[-1].cursor is None
        first = other.list_results(limit=14, id_prefix=prefix)
        assert first.items[1].result == stored[f"{prefix}failed"].result
        assert first.items[2].result == {"i": 11}
        assert first.cursor is None

    def test_listing_filters(self, backend: Backend) -> None:
        self.require(backend, Capability.LISTING)
        prefix = _prefix()
        with self.make_backend(extended=True) as extended:
            extended.mark_as_done(f"{prefix}a1", 1, request=TaskInfo(name="tasks.add"))
            extended.mark_as_failure(
                f"{prefix}a2", KeyError("k"), request=TaskInfo(name="tasks.add")
            )
            extended.mark_as_done(f"{prefix}m1", 2, request=TaskInfo(name="tasks.mul"))
            mid = _after(extended.get_task_meta(f"{prefix}m1").date_done)  # type: ignore[arg-type]
            extended.store_result(f"{prefix}b1", {"current": 1, "total": 4}, "PROGRESS")
            extended.mark_as_done(f"{prefix}b2", 3)
            extended.mark_as_started(f"{prefix}b3")
            end = _after(extended.get_task_meta(f"{prefix}b2").date_done)  # type: ignore[arg-type]

            def ids(**filters: object) -> list[str]:
                found = _ids(extended, 2, id_prefix=prefix, **filters)
                return [task_id.removeprefix(prefix) for task_id in found]

            assert ids() == ["b3", "b1", "b2", "m1", "a2", "a1"]
            assert ids(states={FAILURE}) == ["a2"]
            assert ids(states="SUCCESS") == ["b2", "m1", "a1"]
            assert ids(states={STARTED, "PROGRESS"}) == ["b3", "b1"]
            assert ids(name="tasks.add") == ["a2", "a1"]
            assert ids(name="tasks.add", states={SUCCESS}) == ["a1"]
            assert ids(until=mid) == ["m1", "a2", "a1"]
            # A window that reaches now lists what still runs; one that ends before does not.
            assert ids(since=mid) == ["b3", "b1", "b2"]
            assert ids(since=mid, until=end) == ["b2"]
            assert _ids(extended, 5, id_prefix=f"{prefix}b") == [
                f"{prefix}b3",
                f"{prefix}b1",
                f"{prefix}b2",
            ]
            assert ids(name="tasks.none") == []
            missing = extended.list_results(id_prefix=f"{prefix}zz")
            assert (missing.items, missing.cursor) == ([], None)

    def test_listing_counts_by_state(self, backend: Backend) -> None:
        self.require(backend, Capability.LISTING)
        prefix = _prefix()
        with self.make_backend(extended=True) as extended:
            start = datetime.now(timezone.utc)
            for i in range(3):
                extended.mark_as_done(f"{prefix}ok-{i}", i, request=TaskInfo(name="t.a"))
            extended.mark_as_failure(f"{prefix}bad", ValueError("x"), request=TaskInfo(name="t.b"))
            mid = _after(extended.get_task_meta(f"{prefix}bad").date_done)  # type: ignore[arg-type]
            extended.mark_as_done(f"{prefix}late", 9)
            extended.mark_as_started(f"{prefix}run")
            end = _after(extended.get_task_meta(f"{prefix}late").date_done)  # type: ignore[arg-type]
            assert extended.count_results(id_prefix=prefix) == {
                SUCCESS: [4],
                FAILURE: [1],
                STARTED: [1],
            }
            assert extended.count_results(id_prefix=prefix, name="t.a") == {SUCCESS: [3]}
            assert extended.count_results(id_prefix=prefix, since=mid) == {
                SUCCESS: [1],
                STARTED: [1],
            }
            assert extended.count_results(id_prefix=prefix, since=start, until=end) == {
                SUCCESS: [4],
                FAILURE: [1],
            }
            # Two equal slices that meet at mid: the first batch in one, the late one in
            # the other (the unfinished one is left out: the window ends).
            half = max(mid - start, end - mid) + timedelta(milliseconds=1)
            halves = extended.count_results(
                id_prefix=prefix, since=mid - half, until=mid + half, buckets=2
            )
            assert halves == {SUCCESS: [3, 1], FAILURE: [1, 0]}
            quarters = extended.count_results(
                id_prefix=prefix, since=start - timedelta(seconds=1), until=mid, buckets=4
            )
            assert [sum(quarters[SUCCESS]), sum(quarters[FAILURE])] == [3, 1]
            assert [len(quarters[SUCCESS]), len(quarters[FAILURE])] == [4, 4]
            assert extended.count_results(id_prefix=f"{prefix}none") == {}

    def test_paging_misses_and_repeats_nothing_while_stores_go_on(self, backend: Backend) -> None:
        self.require(backend, Capability.LISTING)
        prefix = _prefix()
        seeded = [
            TaskMeta(f"{prefix}{i:05}", status=FAILURE if i % 10 == 0 else SUCCESS, result=i)
            for i in range(self.listing_results)
        ]
        self.seed_results(backend, seeded)
        # After each page the writer stores a batch while the next page is read: stores
        # go on throughout, bounded in number (a free-running writer would starve the
        # reader of the GIL and grow every page's work).
        pages_read: queue.Queue[bool] = queue.Queue()
        late: list[str] = []

        def go_on() -> None:
            with self.make_backend() as writer:
                while pages_read.get():
                    for _ in range(LATE_PER_PAGE):
                        late.append(f"{prefix}late-{len(late):05}")
                        if len(late) % 2:
                            writer.mark_as_done(late[-1], -1)
                        else:
                            writer.mark_as_started(late[-1])

        thread = threading.Thread(target=go_on)
        thread.start()
        seen: list[str] = []
        pages = 0
        try:
            for page in _pages(backend, 500, id_prefix=prefix, states={SUCCESS, FAILURE}):
                seen.extend(meta.task_id for meta in page.items)
                pages += 1
                pages_read.put(True)
        finally:
            pages_read.put(False)
            thread.join()
        expected = {m.task_id for m in seeded}
        # Late results stored before a page was read may be on it (they sort first);
        # every seeded result must be listed exactly once, in the listing order.
        assert len(seen) == len(set(seen)), "a result was listed twice"
        assert expected - set(seen) == set(), "results were missed"
        assert set(seen) - expected <= set(late)
        positions = [Position.of(m).key() for m in backend.get_many(seen).values()]
        assert positions == sorted(positions, reverse=True)
        failures = _ids(backend, 1000, id_prefix=prefix, states={FAILURE})
        assert sorted(failures) == sorted(t for t in expected if int(t[-5:]) % 10 == 0)
        assert backend.count_results(id_prefix=prefix)[FAILURE] == [len(failures)]
        assert pages >= len(expected) // 500
        assert len(late) == LATE_PER_PAGE * pages

    def test_listing_refuses_bad_arguments(self, backend: Backend) -> None:
        self.require(backend, Capability.LISTING)
        with pytest.raises(ValueError, match=r"^limit must be from 1 to 1000, got 0$"):
            backend.list_results(limit=0)
        with pytest.raises(ValueError, match=r"^cursor 'nope' is not one a listing returned"):
            backend.list_results(cursor="nope")
        with pytest.raises(ValueError, match=r"^since must be timezone-aware"):
            backend.list_results(since=datetime(2026, 1, 1))
        with pytest.raises(ValueError, match=r"^counting in buckets needs both since and until$"):
            backend.count_results(buckets=3)
