"""Listing on Redis, both ways: by SCAN within its bound, and from the index the store keeps.

The conformance suite proves the contract in each mode (test_conformance); these cover
what only Redis has: glob characters in prefixes, the SCAN bound, the index's own keys
through forget, expiry, keys deleted or rewritten behind its back, and lost replies.
Results with chosen dates are stored through the plugin's hook (the Backend stamps the
time of the call), and every answer is held to the reference, ``page_of``/``count_of``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from resultstore import (
    FAILURE,
    STARTED,
    SUCCESS,
    Backend,
    TaskMeta,
    UnsupportedOperation,
)
from resultstore.listing import CountQuery, ListQuery, count_of, page_of

from ..threads import DEADLINE, Worker, wait_until
from .conftest import transport
from .proxy import DroppingProxy
from .servers import RedisServer

MODES: dict[str, dict[str, Any]] = {"scan": {}, "index": {"redis_list_index": True}}
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_backend(url: str, keyprefix: str, mode: str, **more: Any) -> Backend:
    options = {**transport(keyprefix), **MODES[mode], **more.pop("options", {})}
    return Backend(url, options=options, **more)


@pytest.fixture
def lister(redis_url: str, keyprefix: str, mode: str) -> Iterator[Backend]:
    with open_backend(redis_url, keyprefix, mode, extended=True) as backend:
        yield backend


def put(
    backend: Backend, task_id: str, state: str, at: datetime | None = None, **fields: Any
) -> None:
    """Store a meta with the date chosen here, through the plugin's own hook."""
    done = at if state in (SUCCESS, FAILURE, "REVOKED") else None
    meta = TaskMeta(task_id, status=state, result=task_id, date_done=done, **fields)
    assert backend.plugin.store_result(meta=meta, ttl=None, overwrite=True)  # type: ignore[attr-defined]


def ids(backend: Backend, limit: int = 1000, **filters: Any) -> list[str]:
    """Every id listed, page after page."""
    found: list[str] = []
    cursor = None
    for _ in range(10_000):  # a cursor that never ends fails the test, not the run
        page = backend.list_results(limit=limit, cursor=cursor, **filters)
        found += [meta.task_id for meta in page.items]
        if page.cursor is None:
            return found
        cursor = page.cursor
    pytest.fail(f"10,000 pages and still a cursor; listed so far: {found[:20]}")


def reference(backend: Backend, all_ids: list[str], **filters: Any) -> list[str]:
    metas = backend.get_many(all_ids).values()
    states = filters.pop("states", None)
    query = ListQuery(limit=1000, states=None if states is None else frozenset(states), **filters)
    return [meta.task_id for meta in page_of(metas, query).items]


def index_keys(server: redis.Redis, keyprefix: str) -> dict[str, Any]:
    """What the index holds, read raw: each state's entries, the hash, the expiries."""
    ix = f"{keyprefix}resultstore-list-"
    states = sorted(s.decode() for s in server.smembers(f"{ix}states"))
    by_state = {
        state: [
            (m.decode(), score)
            for m, score in server.zrange(f"{ix}by-state-{state}", 0, -1, withscores=True)
        ]
        for state in states
    }
    return {
        "by_state": {state: entries for state, entries in by_state.items() if entries},
        "state_of": {k.decode(): v.decode() for k, v in server.hgetall(f"{ix}state-of").items()},
        "expiring": sorted(m.decode() for m in server.zrange(f"{ix}expiry", 0, -1)),
    }


def epoch(when: datetime) -> float:
    return (when - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()


# --- both modes ---------------------------------------------------------------------------


def test_glob_characters_in_an_id_prefix_match_only_themselves(lister: Backend) -> None:
    stored = ["a*1", "a?1", "a[1]", "a[b]", "a\\1", "a]1", "ab1", "a1", "a^1", "a-1"]
    for i, task_id in enumerate(stored):
        put(lister, task_id, SUCCESS, T0 + timedelta(seconds=i))
    for prefix in ("a*", "a?", "a[", "a[1]", "a\\", "a]", "a[b", "a^", "a-", "a"):
        expected = [t for t in reversed(stored) if t.startswith(prefix)]  # newest first
        assert ids(lister, id_prefix=prefix) == expected, prefix
        assert lister.count_results(id_prefix=prefix) == {SUCCESS: [len(expected)]}, prefix


def test_glob_characters_in_the_keyprefix_match_only_themselves(
    redis_url: str, keyprefix: str, mode: str
) -> None:
    # Unescaped, "x?" would match "xy" and "x[y]" would match "xy" too.
    mine, decoy = f"{keyprefix}x?[y]*:", f"{keyprefix}xy[y]z:"
    with (
        open_backend(redis_url, mine, mode) as backend,
        open_backend(redis_url, decoy, mode) as other,
    ):
        put(backend, "t1", SUCCESS, T0)
        put(other, "t2", SUCCESS, T0)
        put(other, "t1x", SUCCESS, T0)
        assert ids(backend) == ["t1"]
        assert backend.count_results() == {SUCCESS: [1]}


def test_ties_on_date_done_page_in_descending_id_order(lister: Backend) -> None:
    tied = [f"tie-{c}" for c in "qbxadmz"]
    for task_id in tied:
        put(lister, task_id, SUCCESS, T0)
    put(lister, "tie-later", FAILURE, T0 + timedelta(microseconds=1))
    put(lister, "tie-earlier", SUCCESS, T0 - timedelta(microseconds=1))
    put(lister, "tie-run", STARTED)
    everything = [*tied, "tie-later", "tie-earlier", "tie-run"]
    expected = reference(lister, everything)
    assert expected == ["tie-run", "tie-later", *sorted(tied, reverse=True), "tie-earlier"]
    for limit in (1, 2, 3, 7, 10):
        assert ids(lister, limit=limit) == expected, limit
        assert ids(lister, limit=limit, states={SUCCESS}) == expected[2:], limit


def test_every_answer_is_the_reference_answer(lister: Backend) -> None:
    """Many states (custom ones too), names, dates and windows, against page_of/count_of."""
    states = [SUCCESS, FAILURE, STARTED, "PROGRESS", "REVOKED", SUCCESS, "RETRY"]
    everything = []
    for i in range(60):
        state = states[i % len(states)]
        task_id = f"{'ab'[i % 2]}{i:03}"
        at = T0 + timedelta(minutes=i % 17, microseconds=i % 3)
        put(lister, task_id, state, at, extended=True, name=f"t.{i % 3}")
        everything.append(task_id)
    metas = list(lister.get_many(everything).values())
    windows: list[dict[str, Any]] = [
        {},
        {"since": T0 + timedelta(minutes=5)},
        {"until": T0 + timedelta(minutes=9)},
        {"since": T0 + timedelta(minutes=3), "until": T0 + timedelta(minutes=11, microseconds=1)},
    ]
    for window in windows:
        for more in (
            {},
            {"states": {SUCCESS}},
            {"states": {FAILURE, "PROGRESS"}},
            {"name": "t.1"},
            {"id_prefix": "b"},
            {"id_prefix": "a00"},
            {"name": "t.2", "states": {SUCCESS, STARTED}},
        ):
            filters = {**window, **more}
            expected = reference(lister, everything, **filters)
            for limit in (1, 4, 50):
                assert ids(lister, limit=limit, **filters) == expected, (filters, limit)
        for more in ({}, {"name": "t.0"}, {"id_prefix": "a"}):
            buckets = [1] if "since" not in window or "until" not in window else [1, 3, 24]
            for n in buckets:
                query = CountQuery(buckets=n, **window, **more)
                expected_counts = {s: c for s, c in count_of(metas, query).items() if any(c)}
                assert lister.count_results(buckets=n, **window, **more) == expected_counts, (
                    window,
                    more,
                    n,
                )


# --- the SCAN bound -----------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own: its DBSIZE is exactly what the test stored."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def test_a_database_larger_than_the_scan_limit_is_refused_by_name(own_server: RedisServer) -> None:
    url = own_server.url
    with Backend(url, options={"redis_list_scan_limit": 4}) as backend:
        for i in range(5):
            backend.mark_as_done(f"t{i}", i)
        message = (
            f"listing on {url} by SCAN would walk 5 keys, more than redis_list_scan_limit (4); "
            "raise that option, or set redis_list_index=True to list from an index that "
            "every store keeps"
        )
        with pytest.raises(UnsupportedOperation) as listed:
            backend.list_results()
        assert str(listed.value) == message
        with pytest.raises(UnsupportedOperation) as counted:
            backend.count_results(id_prefix="t1")
        assert str(counted.value) == message
    with Backend(url, options={"redis_list_scan_limit": 5}) as backend:
        assert ids(backend, limit=2) == ["t4", "t3", "t2", "t1", "t0"]


def test_the_default_scan_limit_is_100_000(redis_url: str) -> None:
    with Backend(redis_url) as backend:
        assert backend.plugin.settings.list_scan_limit == 100_000  # type: ignore[attr-defined]


def test_the_index_is_not_bound_by_the_scan_limit(own_server: RedisServer) -> None:
    options = {"redis_list_scan_limit": 1, "redis_list_index": True}
    with Backend(own_server.url, options=options) as backend:
        for i in range(5):
            backend.mark_as_done(f"t{i}", i)
        assert ids(backend, limit=2) == ["t4", "t3", "t2", "t1", "t0"]


# --- the index ----------------------------------------------------------------------------


@pytest.fixture
def indexed(redis_url: str, keyprefix: str) -> Iterator[Backend]:
    with open_backend(redis_url, keyprefix, "index") as backend:
        yield backend


def test_the_index_layout(indexed: Backend, server: redis.Redis, keyprefix: str) -> None:
    indexed.mark_as_started("run")
    indexed.mark_as_done("ok", 1, expires=None)
    done = indexed.get_task_meta("ok").date_done
    assert done is not None
    assert index_keys(server, keyprefix) == {
        "by_state": {STARTED: [("run", math.inf)], SUCCESS: [("ok", epoch(done))]},
        "state_of": {"run": STARTED, "ok": SUCCESS},
        "expiring": ["run"],  # "ok" was stored without a TTL
    }
    indexed.mark_as_done("run", 2)
    ran = indexed.get_task_meta("run").date_done
    assert ran is not None
    assert index_keys(server, keyprefix) == {
        "by_state": {SUCCESS: [("ok", epoch(done)), ("run", epoch(ran))]},
        "state_of": {"run": SUCCESS, "ok": SUCCESS},
        "expiring": ["run"],
    }


def test_a_naive_date_done_is_indexed_as_utc(
    indexed: Backend, server: redis.Redis, keyprefix: str
) -> None:
    put(indexed, "naive", SUCCESS, T0.replace(tzinfo=None))
    assert index_keys(server, keyprefix)["by_state"] == {SUCCESS: [("naive", epoch(T0))]}
    assert ids(indexed, since=T0) == ["naive"]


def test_forgotten_and_expired_results_are_neither_listed_nor_counted(
    indexed: Backend, server: redis.Redis, keyprefix: str
) -> None:
    indexed.mark_as_done("kept", 1)
    indexed.mark_as_failure("forgotten", ValueError("x"))
    indexed.store_result("expired", None, STARTED, expires=0.001)
    assert indexed.forget("forgotten")
    # The forget took the entry with the key, in the same script.
    assert set(index_keys(server, keyprefix)["state_of"]) == {"kept", "expired"}
    wait_until(lambda: not server.exists(f"{keyprefix}celery-task-meta-expired"), "it expired")
    # Keys expire by TTL, index entries do not: the entry is there until pruned.
    assert index_keys(server, keyprefix)["by_state"][STARTED] == [("expired", math.inf)]
    assert indexed.count_results() == {SUCCESS: [1]}
    assert ids(indexed) == ["kept"]
    kept = indexed.get_task_meta("kept").date_done
    assert kept is not None
    assert index_keys(server, keyprefix) == {
        "by_state": {SUCCESS: [("kept", epoch(kept))]},
        "state_of": {"kept": SUCCESS},
        "expiring": ["kept"],
    }


def test_a_store_prunes_expired_entries_without_any_listing(
    indexed: Backend, server: redis.Redis, keyprefix: str
) -> None:
    for i in range(3):
        indexed.mark_as_done(f"short-{i}", i, expires=0.001)
    for i in range(3):
        key = f"{keyprefix}celery-task-meta-short-{i}"
        wait_until(lambda k=key: not server.exists(k), "it expired")  # type: ignore[misc]
    indexed.mark_as_started("next")
    assert index_keys(server, keyprefix) == {
        "by_state": {STARTED: [("next", math.inf)]},
        "state_of": {"next": STARTED},
        "expiring": ["next"],
    }


def test_a_key_deleted_behind_the_index_is_dropped_when_met(
    indexed: Backend, server: redis.Redis, keyprefix: str
) -> None:
    indexed.mark_as_done("a", 1)
    indexed.mark_as_done("b", 2)
    server.delete(f"{keyprefix}celery-task-meta-a")  # Celery's forget, or an operator's DEL
    # Counts read the index only: until a listing meets the entry, it counts.
    assert indexed.count_results() == {SUCCESS: [2]}
    assert ids(indexed) == ["b"]
    assert index_keys(server, keyprefix)["state_of"] == {"b": SUCCESS}
    assert indexed.count_results() == {SUCCESS: [1]}


def test_a_result_rewritten_without_the_index_is_listed_where_its_key_says(
    redis_url: str, keyprefix: str, indexed: Backend, server: redis.Redis
) -> None:
    indexed.mark_as_done("old", 0)
    indexed.mark_as_started("moved")
    with open_backend(redis_url, keyprefix, "scan") as unindexed:
        unindexed.mark_as_done("moved", 1)  # a writer without redis_list_index
    assert indexed.list_results(states={STARTED}).items == []
    assert ids(indexed) == ["moved", "old"]
    done = indexed.get_task_meta("moved").date_done
    assert done is not None
    assert ("moved", epoch(done)) in index_keys(server, keyprefix)["by_state"][SUCCESS]
    assert indexed.count_results() == {SUCCESS: [2]}


def test_async_stores_and_forgets_keep_the_index(
    indexed: Backend, server: redis.Redis, keyprefix: str
) -> None:
    async def go() -> None:
        await indexed.astore_result("a", 1, STARTED)
        await indexed.astore_result("b", 2, SUCCESS)
        await indexed.astore_result("a", 3, FAILURE)
        assert await indexed.aforget("b")

    asyncio.run(go())
    assert index_keys(server, keyprefix)["state_of"] == {"a": FAILURE}
    assert ids(indexed) == ["a"]


def test_the_watch_path_keeps_the_index(
    redis_url: str, keyprefix: str, server: redis.Redis
) -> None:
    pickled = {"serializer": "pickle", "accept_content": ["pickle"]}
    with open_backend(redis_url, keyprefix, "index", **pickled) as backend:
        backend.mark_as_started("p")
        backend.mark_as_done("p", {1, 2})
        assert backend.mark_as_started("p") is False  # the ready state is kept, and its entry
        assert index_keys(server, keyprefix)["state_of"] == {"p": SUCCESS}
        assert ids(backend) == ["p"]
        assert backend.count_results() == {SUCCESS: [1]}


# Stores whose reply is lost (tests/redis/test_lost_reply.py): the retry finds its own
# bytes stored and reports success; the index was written with them, once.
LOST = {"lua": ("json", b"EVALSHA"), "watch": ("pickle", b"EXEC")}


@pytest.mark.parametrize("path", list(LOST))
def test_a_store_whose_reply_was_lost_keeps_the_index_consistent(
    redis_url: str, keyprefix: str, server: redis.Redis, path: str
) -> None:
    serializer, marker = LOST[path]
    options = {"retry_policy": {"max_retries": 2, "interval_start": 0.01}}
    port = redis.connection.parse_url(redis_url)["port"]
    rounds = 5
    with (
        DroppingProxy(port) as proxy,
        Backend(
            proxy.url,
            serializer=serializer,
            accept_content=[serializer],
            options={**transport(keyprefix, **options), "redis_list_index": True},
        ) as backend,
    ):
        for i in range(rounds):
            backend.mark_as_started(f"lost-{i}")
            proxy.arm(marker)
            worker = Worker(lambda i=i: backend.mark_as_done(f"lost-{i}", i))  # type: ignore[misc]
            worker.start()
            assert worker.finish(DEADLINE) is True
            assert proxy.dropped.is_set(), f"round {i}: the reply was not lost"
        entries = index_keys(server, keyprefix)
        expected = sorted(
            (f"lost-{i}", epoch(backend.get_task_meta(f"lost-{i}").date_done))  # type: ignore[arg-type]
            for i in range(rounds)
        )
        assert entries["by_state"] == {SUCCESS: expected}
        assert entries["state_of"] == {f"lost-{i}": SUCCESS for i in range(rounds)}
        assert ids(backend, limit=2) == [f"lost-{i}" for i in reversed(range(rounds))]
        assert backend.count_results() == {SUCCESS: [rounds]}


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"redis_list_index": "yes"}, "redis_list_index must be True or False, got 'yes'"),
        ({"redis_list_scan_limit": 0}, "redis_list_scan_limit must be an int >= 1, got 0"),
        ({"redis_list_scan_limit": 1.5}, "redis_list_scan_limit must be an int >= 1, got 1.5"),
        ({"redis_list_scan_limit": True}, "redis_list_scan_limit must be an int >= 1, got True"),
    ],
)
def test_bad_listing_options(options: dict[str, Any], error: str) -> None:
    with pytest.raises(TypeError) as raised:
        Backend("redis://127.0.0.1:6379/0", options=options).close()
    assert str(raised.value) == error


def test_the_index_is_refused_on_cluster() -> None:
    message = (
        "'redis+cluster://127.0.0.1:7000': redis_list_index is not available on Redis "
        "Cluster (the index keys are in other hash slots than the task keys); Cluster "
        "lists by SCAN"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Backend("redis+cluster://127.0.0.1:7000", options={"redis_list_index": True}).close()
