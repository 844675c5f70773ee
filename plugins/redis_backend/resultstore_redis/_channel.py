"""The push side: one subscriber connection per backend and process, read by one thread.

The listener thread owns the connection: it connects, resubscribes every
wanted channel after a (re)connect and, once the server confirms each one,
asks the core to re-check it (anything published while disconnected is
found by that read). Other threads only send SUBSCRIBE / UNSUBSCRIBE; a
subscribe returns once the server confirmed it, so the core's read that
follows cannot miss a store that happened in between.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from typing import Any

import redis

from resultstore import DecodeError, OnChange, TaskMeta, time_left

log = logging.getLogger("resultstore.redis")

NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
_CONFIRM_TIMEOUT = 5.0
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 1.0


class RedisChannel:
    def __init__(
        self,
        connect: Callable[[], Any],
        task_key: Callable[[str], str],
        decode: Callable[[str, bytes], TaskMeta],
        on_change: OnChange,
        health_check_interval: float,
        name: str,
    ) -> None:
        self._connect = connect
        self._task_key = task_key
        self._decode = decode
        self._on_change = on_change
        self._idle = health_check_interval or 25.0
        self._lock = threading.Lock()  # ids, connection state, confirmations
        self._send_lock = threading.Lock()
        self._ids: dict[str, str] = {}  # channel name -> task id
        self._confirm: dict[str, threading.Event] = {}
        self._recheck: set[str] = set()
        self._conn: Any = None
        self._connecting: Any = None  # the connection the listener is opening, for close()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- called by the core (under its lock; never blocks past a confirmation) ---------

    def subscribe(self, task_ids: Collection[str]) -> None:
        channels = {self._task_key(t): t for t in task_ids}
        with self._lock:
            self._ids.update(channels)
            conn = self._conn
            if conn is None:
                return  # the listener subscribes everything when it connects, then re-checks
            events = [self._confirm.setdefault(ch, threading.Event()) for ch in channels]
        if not self._send(conn, "SUBSCRIBE", *channels):
            return
        # A wait with a deadline waits for the confirmation until that deadline at
        # most: on a server that stopped answering, the read that follows fails on
        # time and the wait ends with its timeout.
        bound = time_left(_CONFIRM_TIMEOUT)
        for event in events:
            if not event.wait(bound):
                # Re-check these when the confirmation does come: the core's read
                # may have run before the subscription took effect.
                with self._lock:
                    self._recheck.update(ch for ch in channels if ch in self._ids)
                log.warning(
                    "subscription not confirmed within %.2fs; re-checking when it is", bound
                )
                return

    def unsubscribe(self, task_ids: Collection[str]) -> None:
        channels = [self._task_key(t) for t in task_ids]
        with self._lock:
            for ch in channels:
                self._ids.pop(ch, None)
                self._recheck.discard(ch)
            conn = self._conn
        if conn is not None:
            self._send(conn, "UNSUBSCRIBE", *channels)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            conn, self._conn = self._conn, None
            connecting = self._connecting
            self._ids.clear()
        if conn is not None:
            with self._send_lock:  # see _send: no send can reopen it after this
                conn.disconnect()
        if connecting is not None:
            # A handshake with a server that stopped answering would hold the listener
            # for redis_socket_connect_timeout: closing the socket ends it now.
            connecting.disconnect()
        self._thread.join(timeout=5)

    def subscribed_ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ids.values())

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # --- the listener thread ----------------------------------------------------------

    def _send(self, conn: Any, *command: str) -> bool:
        try:
            with self._send_lock:
                # redis-py reconnects a disconnected Connection on send: on a connection
                # the listener has already given up, that would open a second subscriber
                # socket nobody reads. _reset and close disconnect under this lock.
                if self._conn is not conn:
                    return False
                # check_health=False: redis-py's health check PINGs and reads the reply
                # in this thread, which on a subscribed connection gets ["pong", ""],
                # fails, and silently reconnects the socket without its subscriptions
                # (push then stopped after any idle health_check_interval).
                conn.send_command(*command, check_health=False)
            return True
        except NETWORK_ERRORS:
            return False  # the listener sees the broken connection and recovers

    def _run(self) -> None:
        backoff = _FIRST_BACKOFF
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._connect()
                with self._lock:
                    if self._stop.is_set():
                        break
                    self._connecting = conn
                try:
                    conn.connect()
                finally:
                    with self._lock:
                        self._connecting = None
                self._resubscribe(conn)
                backoff = _FIRST_BACKOFF
                while not self._stop.is_set():
                    if conn.can_read(timeout=self._idle):
                        self._handle(conn.read_response())
                    elif not self._send(conn, "PING"):
                        raise redis.ConnectionError("PING failed")
            except Exception as exc:
                if self._stop.is_set():
                    break  # close() pulled the socket away
                if isinstance(exc, NETWORK_ERRORS):
                    log.warning(
                        "subscriber connection lost (%s); reconnecting in %.2fs", exc, backoff
                    )
                else:  # a bug must not silently end push for the whole process
                    log.exception("subscriber listener failed; restarting it")
            finally:
                self._reset(conn)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _resubscribe(self, conn: Any) -> None:
        # The send lock is held from publishing the connection until the SUBSCRIBE is
        # sent: an UNSUBSCRIBE of one of these channels by another thread must follow
        # it on the wire, or the server would keep a subscription nobody wants.
        with self._send_lock:
            with self._lock:
                channels = list(self._ids)
                self._recheck = set(channels)
                self._conn = conn
            if channels:
                conn.send_command("SUBSCRIBE", *channels, check_health=False)

    def _reset(self, conn: Any) -> None:
        with self._lock:
            self._conn = None
            confirms, self._confirm = self._confirm, {}
        # Those subscribes are resent and re-checked after the reconnect.
        for event in confirms.values():
            event.set()
        if conn is not None:
            with self._send_lock:  # see _send
                conn.disconnect()

    def _handle(self, response: Any) -> None:
        kind = response[0]
        if kind == b"message":
            channel = response[1].decode()
            task_id = self._ids.get(channel)
            if task_id is None:
                return  # unsubscribed meanwhile
            if not response[2]:  # a result too big to publish: the core reads the key
                self._on_change(task_id, None)
                return
            try:
                meta: TaskMeta | None = self._decode(task_id, response[2])
            except DecodeError:
                meta = None  # the core reads it and reports the problem to the waiter
            self._on_change(task_id, meta)
        elif kind == b"subscribe":
            channel = response[1].decode()
            with self._lock:
                event = self._confirm.pop(channel, None)
                recheck = channel in self._recheck
                self._recheck.discard(channel)
                task_id = self._ids.get(channel)
            if event is not None:
                event.set()
            if recheck and task_id is not None:
                self._on_change(task_id, None)
