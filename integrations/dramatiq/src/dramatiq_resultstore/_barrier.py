"""Group completion callbacks on resultstore's atomic counter.

dramatiq counts a group's finished members with a ``Barrier`` on a rate-limiter
backend (Redis or Memcached). :class:`CounterBarrierBackend` answers the two calls
a non-blocking barrier makes, ``add`` and ``decr``, with ``Backend.incr``
(capability ``counter``): every increment returns a value of its own, so of the
members finishing together exactly one sees the count reach zero and enqueues the
callbacks.
"""

from __future__ import annotations

from typing import Any

from dramatiq.middleware.group_callbacks import GroupCallbacks as _GroupCallbacks
from dramatiq.rate_limits import RateLimiterBackend

from resultstore import Backend, Capability

from ._backend import ResultStoreBackend

DEFAULT_BARRIER_TTL = 86400 * 1000  # dramatiq's: a day, in milliseconds


class CounterBarrierBackend(RateLimiterBackend):
    """The barrier half of a dramatiq rate-limiter backend, on a resultstore counter.

    Rate limiters (``incr``, ``incr_and_sum``) and blocking barrier waits are not
    offered: use dramatiq's own backends for those.
    """

    def __init__(self, backend: Backend) -> None:
        if Capability.COUNTER not in backend.capabilities:
            raise ValueError(
                f"group completion callbacks need a plugin with capability 'counter'; "
                f"{backend.url.masked!r} has none"
            )
        self.backend = backend

    def add(self, key: str, value: int, ttl: int) -> bool:
        """Create the counter at ``value`` unless it exists (barrier keys are new uuids)."""
        expires = ttl / 1000
        if self.backend.incr(key, value, expires=expires) == value:
            return True
        self.backend.incr(key, -value, expires=expires)  # it existed: leave it as it was
        return False

    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        """Take ``amount`` off unless that would go below ``minimum``: whether it did."""
        expires = ttl / 1000
        if self.backend.incr(key, -amount, expires=expires) >= minimum:
            return True
        # This party found the count at the minimum: the barrier is cleared. Putting
        # the amount back keeps it there for any late duplicate, as dramatiq's do.
        self.backend.incr(key, amount, expires=expires)
        return False

    def wait_notify(self, key: str, ttl: int) -> None:
        """Nothing waits on a counter barrier (see :meth:`wait`)."""

    def _unsupported(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "a resultstore counter serves group completion callbacks (non-blocking "
            "barriers) only; use dramatiq's Redis or Memcached backend for rate limits "
            "and blocking barriers"
        )

    incr = incr_and_sum = wait = _unsupported


class GroupCallbacks(_GroupCallbacks):
    """dramatiq's ``GroupCallbacks`` middleware counting on the results' store:
    ``broker.add_middleware(GroupCallbacks(results_backend))``."""

    def __init__(
        self, backend: ResultStoreBackend | Backend, *, barrier_ttl: int = DEFAULT_BARRIER_TTL
    ) -> None:
        store = backend.backend if isinstance(backend, ResultStoreBackend) else backend
        super().__init__(CounterBarrierBackend(store), barrier_ttl=barrier_ttl)
