"""A plugin like many a third party writes: an asyncio-only client on a loop thread of its own.

``loopkv://host:port`` talks to a tiny line-protocol key-value server (run this
module as a script to start one). The plugin has no fork code at all: in a
forked child its loop thread is gone and its socket is the parent's, and it
still works there because the core builds the child a fresh plugin. Its ready
guard is the server's compare-and-set (``kv_replace``), so it holds across
processes without a lock.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Sequence

from resultstore import BackendConfig, KeyValueStore, hookimpl, time_left

CALL_TIMEOUT = 5.0


class LoopKV(KeyValueStore):
    capabilities = frozenset({"ttl", "get_many", "counter"})
    option_names: frozenset[str] = frozenset()

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.host, self.port = config.url.host or "127.0.0.1", config.url.port or 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock: asyncio.Lock | None = None

    def _call(self, *words: str) -> list[str]:
        line = " ".join(words)
        future = asyncio.run_coroutine_threadsafe(self._round_trip(line), self._loop)
        return future.result(time_left(CALL_TIMEOUT))

    async def _round_trip(self, line: str) -> list[str]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._streams is None:
                # A reply holds a whole multi-get: more than the default 64 KiB line.
                self._streams = await asyncio.open_connection(self.host, self.port, limit=2**26)
            reader, writer = self._streams
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await reader.readline()).decode().split()

    def kv_get(self, key: str) -> bytes | None:
        return _value(self._call("GET", key.encode().hex())[0])

    def kv_mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return [_value(v) for v in self._call("MGET", *(k.encode().hex() for k in keys))]

    def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._call("SET", key.encode().hex(), value.hex(), _ttl(ttl))

    def kv_delete(self, key: str) -> bool:
        return self._call("DEL", key.encode().hex()) == ["1"]

    def kv_replace(self, key: str, expected: bytes | None, value: bytes, ttl: float | None) -> bool:
        was = "-" if expected is None else expected.hex()
        return self._call("CAS", key.encode().hex(), was, value.hex(), _ttl(ttl)) == ["1"]

    @hookimpl
    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result(CALL_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT)
        self._loop.close()

    async def _disconnect(self) -> None:
        if self._streams is not None:
            _, writer = self._streams
            writer.close()
            await writer.wait_closed()


def _value(word: str) -> bytes | None:
    return None if word == "-" else bytes.fromhex(word)


def _ttl(ttl: float | None) -> str:
    return "-" if ttl is None else repr(ttl)


async def _serve(port: int) -> None:
    data: dict[str, tuple[str, float | None]] = {}  # key -> (hex value, expiry time)

    def current(key: str) -> str:
        value, expires_at = data.get(key, ("-", None))
        if expires_at is not None and expires_at <= time.monotonic():
            del data[key]
            return "-"
        return value

    def put(key: str, value: str, ttl: str) -> None:
        data[key] = (value, None if ttl == "-" else time.monotonic() + float(ttl))

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            command, *args = line.decode().split()
            if command == "GET":
                reply = current(args[0])
            elif command == "MGET":
                reply = " ".join(current(key) for key in args)
            elif command == "SET":
                put(*args)
                reply = "OK"
            elif command == "CAS":  # one client's command at a time: atomic here
                key, expected, new, ttl = args
                reply = "0"
                if current(key) == expected:
                    put(key, new, ttl)
                    reply = "1"
            else:  # DEL
                reply = "1" if current(args[0]) != "-" else "0"
                data.pop(args[0], None)
            writer.write(reply.encode() + b"\n")
            await writer.drain()

    server = await asyncio.start_server(client, "127.0.0.1", port, limit=2**26)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
