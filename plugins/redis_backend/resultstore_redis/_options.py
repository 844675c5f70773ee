"""From a URL and Celery's ``redis_*`` settings to a validated redis-py client."""

from __future__ import annotations

import difflib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff

from resultstore import URL, RetryPolicy

from ._bounded import bounded
from ._pool import WaitingPool
from ._scan import DEFAULT_SCAN_LIMIT, listing_options

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
# Connections per standalone client (redis_max_connections overrides); a thread that
# finds them all busy waits up to POOL_WAIT seconds for one (_pool.WaitingPool).
DEFAULT_MAX_CONNECTIONS = 100
POOL_WAIT = 30.0

# Celery's setting names (and defaults where Celery has one).
_NUMBER_OPTIONS = {
    "redis_socket_timeout": 120.0,
    "redis_socket_connect_timeout": 5.0,
    "redis_backend_health_check_interval": 25.0,
}
_BOOL_OPTIONS = {"redis_retry_on_timeout": False, "redis_socket_keepalive": False}
# A result larger than this is not published whole: subscribers get an empty message
# and read the key. Redis drops a subscriber whose output buffer passes 32 MB (8 MB for
# 60 s), which cost every waiter of the process its connection.
DEFAULT_PUBLISH_MAX_BYTES = 1024 * 1024
_OTHER_OPTIONS = {
    "redis_max_connections",
    "redis_username",
    "redis_backend_use_ssl",
    "redis_publish_max_bytes",
    "redis_list_index",
    "redis_list_scan_limit",
    "result_backend_transport_options",
}
# Every option the plugin reads: the core refuses any other, naming a close spelling.
OPTION_NAMES = frozenset(_NUMBER_OPTIONS) | frozenset(_BOOL_OPTIONS) | frozenset(_OTHER_OPTIONS)
_TRANSPORT_OPTIONS = {"global_keyprefix", "retry_policy", "master_name", "sentinel_kwargs"}
_SSL_KEYS = {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}
_CERT_REQS = {
    "required": "required",
    "cert_required": "required",
    "optional": "optional",
    "cert_optional": "optional",
    "none": "none",
    "cert_none": "none",
}
_CERT_CONSTANTS: dict[int, str] = {
    ssl.CERT_REQUIRED: "required",
    ssl.CERT_OPTIONAL: "optional",
    ssl.CERT_NONE: "none",
}
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_SCHEMES = ("redis", "rediss", "redis+socket", "unix", "sentinel", "redis+cluster")


@dataclass(frozen=True)
class RedisSettings:
    kind: str  # "standalone", "sentinel" or "cluster"
    # Holds the password: kept out of the repr, like every other place the URL shows.
    connection: Mapping[str, Any] = field(repr=False)
    keyprefix: str = ""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Celery's redis_retry_on_timeout: whether a command that timed out is retried
    # (a lost connection always is, within the retry policy).
    retry_on_timeout: bool = False
    publish_max_bytes: int | None = DEFAULT_PUBLISH_MAX_BYTES
    health_check_interval: float = 25.0
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_kwargs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    startup_nodes: tuple[tuple[str, int], ...] = ()
    # Capability listing: keep an index with every store (_index), or list by a SCAN of
    # at most list_scan_limit keys (_scan).
    list_index: bool = False
    list_scan_limit: int = DEFAULT_SCAN_LIMIT


def _unserved_scheme(url: URL) -> str:
    # "redis+sentinal" is closest to "redis+socket" as a whole: try what follows "+" first.
    _, plus, rest = url.scheme.partition("+")
    close = (plus and difflib.get_close_matches(rest, _SCHEMES, n=1)) or (
        difflib.get_close_matches(url.scheme, _SCHEMES, n=1)
    )
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"resultstore-redis does not serve scheme {url.scheme!r} ({url.masked!r}); "
        f"{hint}its schemes: {', '.join(sorted(_SCHEMES))}"
    )


def parse(url: URL, options: Mapping[str, Any]) -> RedisSettings:
    if url.scheme not in _SCHEMES:
        raise ValueError(_unserved_scheme(url))
    raw_transport = options.get("result_backend_transport_options") or {}
    if not isinstance(raw_transport, Mapping):
        raise TypeError(
            f"result_backend_transport_options must be a dict, got {raw_transport!r:.100}"
        )
    transport = dict(raw_transport)
    unknown = set(transport) - _TRANSPORT_OPTIONS
    if unknown:
        raise ValueError(
            f"result_backend_transport_options: unknown key(s) {sorted(unknown)}; "
            f"known: {sorted(_TRANSPORT_OPTIONS)}"
        )
    connection: dict[str, Any] = {}
    for name, default in _NUMBER_OPTIONS.items():
        value = options.get(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative, got {value!r}")
        connection[name.removeprefix("redis_backend_").removeprefix("redis_")] = value
    for name, default in _BOOL_OPTIONS.items():
        value = options.get(name, default)
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
        connection[name.removeprefix("redis_")] = value
    max_connections = options.get("redis_max_connections")
    if max_connections is not None:
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(f"redis_max_connections must be an int, got {max_connections!r}")
        if max_connections < 1:
            raise ValueError(f"redis_max_connections must be positive, got {max_connections!r}")
    publish_max = options.get("redis_publish_max_bytes", DEFAULT_PUBLISH_MAX_BYTES)
    if publish_max is not None and (
        isinstance(publish_max, bool) or not isinstance(publish_max, int) or publish_max < 0
    ):
        raise TypeError(f"redis_publish_max_bytes must be an int >= 0 or None, got {publish_max!r}")
    list_index, scan_limit = listing_options(options)
    health = connection["health_check_interval"]
    retry = RetryPolicy.from_option(transport.get("retry_policy"), "retry_policy")
    # RESP2: pub/sub messages come back from read_response (RESP3 routes them elsewhere).
    connection["protocol"] = 2
    retry_on_timeout = connection.pop("retry_on_timeout")
    username = options.get("redis_username")
    if username is not None and not isinstance(username, str):
        raise TypeError(f"redis_username must be a str, got {type(username).__name__}")
    if username:
        connection["username"] = username
    prefix = transport.get("global_keyprefix") or ""
    if not isinstance(prefix, str):
        raise TypeError(f"global_keyprefix must be a str, got {prefix!r}")
    # Celery's rule (BaseKeyValueStoreBackend._add_global_keyprefix): a prefix not
    # ending in one of ':_-.' gets a '_', so both write "app_celery-task-meta-<id>".
    if prefix and prefix[-1] not in ":_-.":
        prefix += "_"
    # Celery turns TLS on for any redis:// URL when redis_backend_use_ssl is set:
    # never ignore it silently (that would send the password in clear text).
    use_ssl = options.get("redis_backend_use_ssl")
    if use_ssl is not None and not isinstance(use_ssl, Mapping):
        raise TypeError(f"redis_backend_use_ssl must be a dict, got {use_ssl!r:.100}")
    common: dict[str, Any] = {
        "keyprefix": prefix,
        "retry": retry,
        "retry_on_timeout": retry_on_timeout,
        "publish_max_bytes": publish_max,
        "health_check_interval": float(health or 0),
        "list_index": list_index,
        "list_scan_limit": scan_limit,
    }

    if url.scheme == "sentinel":
        master = transport.get("master_name")
        if not isinstance(master, str) or not master:
            raise ValueError(
                f"{url.masked!r}: sentinel:// needs result_backend_transport_options="
                "{'master_name': ...}"
            )
        sentinel_kwargs = transport.get("sentinel_kwargs") or {}
        if not isinstance(sentinel_kwargs, Mapping):
            raise TypeError(f"sentinel_kwargs must be a dict, got {sentinel_kwargs!r:.100}")
        nodes, first = _hosts(url, DEFAULT_SENTINEL_PORT)
        connection.update(_credentials(first))
        connection["db"] = _db(url, first)
        if use_ssl:
            connection["ssl"] = True
            connection.update(_ssl(url, {}, use_ssl))
        # redis-py has no blocking Sentinel pool: no cap unless asked, as on Cluster
        # (its default of 100 raised "Too many connections" at the 101st busy thread).
        connection["max_connections"] = max_connections or 2**31
        return RedisSettings(
            "sentinel",
            connection,
            sentinels=nodes,
            master_name=master,
            sentinel_kwargs=dict(sentinel_kwargs),
            **common,
        )
    if url.scheme == "redis+cluster":
        nodes, first = _hosts(url, DEFAULT_PORT)
        if _db(url, first) != 0:
            raise ValueError(f"{url.masked!r}: Redis Cluster has only database 0")
        if list_index:
            # The store script would write the index keys beside the task key: another
            # hash slot, on another node.
            raise ValueError(
                f"{url.masked!r}: redis_list_index is not available on Redis Cluster "
                "(the index keys are in other hash slots than the task keys); "
                "Cluster lists by SCAN"
            )
        connection.update(_credentials(first))
        if use_ssl:
            connection["ssl"] = True
            connection.update(_ssl(url, {}, use_ssl))
        connection["max_connections"] = max_connections or 2**31
        return RedisSettings("cluster", connection, startup_nodes=nodes, **common)

    parts = urlsplit(url.raw)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    connection.update(_credentials(parts))
    if url.scheme in ("unix", "redis+socket"):
        if not parts.path:
            raise ValueError(
                f"{url.masked!r}: a socket URL needs a path, e.g. unix:///run/redis.sock"
            )
        if use_ssl:
            raise ValueError(f"{url.masked!r}: redis_backend_use_ssl does not apply to a socket")
        connection["unix_socket_path"] = unquote(parts.path)
        connection["db"] = _int_query(query.pop("db", "0"), "db", url)
        for key in ("socket_connect_timeout", "socket_keepalive"):
            connection.pop(key, None)  # TCP-only
    else:
        connection["host"] = parts.hostname or "localhost"
        connection["port"] = parts.port or DEFAULT_PORT
        connection["db"] = _db(url, parts, query)
        if url.scheme == "rediss" or use_ssl:
            connection["ssl"] = True
            # Only rediss:// reads TLS parameters from its query (as in Celery).
            connection.update(_ssl(url, query if url.scheme == "rediss" else {}, use_ssl))
    if query:
        hint = " (TLS parameters need rediss://)" if _SSL_KEYS & set(query) else ""
        raise ValueError(f"{url.masked!r}: unknown query parameter(s) {sorted(query)}{hint}")
    connection["max_connections"] = max_connections or DEFAULT_MAX_CONNECTIONS
    return RedisSettings("standalone", connection, **common)


@dataclass(frozen=True)
class _Flavour:
    """The classes of one of redis-py's two APIs (blocking and asyncio)."""

    redis: Any
    cluster: Any
    cluster_node: Any
    sentinel: Any
    retry: Any


BLOCKING = _Flavour(
    redis.Redis,
    redis.RedisCluster,
    redis.cluster.ClusterNode,
    redis.sentinel.Sentinel,
    redis.retry.Retry,
)
ASYNCIO = _Flavour(
    redis.asyncio.Redis,
    redis.asyncio.RedisCluster,
    redis.asyncio.cluster.ClusterNode,
    redis.asyncio.sentinel.Sentinel,
    redis.asyncio.retry.Retry,
)


def make_client(settings: RedisSettings, flavour: _Flavour = BLOCKING) -> Any:
    """A redis-py client for the settings: Redis, a Sentinel master, or RedisCluster
    (``flavour=ASYNCIO``: the same from ``redis.asyncio``, bound to the running loop)."""
    kwargs = dict(settings.connection)
    # redis-py retries nothing by itself: the plugin runs every command through the
    # core's RetryPolicy, whose time cap then holds (redis-py's own retries, and its
    # retried connect inside each of them, multiplied the policy's budget).
    kwargs["retry"] = flavour.retry(NoBackoff(), 0)
    if settings.kind == "sentinel":
        sentinel_kwargs = dict(settings.sentinel_kwargs) or {
            "socket_timeout": kwargs.get("socket_timeout"),
            "socket_connect_timeout": kwargs.get("socket_connect_timeout"),
        }
        # One attempt per sentinel query: the next sentinel in the list is the fallback,
        # and the master connection's retry policy repeats the whole discovery. redis-py's
        # default (3 retries from a 1 s backoff) made a dead first sentinel cost ~4 s on
        # every master lookup (each new connection, each subscriber reconnect).
        sentinel_kwargs.setdefault("retry", flavour.retry(NoBackoff(), 0))
        sentinel = flavour.sentinel(list(settings.sentinels), sentinel_kwargs=sentinel_kwargs)
        assert settings.master_name is not None
        sentinel_module = redis.asyncio.sentinel if flavour is ASYNCIO else redis.sentinel
        managed = (
            sentinel_module.SentinelManagedSSLConnection
            if kwargs.get("ssl")
            else sentinel_module.SentinelManagedConnection
        )
        kwargs["connection_class"] = bounded(managed)
        return sentinel.master_for(settings.master_name, **kwargs)
    if settings.kind == "cluster":
        kwargs.pop("db", None)
        # redis-py builds each node's client itself and takes no connection class: on
        # Cluster a read is bounded by redis_socket_timeout, not by the call's deadline.
        nodes = [flavour.cluster_node(host, port) for host, port in settings.startup_nodes]
        return flavour.cluster(startup_nodes=nodes, **kwargs)
    # The client works out the connection class and arguments for the URL; its pool is
    # replaced by one of bounded connections (the client owns it: closed with it).
    pool = flavour.redis(**kwargs).connection_pool
    if flavour is ASYNCIO:
        # Its callers are bounded by the plugin's per-loop semaphore.
        plain: Any = redis.asyncio.ConnectionPool(
            connection_class=bounded(pool.connection_class),
            max_connections=pool.max_connections,
            **pool.connection_kwargs,
        )
        return flavour.redis.from_pool(plain)
    # A thread beyond the pool's connections waits for one to come free.
    waiting = WaitingPool(
        wait=POOL_WAIT,
        connection_class=bounded(pool.connection_class),
        max_connections=pool.max_connections,
        **pool.connection_kwargs,
    )
    return flavour.redis.from_pool(waiting)


def _hosts(url: URL, default_port: int) -> tuple[tuple[tuple[str, int], ...], Any]:
    """Celery's ';'-joined form: ``sentinel://h1:26379;sentinel://h2:26379/0``."""
    nodes = []
    first = None
    for part in url.raw.split(";"):
        if not part.strip():
            continue
        split = urlsplit(part.strip())
        if split.scheme != url.scheme:
            raise ValueError(f"{url.masked!r}: every ';'-joined URL must use {url.scheme}://")
        try:
            port = split.port or default_port
        except ValueError:
            raise ValueError(f"{url.masked!r}: bad port") from None
        nodes.append((split.hostname or "localhost", port))
        first = first or split
    return tuple(nodes), first


def _credentials(parts: Any) -> dict[str, Any]:
    creds = {}
    if parts.username:
        creds["username"] = unquote(parts.username)
    if parts.password:
        creds["password"] = unquote(parts.password)
    return creds


def _db(url: URL, parts: Any, query: dict[str, str] | None = None) -> int:
    path = (parts.path or "").strip("/")
    raw = query.pop("db", None) if query is not None else None
    return _int_query(raw if raw is not None else (path or "0"), "db", url)


def _int_query(value: str, name: str, url: URL) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{url.masked!r}: {name} must be an integer, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{url.masked!r}: {name} must not be negative")
    return number


def _ssl(url: URL, query: dict[str, str], use_ssl: object) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if use_ssl is not None:
        if not isinstance(use_ssl, Mapping) or set(use_ssl) - _SSL_KEYS:
            raise ValueError(
                f"redis_backend_use_ssl must be a dict with keys among {sorted(_SSL_KEYS)}"
            )
        params.update(use_ssl)
    for key in _SSL_KEYS & set(query):
        params[key] = query.pop(key)
    if "ssl_cert_reqs" in params:
        reqs = params["ssl_cert_reqs"]
        # Celery's names (CERT_REQUIRED, required, ...) or the ssl module's constants.
        mapped: str | None = None
        if isinstance(reqs, str):
            mapped = _CERT_REQS.get(reqs.lower())
        elif isinstance(reqs, int):
            mapped = _CERT_CONSTANTS.get(reqs)
        if mapped is None:
            raise ValueError(
                f"{url.masked!r}: ssl_cert_reqs must be required, optional or none, got {reqs!r}"
            )
        params["ssl_cert_reqs"] = mapped
    if isinstance(params.get("ssl_check_hostname"), str):
        flag = params["ssl_check_hostname"].lower()
        if flag not in _FLAGS:  # "maybe" must not quietly turn hostname checks off
            raise ValueError(
                f"{url.masked!r}: ssl_check_hostname must be true or false, "
                f"got {params['ssl_check_hostname']!r}"
            )
        params["ssl_check_hostname"] = _FLAGS[flag]
    return params
