"""A base class that turns key-value primitives into the storage, group and revoke hooks.

A plugin over a key-value engine subclasses :class:`KeyValueStore` and
implements ``kv_get``, ``kv_set`` and ``kv_delete`` (``kv_mget``, ``kv_lock``
and ``announce`` have defaults). The ready-state guard and counters need one
atomic step across every writer: ``kv_lock`` around a read and a write, or, on
an engine with compare-and-set, ``kv_replace`` (then no lock is taken). Keys
and values are Celery's: the meta of task ``<id>`` is stored under
``celery-task-meta-<id>`` as the serializer's bytes of :meth:`TaskMeta.to_wire`,
exactly what Celery's key-value backends write.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from ._errors import DecodeError
from ._hookspecs import hookimpl
from ._listing import CountQuery, ListQuery, ResultPage, count_of, page_of
from ._meta import GroupMeta, TaskMeta
from ._plugins import BackendConfig

T = TypeVar("T")

TASK_KEYPREFIX = "celery-task-meta-"
GROUP_KEYPREFIX = "celery-taskset-meta-"
REVOKED_KEYPREFIX = "resultstore-revoked-"
COUNTER_KEYPREFIX = "resultstore-counter-"
_REVOKED = b"1"
# Shared by every instance: two Backends on one engine in one process must
# exclude each other too.
_PROCESS_LOCKS = [threading.Lock() for _ in range(64)]


def _new_locks_after_fork() -> None:
    # A lock another thread held at fork time would never be released in the child.
    _PROCESS_LOCKS[:] = [threading.Lock() for _ in _PROCESS_LOCKS]


os.register_at_fork(after_in_child=_new_locks_after_fork)


class KeyValueStore:
    """Storage hooks over ``kv_get / kv_mget / kv_set / kv_delete`` and either
    ``kv_lock`` or ``kv_replace``.

    The check of a stored ready state and the write that follows must be one atomic
    step against every other writer, in every process. Two ways:

    - ``kv_replace(key, expected, value, ttl)``, a compare-and-set: override it on an
      engine that has one (revisions in NATS or etcd, conditional writes in Consul
      or DynamoDB); stores and counters then retry it until it wins, without a lock.
    - ``kv_lock(key)`` around the read and the write. The default is a lock inside
      this process, which is enough only for an engine no other process writes to;
      an engine shared between processes must override it (a file lock, a lock the
      engine holds) or override ``store_result`` itself.

    Public helpers for subclasses: ``task_key``, ``group_key``, ``revoked_key``,
    ``counter_key``, ``encode_meta``, ``decode_meta``, ``decode_many``, and the
    ``keyprefix`` they put in front of every key. The private names of this class
    are its own: a subclass that defines one by accident is refused at definition.
    """

    keyprefix = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = [
            name
            for name in vars(KeyValueStore)
            if name.startswith("_") and not name.startswith("__") and name in vars(cls)
        ]
        if own:
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} defines {', '.join(own)}, which "
                "KeyValueStore uses itself; give yours another name"
            )

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.codec = config.codec
        self._by_replace = type(self).kv_replace is not KeyValueStore.kv_replace

    # --- primitives -----------------------------------------------------------

    def kv_get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def kv_mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.kv_get(key) for key in keys]

    def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        raise NotImplementedError

    def kv_delete(self, key: str) -> bool:
        raise NotImplementedError

    def kv_lock(self, key: str) -> AbstractContextManager[object]:
        return _PROCESS_LOCKS[zlib.crc32(key.encode()) % len(_PROCESS_LOCKS)]

    def kv_replace(self, key: str, expected: bytes | None, value: bytes, ttl: float | None) -> bool:
        """Compare-and-set: store ``value`` (with ``ttl``) only if ``key`` holds exactly
        ``expected`` now (``None``: nothing), in one atomic step of the engine; return
        whether it was stored. Override it to use it instead of ``kv_lock``."""
        raise NotImplementedError

    def kv_scan(self, prefix: str) -> Iterable[str]:
        """Capability ``listing``: every key that starts with ``prefix``, a literal string
        (in any order, each once; a key stored or deleted during the scan may be left
        out)."""
        raise NotImplementedError

    def announce(self, meta: TaskMeta, data: bytes) -> None:
        """Called after a task meta is written, with ``kv_lock`` held; push plugins publish here."""

    # --- keys and encoding -------------------------------------------------------

    def task_key(self, task_id: str) -> str:
        return f"{self.keyprefix}{TASK_KEYPREFIX}{task_id}"

    def group_key(self, group_id: str) -> str:
        return f"{self.keyprefix}{GROUP_KEYPREFIX}{group_id}"

    def revoked_key(self, task_id: str) -> str:
        return f"{self.keyprefix}{REVOKED_KEYPREFIX}{task_id}"

    def counter_key(self, name: str) -> str:
        return f"{self.keyprefix}{COUNTER_KEYPREFIX}{name}"

    def encode_meta(self, meta: TaskMeta) -> bytes:
        return self.codec.dumps(meta.to_wire(), f"result of task {meta.task_id!r}")

    def decode_meta(self, task_id: str, data: bytes) -> TaskMeta:
        return self._decode(data, f"stored meta of task {task_id!r}", task_id, TaskMeta.from_wire)

    def _decode(self, data: bytes, what: str, key: str, build: Callable[[str, Any], T]) -> T:
        """Decode stored bytes and build the record; a malformed one is a DecodeError too."""
        wire = self.codec.loads(data, what)
        try:
            return build(key, wire)
        except ValueError as exc:
            raise DecodeError(str(exc)) from None

    # --- hooks -------------------------------------------------------------------------

    @hookimpl
    def store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        key = self.task_key(meta.task_id)
        data = self.encode_meta(meta)
        if self._by_replace:
            return self._store_by_replace(key, meta, data, ttl, overwrite)
        with self.kv_lock(key):
            if not overwrite and self._is_ready(meta.task_id, self.kv_get(key)):
                return False
            self.kv_set(key, data, ttl)
            self.announce(meta, data)
        return True

    def _store_by_replace(
        self, key: str, meta: TaskMeta, data: bytes, ttl: float | None, overwrite: bool
    ) -> bool:
        while True:
            current = self.kv_get(key)
            if current == data:
                return True  # our own write, whose reply was lost and retried
            if not overwrite and self._is_ready(meta.task_id, current):
                return False
            if self.kv_replace(key, current, data, ttl):
                self.announce(meta, data)
                return True

    def _is_ready(self, task_id: str, current: bytes | None) -> bool:
        if current is None:
            return False
        try:
            return self.decode_meta(task_id, current).ready
        except DecodeError:
            return False  # unreadable bytes hold no state worth keeping

    @hookimpl
    def get(self, task_id: str) -> TaskMeta | None:
        data = self.kv_get(self.task_key(task_id))
        return None if data is None else self.decode_meta(task_id, data)

    @hookimpl
    def get_many(self, task_ids: Sequence[str]) -> Mapping[str, TaskMeta]:
        return self.decode_many(task_ids, self.kv_mget([self.task_key(t) for t in task_ids]))

    def decode_many(
        self, task_ids: Sequence[str], values: Sequence[bytes | None]
    ) -> dict[str, TaskMeta]:
        """The metas of a multi-get's values (one per id, ``None`` where missing)."""
        return {
            t: self.decode_meta(t, v)
            for t, v in zip(task_ids, values, strict=True)
            if v is not None
        }

    @hookimpl
    def forget(self, task_id: str) -> bool:
        self.kv_delete(self.revoked_key(task_id))  # forget frees everything tied to the id
        return self.kv_delete(self.task_key(task_id))

    @hookimpl
    def save_group(self, meta: GroupMeta, ttl: float | None) -> bool:
        data = self.codec.dumps(meta.to_wire(), f"group {meta.group_id!r}")
        self.kv_set(self.group_key(meta.group_id), data, ttl)
        return True

    @hookimpl
    def get_group(self, group_id: str) -> GroupMeta | None:
        data = self.kv_get(self.group_key(group_id))
        if data is None:
            return None
        return self._decode(
            data, f"stored meta of group {group_id!r}", group_id, GroupMeta.from_wire
        )

    @hookimpl
    def forget_group(self, group_id: str) -> bool:
        return self.kv_delete(self.group_key(group_id))

    @hookimpl
    def revoke(self, task_id: str, ttl: float | None) -> bool:
        self.kv_set(self.revoked_key(task_id), _REVOKED, ttl)
        return True

    @hookimpl
    def is_revoked(self, task_id: str) -> bool:
        return self.kv_get(self.revoked_key(task_id)) is not None

    @hookimpl
    def incr(self, name: str, amount: int, ttl: float | None) -> int:
        """Capability ``counter``: read, add and write under ``kv_lock`` (or by
        ``kv_replace``), so exactly as atomic as the plugin's stores (declare the
        capability only if those are)."""
        key = self.counter_key(name)
        if self._by_replace:
            while True:
                current = self.kv_get(key)
                value = (int(current) if current is not None else 0) + amount
                if self.kv_replace(key, current, str(value).encode(), ttl):
                    return value
        with self.kv_lock(key):
            current = self.kv_get(key)
            value = (int(current) if current is not None else 0) + amount
            self.kv_set(key, str(value).encode(), ttl)
        return value

    @hookimpl
    def forget_counter(self, name: str) -> bool:
        return self.kv_delete(self.counter_key(name))

    # --- capability ``listing``: every task key read, in batches of one multi-get ---

    @hookimpl
    def list_results(self, query: ListQuery) -> ResultPage:
        return page_of(self.stored_metas(query.id_prefix or ""), query)

    @hookimpl
    def count_results(self, query: CountQuery) -> Mapping[str, list[int]]:
        return count_of(self.stored_metas(query.id_prefix or ""), query)

    def stored_metas(self, id_prefix: str = "", batch: int = 500) -> Iterator[TaskMeta]:
        """Every stored task meta whose id starts with ``id_prefix``, by ``kv_scan`` and
        ``kv_mget`` (a public helper).

        A record that cannot be decoded is left out: one bad record must not hide all
        the others from an operator (a ``get`` of its id raises the DecodeError).
        """
        prefix = self.task_key("")
        keys = list(self.kv_scan(prefix + id_prefix))
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            for key, data in zip(chunk, self.kv_mget(chunk), strict=True):
                if data is None:
                    continue  # deleted or expired since the scan
                try:
                    yield self.decode_meta(key[len(prefix) :], data)
                except DecodeError:
                    continue
