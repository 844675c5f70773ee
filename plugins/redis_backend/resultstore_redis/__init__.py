"""Redis for resultstore: ``redis://``, ``rediss://``, ``unix://``, ``redis+socket://``,
``sentinel://`` and ``redis+cluster://``.

Celery's wire format (keys ``celery-task-meta-<id>``, the pub/sub channel named
after the key, the same JSON bytes), one round trip per store (a Lua script
that checks the ready state, writes with its TTL and publishes), one MGET per
join wake-up, and one subscriber connection per backend and process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from resultstore import (
    BackendConfig,
    BackendUnavailable,
    Capability,
    KeyValueStore,
    OnChange,
    TaskMeta,
    hookimpl,
)

from . import _options
from ._channel import NETWORK_ERRORS, RedisChannel
from ._scripts import SCRIPT_DECODERS, STORE

__all__ = ["RedisBackend"]


class RedisBackend(KeyValueStore):
    capabilities = frozenset(
        {
            Capability.TTL,
            Capability.PUSH,
            Capability.GET_MANY,
            Capability.GROUPS,
            Capability.REVOKE,
        }
    )

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.settings = _options.parse(config.url, config.options)
        self.keyprefix = self.settings.keyprefix
        if self.settings.kind == "cluster" and self.codec.serializer not in SCRIPT_DECODERS:
            raise ValueError(
                f"{config.url.masked!r}: on Redis Cluster the result_serializer must be one of "
                f"{list(SCRIPT_DECODERS)} (the ready-state check runs in a server-side script)"
            )
        self._pid = os.getpid()
        self.client = _options.make_client(self.settings)
        self._store_script = self.client.register_script(STORE)
        self._channels: list[RedisChannel] = []

    # --- errors -----------------------------------------------------------------------

    @contextmanager
    def _network(self, what: str) -> Iterator[None]:
        """Retries happen inside redis-py (bounded by retry_policy); then say so clearly."""
        try:
            yield
        except NETWORK_ERRORS as exc:
            raise BackendUnavailable(
                f"{what} failed on {self.config.url.masked} after "
                f"{self.settings.retry.max_retries} retries: {type(exc).__name__}: {exc}"
            ) from exc

    # --- key-value primitives -------------------------------------------------------------

    def kv_get(self, key: str) -> bytes | None:
        with self._network(f"GET {key}"):
            value: bytes | None = self.client.get(key)
        return value

    def kv_mget(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._network(f"MGET of {len(keys)} keys"):
            if self.settings.kind == "cluster":
                return list(self.client.mget_nonatomic(keys))
            return list(self.client.mget(keys))

    def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        with self._network(f"SET {key}"):
            self.client.set(key, value, px=_milliseconds(ttl))

    def kv_delete(self, key: str) -> bool:
        with self._network(f"DEL {key}"):
            return bool(self.client.delete(key))

    # --- hooks with a native path -------------------------------------------------------------

    @hookimpl
    def store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        key = self.task_key(meta.task_id)
        data = self.encode_meta(meta)
        with self._network(f"storing {key}"):
            if self.codec.serializer in SCRIPT_DECODERS:
                args = [data, _milliseconds(ttl) or 0, int(overwrite), self.codec.serializer]
                return bool(self._store_script(keys=[key], args=args))
            return self._store_watched(key, meta.task_id, data, ttl, overwrite)

    def _store_watched(
        self, key: str, task_id: str, data: bytes, ttl: float | None, overwrite: bool
    ) -> bool:
        """Serializers the script cannot read (pickle, yaml): an optimistic transaction."""
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if not overwrite and self._is_ready(task_id, pipe.get(key)):
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.set(key, data, px=_milliseconds(ttl))
                    pipe.publish(key, data)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    @hookimpl
    def forget(self, task_id: str) -> bool:
        key = self.task_key(task_id)
        with self._network(f"DEL {key}"):
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(key)
            pipe.delete(self.revoked_key(task_id))
            deleted, _ = pipe.execute()
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
        return pool.connection_class(**pool.connection_kwargs)

    @hookimpl
    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
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
