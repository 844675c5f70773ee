"""A TCP proxy in front of a Redis server that loses a reply, or a connection mid-command.

Armed with a marker (``b"EVALSHA"``, ``b"EXEC"``, ``b"GET"``), the proxy forwards the
next command that contains it and then drops that client connection:

- ``after_reply=True``: once the server's reply has come (the server ran the command),
  the reply is thrown away instead of forwarded. A NOSCRIPT reply is forwarded and the
  trap stays armed (redis-py loads the script and sends EVALSHA again).
- ``after_reply=False``: at once, the command sent by the client and lost on the way;
  with ``refuse=True`` the proxy also stops listening, so every reconnect is refused.

``dropped`` is set when the trap has fired. Commands on a connection are one at a time
(request, then reply), so the first reply after the marked command is its reply.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass


@dataclass
class _Trap:
    marker: bytes
    after_reply: bool
    refuse: bool


class DroppingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self.dropped = threading.Event()
        self._trap: _Trap | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, marker: bytes, *, after_reply: bool = True, refuse: bool = False) -> None:
        with self._lock:
            self.dropped.clear()
            self._trap = _Trap(marker, after_reply, refuse)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, server]
            pending = threading.Event()  # the marked command went to the server
            for fn in (self._upstream, self._downstream):
                threading.Thread(
                    target=fn, args=(client, server, pending), name="proxy-pump", daemon=True
                ).start()

    def _upstream(self, client: socket.socket, server: socket.socket, pending: threading.Event):
        while data := _recv(client):
            with self._lock:
                trap = self._trap
                fire = trap is not None and trap.marker in data
            if fire and trap is not None and not trap.after_reply:
                # Not forwarded: the server's reply would race the close to the client.
                self._fire(client, server, trap)
                return
            if fire:
                pending.set()  # before the command goes: its reply cannot overtake it
            if not _forward(server, data):
                break
        _close(client, server)

    def _downstream(self, client: socket.socket, server: socket.socket, pending: threading.Event):
        while data := _recv(server):
            if pending.is_set() and not data.startswith(b"-NOSCRIPT"):
                with self._lock:
                    trap = self._trap
                if trap is not None:
                    self._fire(client, server, trap)
                    return
            if not _forward(client, data):
                break
        _close(client, server)

    def _fire(self, client: socket.socket, server: socket.socket, trap: _Trap) -> None:
        with self._lock:
            if self._trap is not trap:
                return
            self._trap = None
        # Set first: the client sees the close, and the test asks at once.
        self.dropped.set()
        if trap.refuse:  # before the close, or a quick reconnect could still get in
            self._stop_listening()
        _close(client, server)

    def _stop_listening(self) -> None:
        # shutdown() wakes the accept() blocked in another thread; close() alone does not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def close(self) -> None:
        self._stop_listening()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def __enter__(self) -> DroppingProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


def _forward(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
