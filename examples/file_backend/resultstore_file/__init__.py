"""``file:///path/to/dir``: one file per task, an example of a third-party plugin.

It is built on :class:`resultstore.KeyValueStore`, so it implements only the
key-value primitives. Each key is a file whose first line is its expiry time
(or ``-``) and whose rest is the stored bytes. Writes go to a temporary file
and are renamed into place, so readers never see half a record; an exclusive
``flock`` on ``.lock`` makes "check the stored state, then write" atomic across
processes. There is no push: waits are polled by the core.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

from resultstore import BackendConfig, Capability, KeyValueStore, hookimpl

__all__ = ["FileBackend"]

_NO_EXPIRY = b"-"


class FileBackend(KeyValueStore):
    # counter: KeyValueStore's read-add-write under kv_lock, a lock across processes here.
    capabilities = frozenset(
        {
            Capability.TTL,
            Capability.CLEANUP,
            Capability.GROUPS,
            Capability.REVOKE,
            Capability.COUNTER,
        }
    )

    option_names: frozenset[str] = frozenset()  # hosts forward none of their settings

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        url = config.url
        if url.host or not url.path or url.path == "/":
            raise ValueError(
                f"file:// needs an absolute directory (file:///var/results), got {url.masked!r}"
            )
        if config.options:
            raise ValueError(f"file:// takes no options, got {', '.join(sorted(config.options))}")
        self.directory = Path(unquote(url.path))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.directory / ".lock"

    def _path(self, key: str) -> Path:
        return self.directory / quote(key, safe="")

    def kv_get(self, key: str) -> bytes | None:
        try:
            raw = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        expiry, _, value = raw.partition(b"\n")
        if expiry != _NO_EXPIRY and float(expiry) <= time.time():
            return None  # expired; cleanup() removes the file
        return value

    def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        expiry = _NO_EXPIRY if ttl is None else repr(time.time() + ttl).encode()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(expiry + b"\n" + value)
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def kv_delete(self, key: str) -> bool:
        path = self._path(key)
        existed = self.kv_get(key) is not None
        path.unlink(missing_ok=True)
        return existed

    @contextmanager
    def kv_lock(self, key: str) -> Iterator[None]:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @hookimpl
    def cleanup(self) -> int:
        removed = 0
        for path in self.directory.iterdir():
            if path.name.startswith("."):
                continue
            key = unquote(path.name)
            with self.kv_lock(key):  # a store in between must not be deleted
                if path.exists() and self.kv_get(key) is None:
                    path.unlink()
                    removed += 1
        return removed
