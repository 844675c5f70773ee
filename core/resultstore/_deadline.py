"""The deadline of the resultstore call in progress, for plugins to bound their round trips by.

A wait with a timeout must end on time even when the server stops answering
mid-read. The core cannot interrupt a blocked socket, so it says how long is
left and the plugin bounds its own I/O: :func:`time_left` inside a hook
returns the seconds left before the deadline of the call that runs it (a
wait's timeout, a retry policy's time cap), or the plugin's own bound when no
deadline is set. The deadline lives in a context variable: it follows the
call into hooks in the same thread and into ``asyncio.to_thread`` workers,
and never leaks into the caller's code between steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# However late a step starts, it gets this long: the read at a wait's deadline is a
# backstop for a lost notification, and a local round trip on a loaded machine
# takes tens of milliseconds. It is the documented margin of every timeout.
GRACE = 0.25

_deadline: ContextVar[float | None] = ContextVar("resultstore_deadline", default=None)


def time_left(default: float | None = None) -> float | None:
    """Seconds a plugin may block now: the smaller of ``default`` (its own bound) and what
    is left of the current call's deadline (at least a short grace period), or ``default``
    when the call has no deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    left = max(deadline - time.monotonic(), GRACE)
    return left if default is None else min(left, default)


def current() -> float | None:
    """The current deadline on the ``time.monotonic()`` clock, or ``None``."""
    return _deadline.get()


@contextmanager
def scope(deadline: float | None) -> Iterator[None]:
    """Run the block under ``deadline`` (a ``time.monotonic()`` value), or under the
    enclosing one when that is sooner; ``None`` keeps the enclosing one."""
    outer = _deadline.get()
    if deadline is None or (outer is not None and outer <= deadline):
        yield
        return
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)
