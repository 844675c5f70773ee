"""PyMySQL connections that never wait on the server longer than the call may block.

PyMySQL sets its socket's timeout to ``_read_timeout`` / ``_write_timeout``
before it reads or writes a packet (when the value changed), and connects with
``connect_timeout`` for the TCP connect alone: the handshake that follows is
read with the read timeout, so a server that accepts and never answers held a
connect for as long as that (unbounded by default). Here those attributes are
computed at each use: :func:`resultstore.time_left` of the plugin's bound, and
while connecting, what is left of the connect's own budget for every packet of
the handshake. A read that runs out raises PyMySQL's ``OperationalError`` 2013
(lost connection), a disconnect to SQLAlchemy and a transient error to the
retry policy; PyMySQL has closed the socket by then.
"""

from __future__ import annotations

import time
from typing import Any

import pymysql  # type: ignore[import-untyped]

from resultstore import time_left

CR_SERVER_LOST = 2013


class _TimeLeft:
    """A timeout attribute of PyMySQL's that is what the connection has left when read;
    what PyMySQL assigns to it (the driver's own arguments) is dropped."""

    def __get__(self, conn: BoundedPyMySQL, _owner: object) -> float:
        return conn.left()

    def __set__(self, conn: BoundedPyMySQL, _value: object) -> None:
        pass


class BoundedPyMySQL(pymysql.connections.Connection):  # type: ignore[misc]
    def __init__(self, *args: Any, connect_bound: float, read_bound: float, **kwargs: Any):
        self._connect_bound = connect_bound
        self._read_bound = read_bound
        self._connecting_until: float | None = None
        super().__init__(*args, **kwargs)

    def left(self) -> float:
        if self._connecting_until is not None:
            return max(self._connecting_until - time.monotonic(), 0.001)
        left = time_left(self._read_bound)
        assert left is not None
        return left

    # PyMySQL assigns these in __init__ and reads them before every packet.
    _read_timeout = _write_timeout = connect_timeout = _TimeLeft()

    def connect(self, sock: Any = None) -> None:
        bound = time_left(self._connect_bound)
        assert bound is not None
        self._connecting_until = time.monotonic() + bound
        try:
            super().connect(sock)
        except pymysql.err.OperationalError as exc:
            if time.monotonic() < self._connecting_until:
                raise  # refused, or the server's own error
            raise pymysql.err.OperationalError(
                CR_SERVER_LOST, f"the server did not answer within {bound:.2f} s while connecting"
            ) from exc
        finally:
            self._connecting_until = None
