"""Bounded retries of transient errors, for plugins: a count, a backoff and a time cap.

A plugin wraps each round trip in :meth:`RetryPolicy.run` (or ``arun``): a
transient error (a lost connection, a busy engine) is retried after a backoff,
until ``max_retries`` retries were made or ``timeout`` seconds have passed since
the call began, whichever comes first; then :class:`BackendUnavailable` says
how many attempts were made, in how long, and why it gave up. Retries run
under the remaining time as a deadline (see :func:`resultstore.time_left`), so
an attempt against a server that stopped answering cannot outlast the policy.
The first attempt is bounded by the plugin's own timeouts (and by the caller's
deadline, if any): a slow but healthy server is not a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TypeVar

from . import _deadline
from ._errors import BackendUnavailable

T = TypeVar("T")
Transient = Callable[[Exception], bool]
Describe = Callable[[Exception], str]


def describe_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()}"


@dataclass(frozen=True)
class RetryPolicy:
    """How a plugin retries a round trip that failed for a transient reason.

    The keys are Celery's ``retry_policy`` keys plus ``timeout``: the waits between
    attempts double from ``interval_start`` up to ``interval_max`` (or, with
    ``interval_step``, grow by that step, as in Celery); no retry starts after
    ``timeout`` seconds from the call's start.
    """

    max_retries: int = 3
    interval_start: float = 0.05
    interval_step: float | None = None
    interval_max: float = 1.0
    timeout: float = 10.0

    @classmethod
    def from_option(cls, raw: object, name: str = "retry_policy") -> RetryPolicy:
        """Build from a user's dict (``None``: the defaults), naming ``name`` in errors."""
        if raw is None:
            return cls()
        keys = [f.name for f in fields(cls)]
        if not isinstance(raw, Mapping) or set(raw) - set(keys):
            raise ValueError(f"{name} must be a dict with keys among {keys}, got {raw!r:.200}")
        policy = cls(**raw)
        retries = policy.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"{name} max_retries must be an int >= 0, got {retries!r}")
        for key in ("interval_start", "interval_step", "interval_max", "timeout"):
            value = getattr(policy, key)
            if value is None and key == "interval_step":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} {key} must be a number of seconds >= 0, got {value!r}")
        if policy.interval_start > policy.interval_max:
            raise ValueError(
                f"{name} needs interval_start <= interval_max, got {policy.interval_start!r} "
                f"and {policy.interval_max!r}"
            )
        return policy

    def delays(self) -> Iterator[float]:
        """The wait before each retry, in order (``max_retries`` of them)."""
        delay = self.interval_start
        for n in range(self.max_retries):
            if self.interval_step is None:
                yield min(delay, self.interval_max)
                delay *= 2
            else:
                yield min(self.interval_start + self.interval_step * n, self.interval_max)

    def run(
        self,
        fn: Callable[[], T],
        *,
        transient: Transient,
        what: str,
        where: str,
        describe: Describe = describe_error,
    ) -> T:
        """Call ``fn`` until it succeeds, fails for good, or the policy gives up."""
        began = time.monotonic()
        try:
            # The first attempt as it is: it runs under the caller's deadline only
            # (see _Attempts), and the bookkeeping of retries cost ~1.5 us of a
            # ~10 us SQLite get.
            return fn()
        except Exception as exc:
            if not transient(exc):
                raise
            attempt = _Attempts(self, what, where, describe, began)
            time.sleep(attempt.failed(exc))
        while True:
            try:
                with _deadline.scope(attempt.deadline):
                    return fn()
            except Exception as exc:
                if not transient(exc):
                    raise
                time.sleep(attempt.failed(exc))

    async def arun(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        transient: Transient,
        what: str,
        where: str,
        describe: Describe = describe_error,
    ) -> T:
        """:meth:`run` for coroutines: the waits between attempts do not block the loop."""
        attempt = _Attempts(self, what, where, describe, time.monotonic())
        while True:
            try:
                with _deadline.scope(attempt.deadline):
                    return await fn()
            except Exception as exc:
                if not transient(exc):
                    raise
                await asyncio.sleep(attempt.failed(exc))


class _Attempts:
    """One call's attempts: how many, since when, and the deadline of the next one."""

    def __init__(
        self, policy: RetryPolicy, what: str, where: str, describe: Describe, began: float
    ) -> None:
        self.policy = policy
        self.what, self.where, self.describe = what, where, describe
        self.began = began
        self.count = 0
        self.delays = policy.delays()
        # The first attempt runs under the caller's deadline only; retries also under
        # the policy's time cap.
        self.deadline: float | None = None

    def failed(self, exc: Exception) -> float:
        """Count a transient failure: the wait before the next attempt, or raise."""
        self.count += 1
        now = time.monotonic()
        cap = self.began + self.policy.timeout
        caller = _deadline.current()
        delay = next(self.delays, None)
        if delay is None:
            reason = f"no retries left (max_retries={self.policy.max_retries})"
        elif now + delay >= cap:
            reason = f"out of time (retry_policy timeout={self.policy.timeout:g} s)"
        elif caller is not None and now + delay >= caller:
            reason = "the caller's deadline came"
        else:
            self.deadline = cap
            return delay
        attempts = "1 attempt" if self.count == 1 else f"{self.count} attempts"
        raise BackendUnavailable(
            f"{self.what} failed on {self.where} after {attempts} in {now - self.began:.2f} s, "
            f"{reason}: {self.describe(exc)}"
        ) from exc
