"""Small stand-ins shared by the core tests."""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import resultstore
from resultstore import Backend, KeyValueStore, hookimpl


class DictPlugin:
    """A minimal storage plugin keeping metas in a dict; it accepts every URL."""

    capabilities = frozenset({"ttl"})

    def __init__(self, config: resultstore.BackendConfig) -> None:
        self.config = config
        self.data: dict[str, resultstore.TaskMeta] = {}

    @hookimpl
    def store_result(self, meta: resultstore.TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        self.data[meta.task_id] = meta
        return True

    @hookimpl
    def get(self, task_id: str) -> resultstore.TaskMeta | None:
        return self.data.get(task_id)

    @hookimpl
    def forget(self, task_id: str) -> bool:
        return self.data.pop(task_id, None) is not None


def fail_with(exc: BaseException) -> BaseException:
    """Raise ``exc`` and return it caught, so that it carries a traceback."""
    try:
        raise exc  # RAISE-LINE
    except BaseException as caught:
        return caught


def traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


class BytesPlugin(KeyValueStore):
    """A key-value plugin over a dict of bytes, without push (the shared poller serves it);
    tests put bytes into ``data`` behind the backend's back."""

    capabilities = frozenset({"ttl", "get_many"})
    data: ClassVar[dict[str, bytes]] = {}

    def kv_get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def kv_mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.data.get(key) for key in keys]

    def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.data[key] = value

    def kv_delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None


@contextmanager
def bytes_plugin() -> Iterator[Backend]:
    """A Backend on a fresh :class:`BytesPlugin` (``bytestest://``)."""
    resultstore.register_backend("bytestest", BytesPlugin)
    BytesPlugin.data = {}
    try:
        with Backend("bytestest://") as backend:
            yield backend
    finally:
        resultstore.unregister_backend("bytestest")


def hint(backend: Backend) -> str:
    """What a timeout error adds for a backend private to one process (memory://)."""
    if not backend.process_local:
        return ""
    return (
        f"; {backend.url.masked} keeps results inside one process: "
        "a result stored by another process is never seen here"
    )
