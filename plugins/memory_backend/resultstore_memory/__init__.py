"""``memory://``: results kept in this process, the embedded default and reference plugin.

``memory://`` is the process's default store; ``memory://name`` is a separate
store called ``name``. Every Backend of the same URL in one process shares the
store, its expiry clock and its push notifications. Values are stored as the
serializer's bytes, exactly as a key-value server would keep them, so nothing
a provider mutates later can change a stored result.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime

from resultstore import (
    BackendConfig,
    Capability,
    KeyValueStore,
    OnChange,
    TaskMeta,
    hookimpl,
)

__all__ = ["MemoryBackend", "drop_store"]

Clock = Callable[[], float]


# A stored value, its expiry time, and for a task meta whether its state is ready
# (None: not known, e.g. written by kv_set): the ready-state guard reads that flag
# instead of decoding the stored meta.
_Entry = tuple[bytes, "float | None", "bool | None"]


class _Store:
    """One named store: values with their expiry time, and the open push channels."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.data: dict[str, _Entry] = {}
        # A leaf lock, never held while calling out: the hub opens channels under its
        # own lock while a storing thread holds ``lock`` and calls into the hub.
        self.channels_lock = threading.Lock()
        self.channels: set[_Channel] = set()

    def open_channels(self) -> list[_Channel]:
        with self.channels_lock:
            return list(self.channels)


# What TaskMeta.to_wire leaves out of a record: every field's default.
_ABSENT = {
    f.name: None if f.default is dataclasses.MISSING else f.default
    for f in dataclasses.fields(TaskMeta)
}

# The wire keys of a meta's own fields: any other is a host's extra field.
_WIRE_KEYS = frozenset(_ABSENT) - {"extended", "extra"}

_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


def _store(name: str) -> _Store:
    with _stores_lock:
        return _stores.setdefault(name, _Store())


def _reset_after_fork() -> None:
    """A forked child keeps a copy of the stores, with locks of its own (one held by a
    parent's thread at fork time would never be released) and none of the parent's
    channels (they served the parent's waiters)."""
    global _stores_lock
    _stores_lock = threading.Lock()
    for store in _stores.values():
        store.lock = threading.RLock()
        store.channels_lock = threading.Lock()
        store.channels = set()


os.register_at_fork(after_in_child=_reset_after_fork)


def drop_store(name: str) -> bool:
    """Forget the store ``memory://name`` and everything in it (stores live as long as
    the process otherwise). Backends still open on it keep their own reference."""
    with _stores_lock:
        return _stores.pop(name, None) is not None


class _Channel:
    """Push for one Backend: forwards changes of the ids it is subscribed to."""

    def __init__(self, store: _Store, on_change: OnChange) -> None:
        self._store = store
        self._on_change = on_change
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        with store.channels_lock:
            store.channels.add(self)

    def subscribe(self, task_ids: Collection[str]) -> None:
        with self._lock:
            self._ids.update(task_ids)

    def unsubscribe(self, task_ids: Collection[str]) -> None:
        with self._lock:
            self._ids.difference_update(task_ids)

    def subscribed(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ids)

    def dispatch(self, task_id: str) -> None:
        with self._lock:
            wanted = task_id in self._ids
        if wanted:
            # No payload: the waiter reads its own decoded copy of the stored bytes.
            self._on_change(task_id, None)

    def close(self) -> None:
        with self._store.channels_lock:
            self._store.channels.discard(self)
        with self._lock:
            self._ids.clear()


class MemoryBackend(KeyValueStore):
    """The ``memory://`` plugin. Option ``clock``: a ``time.time``-like callable (for tests)."""

    process_local = True
    option_names = frozenset({"clock"})

    capabilities = frozenset(
        {
            Capability.TTL,
            Capability.PUSH,
            Capability.GET_MANY,
            Capability.GROUPS,
            Capability.CLEANUP,
            Capability.REVOKE,
            Capability.ASYNC,
            Capability.COUNTER,
            Capability.LISTING,
        }
    )

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        url = config.url
        if (
            url.username
            or url.password
            or url.port is not None
            or url.query
            or url.path not in ("", "/")
        ):
            raise ValueError(
                f"memory:// takes only a store name (memory://NAME), got {url.masked!r}"
            )
        # The core refused any option but these (option_names).
        self.clock: Clock = config.options.get("clock", time.time)
        if not callable(self.clock):
            raise TypeError(f"memory:// option 'clock' must be callable, got {self.clock!r}")
        self.name = url.host or ""
        self._store = _store(self.name)
        self._channels: list[_Channel] = []

    def kv_get(self, key: str) -> bytes | None:
        entry = self._live(key)
        return None if entry is None else entry[0]

    def _live(self, key: str) -> _Entry | None:
        """The unexpired entry of ``key``. A dict's ``get`` is atomic: a read takes the
        lock only to delete what expired."""
        entry = self._store.data.get(key)
        if entry is None or entry[1] is None or entry[1] > self.clock():
            return entry
        with self._store.lock:
            if self._store.data.get(key) is entry:
                del self._store.data[key]
        return None

    def kv_mget(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._store.lock:
            return [self.kv_get(key) for key in keys]

    def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        expires_at = None if ttl is None else self.clock() + ttl
        with self._store.lock:
            self._store.data[key] = (value, expires_at, None)

    def kv_delete(self, key: str) -> bool:
        with self._store.lock:
            entry = self._store.data.pop(key, None)
        # An expired entry was as good as gone already.
        return entry is not None and (entry[1] is None or entry[1] > self.clock())

    def kv_lock(self, key: str) -> AbstractContextManager[object]:
        return self._store.lock

    def kv_scan(self, prefix: str) -> list[str]:
        with self._store.lock:
            return [key for key in self._store.data if key.startswith(prefix)]

    def announce(self, meta: TaskMeta, data: bytes) -> None:
        if self._store.channels:  # nothing to copy under the lock when nobody listens
            for channel in self._store.open_channels():
                channel.dispatch(meta.task_id)

    # store_result and get are KeyValueStore's, with fewer layers: the ready-state
    # guard reads the entry's flag instead of decoding the stored meta, and a get
    # takes no lock. Profiled (cProfile, 5,000 of each): the lock, clock and call
    # layers around the dict were half of a get beyond the raw dict + json.loads.

    @hookimpl
    def store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        key = self.task_key(meta.task_id)
        data = self.encode_meta(meta)
        expires_at = None if ttl is None else self.clock() + ttl
        store = self._store
        with store.lock:
            if not overwrite:
                entry = self._live(key)
                if entry is not None and (
                    entry[2] if entry[2] is not None else self._is_ready(meta.task_id, entry[0])
                ):
                    return False
            store.data[key] = (data, expires_at, meta.ready)
            self.announce(meta, data)
        return True

    @hookimpl
    def get(self, task_id: str) -> TaskMeta | None:
        entry = self._live(self.task_key(task_id))
        if entry is None:
            return None
        if entry[2] is None:  # bytes from kv_set: checked as any stored record is
            return self.decode_meta(task_id, entry[0])
        # Bytes store_result encoded from a TaskMeta, in this process: a meta by
        # construction, so TaskMeta.from_wire's checks (a third of a get) are skipped.
        # Decoded anew on every read all the same: a caller that mutates what it got
        # cannot change what is stored.
        wire = self.codec.loads(entry[0], f"stored meta of task {task_id!r}")
        if not wire.keys() <= _WIRE_KEYS:  # a host's extra fields: from_wire sorts them out
            return TaskMeta.from_wire(task_id, wire)
        fields = {**_ABSENT, **wire}
        if wire["date_done"] is not None:
            fields["date_done"] = datetime.fromisoformat(wire["date_done"])
        fields["extended"] = "name" in wire
        return TaskMeta.from_fields(fields)

    # The async twins run the sync hooks on the loop: they only touch this
    # process's memory, under a lock held for microseconds.

    @hookimpl
    async def async_store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        return self.store_result(meta, ttl, overwrite)

    @hookimpl
    async def async_get(self, task_id: str) -> TaskMeta | None:
        return self.get(task_id)

    @hookimpl
    async def async_get_many(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        return self.get_many(task_ids)

    @hookimpl
    async def async_forget(self, task_id: str) -> bool:
        return self.forget(task_id)

    @hookimpl
    def notify(self, on_change: OnChange) -> _Channel:
        channel = _Channel(self._store, on_change)
        self._channels.append(channel)
        return channel

    @hookimpl
    def cleanup(self) -> int:
        now = self.clock()
        with self._store.lock:
            expired = [
                k for k, (_, at, _) in self._store.data.items() if at is not None and at <= now
            ]
            for key in expired:
                del self._store.data[key]
        return len(expired)

    @hookimpl
    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def subscribed_ids(self) -> frozenset[str]:
        """Ids this backend's channels are subscribed to now (for leak tests)."""
        return frozenset().union(*(c.subscribed() for c in self._channels))

    def keys(self) -> list[str]:
        """Every unexpired key in the store (for tests and debugging)."""
        with self._store.lock:
            return [k for k in list(self._store.data) if self.kv_get(k) is not None]
