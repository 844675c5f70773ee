"""What redis-py's errors mean: which ones the retry policy retries, and how the rest read.

Every error of a command ends as a :class:`resultstore.BackendUnavailable` that names
the masked URL and says what happened: the core's retry policy words the transient
ones ("after N attempts in T s, no retries left ..."); :func:`refused` the ones that
retrying cannot help (the server answered with an error, or not in Redis's protocol,
or a timeout when ``redis_retry_on_timeout`` is off). None escapes as a raw
redis-py exception: the CLI then exits 4 with one line, not a traceback.
"""

from __future__ import annotations

import redis

from resultstore import BackendUnavailable

# What a command may raise (OSError: a socket error redis-py did not wrap).
REDIS_ERRORS = (redis.RedisError, OSError)
NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
# ConnectionError subclasses that are answers, not a lost connection: retrying a wrong
# password only repeats the refusal.
_CREDENTIALS = (redis.AuthenticationError, redis.exceptions.AuthorizationError)


def transient(exc: Exception, retry_on_timeout: bool) -> bool:
    """Whether the retry policy retries ``exc``: a lost or refused connection, a server
    still loading its data, and a timeout when ``redis_retry_on_timeout`` is on."""
    if isinstance(exc, _CREDENTIALS):
        return False
    if isinstance(exc, redis.TimeoutError):
        return retry_on_timeout
    return isinstance(exc, (redis.ConnectionError, OSError))


def before_sending(exc: Exception) -> bool:
    """Whether ``exc`` happened while connecting, so the command never reached the server.

    Only such failures are retried for a command that must not run twice (a counter's
    increment): redis-py words them "Error <n> connecting to <host>" or "Timeout
    connecting to server" (redis/connection.py, connect_check_health).
    """
    return isinstance(exc, NETWORK_ERRORS) and "connecting to" in str(exc)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _CREDENTIALS):
        return "the server refused the credentials"
    if isinstance(exc, redis.TimeoutError):
        return "not retried (a timeout; redis_retry_on_timeout is off)"
    if isinstance(exc, redis.InvalidResponse):
        return "the reply is not in Redis's protocol (is a Redis server on that port?)"
    if isinstance(exc, redis.ResponseError):
        return "the server answered with an error"
    if isinstance(exc, NETWORK_ERRORS):  # a connection error on a call that may not retry
        return "not retried (the command may have reached the server)"
    return "not retried"


def refused(what: str, where: str, exc: BaseException, seconds: float) -> BackendUnavailable:
    """The error for ``exc``, which the retry policy did not retry."""
    return BackendUnavailable(
        f"{what} failed on {where} after {seconds:.2f} s, {_reason(exc)}: {describe(exc)}"
    )
