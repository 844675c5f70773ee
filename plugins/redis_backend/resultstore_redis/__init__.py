"""Redis for resultstore: ``redis://``, ``rediss://``, ``unix://``, ``redis+socket://``,
``sentinel://`` and ``redis+cluster://``.

Celery's wire format (keys ``celery-task-meta-<id>``, the pub/sub channel named
after the key, the same JSON bytes), one round trip per store (a Lua script
that checks the ready state, writes with its TTL and publishes), one MGET per
join wake-up, and one subscriber connection per backend and process. Listing by
a bounded SCAN, or from an index the store script keeps (``redis_list_index``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis

from resultstore import (
    BackendConfig,
    BackendUnavailable,
    Capability,
    KeyValueStore,
    OnChange,
    PerLoop,
    TaskMeta,
    hookimpl,
)
from resultstore.listing import CountQuery, ListQuery, ResultPage

from . import _errors, _options
from ._async import ASYNC_CONNECTIONS, AsyncRedis, close_async
from ._channel import RedisChannel
from ._errors import REDIS_ERRORS
from ._index import ListingIndex
from ._index_scripts import FORGET_INDEXED, INDEX, STORE_INDEXED
from ._scan import Scanner
from ._scripts import INCR, SCRIPT_DECODERS, STORE

__all__ = ["RedisBackend"]

T = TypeVar("T")


class RedisBackend(KeyValueStore):
    capabilities = frozenset(
        {
            Capability.TTL,
            Capability.PUSH,
            Capability.GET_MANY,
            Capability.GROUPS,
            Capability.REVOKE,
            Capability.ASYNC,
            Capability.COUNTER,
            Capability.LISTING,
        }
    )
    # Celery's redis_* settings and ours: the core refuses any other option.
    option_names = _options.OPTION_NAMES

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.settings = _options.parse(config.url, config.options)
        self.keyprefix = self.settings.keyprefix
        self.retry = self.settings.retry
        self.where = config.url.masked
        if self.settings.kind == "cluster" and self.codec.serializer not in SCRIPT_DECODERS:
            raise ValueError(
                f"{config.url.masked!r}: on Redis Cluster the result_serializer must be one of "
                f"{list(SCRIPT_DECODERS)} (the ready-state check runs in a server-side script)"
            )
        if self.settings.kind == "cluster":
            # redis-py 8.1's asyncio cluster client broke under concurrent first use
            # (a connection's writer was None mid-handshake and other calls hung);
            # on Cluster the core runs the sync hooks in a worker thread instead.
            self.capabilities = type(self).capabilities - {Capability.ASYNC}
        self._pid = os.getpid()
        self.client = _options.make_client(self.settings)
        self._incr_script = self.client.register_script(INCR)
        self._scanner = Scanner(
            self.client,
            self._call,
            cluster=self.settings.kind == "cluster",
            limit=self.settings.list_scan_limit,
            where=self.where,
        )
        self._index: ListingIndex | None = None
        if self.settings.list_index:
            self._index = ListingIndex(
                self.client, self._call, self.keyprefix, self.task_key(""), self.decode_meta
            )
            self._forget_script: Any = self.client.register_script(FORGET_INDEXED)
        self._store_script = self.client.register_script(self._store_lua)
        self._async = PerLoop(self._open_async, close_async)
        self._channels: list[RedisChannel] = []

    def _open_async(self) -> AsyncRedis:
        client = _options.make_client(self.settings, _options.ASYNCIO)
        limit = min(
            self.settings.connection.get("max_connections") or ASYNC_CONNECTIONS, ASYNC_CONNECTIONS
        )
        forget = client.register_script(FORGET_INDEXED) if self._index else None
        store = client.register_script(self._store_lua)
        return AsyncRedis(client, store, forget, asyncio.Semaphore(limit))

    @property
    def _store_lua(self) -> str:
        return STORE if self._index is None else STORE_INDEXED

    async def _acall(self, what: str, command: Callable[[AsyncRedis], Awaitable[T]]) -> T:
        """``command`` on this loop's client, within a connection slot, errors made clear.

        redis-py can lose a cancellation that lands inside a command (the command
        returns as if none came, and a cancelled wait would then wait on): the
        command runs in a task of its own and only the caller is cancelled.
        """
        redis_ = await self._async.get()

        async def call() -> T:
            async with redis_.slots:
                began = time.monotonic()
                try:
                    return await self.retry.arun(
                        lambda: command(redis_),
                        transient=self._transient,
                        what=what,
                        where=self.where,
                        describe=_errors.describe,
                    )
                except BackendUnavailable:
                    raise  # the policy's own word (it is an OSError too)
                except REDIS_ERRORS as exc:
                    raise _errors.refused(what, self.where, exc, time.monotonic() - began) from exc

        task = asyncio.ensure_future(call())
        redis_.running.add(task)
        task.add_done_callback(redis_.finished)
        return await asyncio.shield(task)

    # --- every command: retried by the core's policy, errors made clear -----------------

    def _call(
        self, what: str, fn: Callable[[], T], transient: Callable[[Exception], bool] | None = None
    ) -> T:
        """``fn()`` under the retry policy (its count, backoff and time cap); an error
        it does not retry is a BackendUnavailable that says why (see _errors)."""
        began = time.monotonic()
        try:
            return self.retry.run(
                fn,
                transient=transient or self._transient,
                what=what,
                where=self.where,
                describe=_errors.describe,
            )
        except BackendUnavailable:
            raise  # the policy's own word (it is an OSError too)
        except REDIS_ERRORS as exc:
            raise _errors.refused(what, self.where, exc, time.monotonic() - began) from exc

    def _transient(self, exc: Exception) -> bool:
        return _errors.transient(exc, self.settings.retry_on_timeout)

    # --- key-value primitives -------------------------------------------------------------

    def kv_get(self, key: str) -> bytes | None:
        value: bytes | None = self._call(f"GET {key}", lambda: self.client.get(key))
        return value

    def kv_mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return list(self._call(f"MGET of {len(keys)} keys", lambda: self._mget(self.client, keys)))

    def _mget(self, client: Any, keys: Sequence[str]) -> Any:
        """MGET on either client (a cluster's keys live on several nodes)."""
        if self.settings.kind == "cluster":
            return client.mget_nonatomic(keys)
        return client.mget(keys)

    def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._call(f"SET {key}", lambda: self.client.set(key, value, px=_milliseconds(ttl)))

    def kv_delete(self, key: str) -> bool:
        return bool(self._call(f"DEL {key}", lambda: self.client.delete(key)))

    def kv_scan(self, prefix: str) -> list[str]:
        return self._scanner.keys(prefix)

    # --- capability listing: by SCAN (KeyValueStore's hooks over kv_scan), or the index ---

    @hookimpl
    def list_results(self, query: ListQuery) -> ResultPage:
        if self._index is None:
            return super().list_results(query)
        return self._index.page(query)

    @hookimpl
    def count_results(self, query: CountQuery) -> Mapping[str, list[int]]:
        if self._index is None:
            return super().count_results(query)
        return self._index.counts(query)

    # --- hooks with a native path -------------------------------------------------------------

    @hookimpl
    def store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        key = self.task_key(meta.task_id)
        # Encoded once: a retry after a lost reply sends the very bytes the server may
        # hold already, and the script (or the WATCH path) takes them for our own write.
        data = self.encode_meta(meta)
        if self.codec.serializer in SCRIPT_DECODERS:
            args = self._script_args(meta, data, ttl, overwrite)
            return bool(
                self._call(f"storing {key}", lambda: self._store_script(keys=[key], args=args))
            )
        return bool(
            self._call(
                f"storing {key}",
                lambda: self._store_watched(key, meta, data, ttl, overwrite),
            )
        )

    def _script_args(
        self, meta: TaskMeta, data: bytes, ttl: float | None, overwrite: bool
    ) -> list[Any]:
        args = [
            data,
            _milliseconds(ttl) or 0,
            int(overwrite),
            self.codec.serializer,
            int(self._too_big_to_publish(data)),
        ]
        return args if self._index is None else args + self._index.args(meta)

    def _too_big_to_publish(self, data: bytes) -> bool:
        limit = self.settings.publish_max_bytes
        return limit is not None and len(data) > limit

    def _notification(self, data: bytes) -> bytes:
        """What is published for a stored meta: the meta itself, or, above
        redis_publish_max_bytes, an empty message (the subscriber reads the key)."""
        return b"" if self._too_big_to_publish(data) else data

    def _store_watched(
        self, key: str, meta: TaskMeta, data: bytes, ttl: float | None, overwrite: bool
    ) -> bool:
        """Serializers the script cannot read (pickle, yaml): an optimistic transaction."""
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = pipe.get(key)
                    if current == data:
                        pipe.unwatch()
                        return True  # our own write, whose reply was lost and retried
                    if not overwrite and self._is_ready(meta.task_id, current):
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.set(key, data, px=_milliseconds(ttl))
                    pipe.publish(key, self._notification(data))
                    if self._index is not None:
                        # In the same MULTI: one atomic step. EVAL, not EVALSHA: a
                        # NOSCRIPT inside EXEC would fail the index after the SET ran.
                        pipe.eval(INDEX, 0, _milliseconds(ttl) or 0, *self._index.args(meta))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    @hookimpl
    def forget(self, task_id: str) -> bool:
        if self._index is not None:
            keys, args = self._forget_args(task_id)
            deleted = self._call(
                f"DEL {keys[0]}", lambda: self._forget_script(keys=keys, args=args)
            )
            return bool(deleted)
        deleted, _ = self._call(
            f"DEL {self.task_key(task_id)}",
            lambda: self._forget_pipeline(self.client, task_id).execute(),
        )
        return bool(deleted)

    def _forget_args(self, task_id: str) -> tuple[list[str], list[str]]:
        """The forget script's keys and arguments: the key, the revoked key, the entry."""
        assert self._index is not None
        keys = [self.task_key(task_id), self.revoked_key(task_id)]
        return keys, [task_id, self._index.prefix]

    # --- counters (capability counter) ----------------------------------------------------

    @hookimpl
    def incr(self, name: str, amount: int, ttl: float | None) -> int:
        """INCRBY and the TTL in one script. Retried only when the command cannot have
        reached the server: a lost reply retried would count twice."""
        key = self.counter_key(name)
        args = [amount, _milliseconds(ttl) or 0]
        value = self._call(
            f"INCRBY {key}",
            lambda: self._incr_script(keys=[key], args=args),
            transient=_errors.before_sending,
        )
        return int(value)

    @hookimpl
    def forget_counter(self, name: str) -> bool:
        key = self.counter_key(name)
        return bool(self._call(f"DEL {key}", lambda: self.client.delete(key)))

    def _forget_pipeline(self, client: Any, task_id: str) -> Any:
        """Both keys of a task in one round trip (forget frees everything tied to the id)."""
        pipe = client.pipeline(transaction=False)
        pipe.delete(self.task_key(task_id))
        pipe.delete(self.revoked_key(task_id))
        return pipe

    # --- the asyncio twins (redis.asyncio, one client per event loop) -------------------

    @hookimpl
    async def async_store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        if self.codec.serializer not in SCRIPT_DECODERS:
            # The script cannot read pickle or yaml: the WATCH transaction of the
            # blocking path, in a worker thread.
            return await asyncio.to_thread(self.store_result, meta, ttl, overwrite)
        key = self.task_key(meta.task_id)
        args = self._script_args(meta, self.encode_meta(meta), ttl, overwrite)
        written = await self._acall(
            f"storing {key}", lambda redis_: redis_.store_script(keys=[key], args=args)
        )
        return bool(written)

    @hookimpl
    async def async_get(self, task_id: str) -> TaskMeta | None:
        key = self.task_key(task_id)
        data = await self._acall(f"GET {key}", lambda redis_: redis_.client.get(key))
        return None if data is None else self.decode_meta(task_id, data)

    @hookimpl
    async def async_get_many(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        keys = [self.task_key(t) for t in task_ids]
        values = await self._acall(
            f"MGET of {len(keys)} keys", lambda redis_: self._mget(redis_.client, keys)
        )
        return self.decode_many(task_ids, values)

    @hookimpl
    async def async_forget(self, task_id: str) -> bool:
        if self._index is not None:
            keys, args = self._forget_args(task_id)
            deleted = await self._acall(
                f"DEL {keys[0]}", lambda redis_: redis_.forget_script(keys=keys, args=args)
            )
            return bool(deleted)
        deleted, _ = await self._acall(
            f"DEL {self.task_key(task_id)}",
            lambda redis_: self._forget_pipeline(redis_.client, task_id).execute(),
        )
        return bool(deleted)

    @hookimpl
    def notify(self, on_change: OnChange) -> RedisChannel:
        channel = RedisChannel(
            connect=self._subscriber_connection,
            task_key=self.task_key,
            decode=self.decode_meta,
            on_change=on_change,
            health_check_interval=self.settings.health_check_interval,
            name=f"resultstore-redis-listener {self.config.url.masked}",
        )
        self._channels.append(channel)
        return channel

    def _subscriber_connection(self) -> Any:
        """A connection outside the pool, with the pool's settings (found anew on reconnect)."""
        if self.settings.kind == "cluster":
            pool = self.client.get_random_node().redis_connection.connection_pool
        else:
            pool = self.client.connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        conn.follows_deadline = False  # see _bounded: several threads use it at once
        return conn

    @hookimpl
    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self._async.close()
        if os.getpid() == self._pid:
            self.client.close()
            if self.settings.kind == "sentinel":
                # The master client does not own its connections to the sentinels
                # (redis-py leaves them to the Sentinel): without this every closed
                # Backend kept one sentinel connection open.
                for sentinel in self.client.connection_pool.sentinel_manager.sentinels:
                    sentinel.close()

    def subscribed_ids(self) -> frozenset[str]:
        """Ids this backend's channel is subscribed to (for tests and diagnostics)."""
        return frozenset().union(*(c.subscribed_ids() for c in self._channels))


def _milliseconds(ttl: float | None) -> int | None:
    return None if ttl is None else max(1, int(ttl * 1000))
