"""redis-py connections that never wait on the server longer than the call may block.

A server that stops answering (SIGSTOP, a hung host, a TLS client talking to a plain
port) keeps its sockets open: nothing but the client's own clock ends a read. redis-py
bounds each read by ``socket_timeout`` (Celery's default: 120 s), whatever the
caller's deadline. These subclasses read the bound from
:func:`resultstore.time_left` at each step instead: the configured timeout when the
call has no deadline, else what is left of the deadline (at least the core's short
grace). The connect and the handshake after it (TLS, AUTH, SELECT, CLIENT SETINFO)
are bounded by ``socket_connect_timeout`` the same way.

The subscriber connection is read by the listener thread while other threads send
on it: it keeps its own fixed timeouts (``follows_deadline = False``), or a sender's
deadline would shorten the listener's read.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from resultstore import time_left


class BoundedIO:
    """Mixed in before a blocking redis-py connection class (see module doc)."""

    follows_deadline = True
    _connecting = False  # from the TCP connect to the end of the handshake
    _in_socket_connect = False  # inside redis-py's _connect: the TCP connect (and TLS's)
    _sock: Any
    _socket_timeout: float | None
    _socket_connect_timeout: float | None

    # redis-py reads these when it connects, and gives the socket (and its parser) the
    # read timeout it finds; each send and read below sets the socket's timeout anew.
    @property
    def socket_timeout(self) -> float | None:
        if not self.follows_deadline:
            return self._socket_timeout
        if self._in_socket_connect:  # the TLS handshake runs under this timeout
            return time_left(self._socket_connect_timeout)
        return time_left(self._socket_timeout)

    @socket_timeout.setter
    def socket_timeout(self, value: float | None) -> None:
        self._socket_timeout = value

    @property
    def socket_connect_timeout(self) -> float | None:
        if not self.follows_deadline:
            return self._socket_connect_timeout
        return time_left(self._socket_connect_timeout)

    @socket_connect_timeout.setter
    def socket_connect_timeout(self, value: float | None) -> None:
        self._socket_connect_timeout = value

    def _connect(self) -> Any:
        self._in_socket_connect = True
        try:
            return super()._connect()  # type: ignore[misc]
        finally:
            self._in_socket_connect = False

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if self._sock is not None:  # connected: redis-py's pool asks before every command
            return
        self._connecting = True
        try:
            super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._connecting = False

    def _follow_deadline(self) -> None:
        # On every command of the hot paths: the properties above inlined. The socket
        # keeps the timeout it was last given: set it anew only when the bound changed
        # (a call with a deadline), no syscall otherwise.
        sock = self._sock
        if sock is None or not self.follows_deadline:
            return
        # The handshake (AUTH, SELECT, CLIENT SETINFO) is part of connecting.
        bound = time_left(
            self._socket_connect_timeout if self._connecting else self._socket_timeout
        )
        if sock.gettimeout() != bound:
            sock.settimeout(bound)

    # Reads need no check of their own: every read of a call follows its send, which set
    # the bound (what was left of the deadline then ends no later than the deadline).
    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sock is None:
            self.connect_check_health(check_health=False)
        self._follow_deadline()
        super().send_packed_command(command, check_health)  # type: ignore[misc]


class AsyncBoundedIO:
    """Mixed in before a ``redis.asyncio`` connection class: it reads ``socket_timeout``
    and ``socket_connect_timeout`` anew for every connect, send and read."""

    _connecting = False
    _rs_socket_timeout: float | None = None
    _rs_socket_connect_timeout: float | None = None

    @property
    def socket_timeout(self) -> float | None:
        if self._connecting:
            return time_left(self._rs_socket_connect_timeout)
        return time_left(self._rs_socket_timeout)

    @socket_timeout.setter
    def socket_timeout(self, value: float | None) -> None:
        self._rs_socket_timeout = value

    @property
    def socket_connect_timeout(self) -> float | None:
        return time_left(self._rs_socket_connect_timeout)

    @socket_connect_timeout.setter
    def socket_connect_timeout(self, value: float | None) -> None:
        self._rs_socket_connect_timeout = value

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        self._connecting = True
        try:
            await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._connecting = False


@cache
def bounded(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` with its waits bounded by the call's deadline (one class each)."""
    if issubclass(connection_class, (BoundedIO, AsyncBoundedIO)):
        return connection_class
    mixin = AsyncBoundedIO if connection_class.__module__.startswith("redis.asyncio") else BoundedIO
    return type(f"Bounded{connection_class.__name__}", (mixin, connection_class), {})
