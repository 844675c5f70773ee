"""resultstore-redis URL forms and options: what they build, and their exact errors.

Clients are inspected through ``backend.plugin.client.connection_pool`` without
connecting (nothing connects before the first command), except where a form
is proved against a server: the machine's Redis, and a redis-server on a unix
socket (no TCP port at all) that this module starts.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.sentinel import SentinelManagedSSLConnection

from resultstore import URL, AsyncResult, Backend, BackendUnavailable, GroupResult, RetryPolicy
from resultstore_redis import _options
from resultstore_redis._bounded import AsyncBoundedIO, BoundedIO
from resultstore_redis._pool import WaitingPool

from ..threads import Worker
from .conftest import transport
from .servers import RedisServer

PASSWORD = "s3cret"
KNOWN_TRANSPORT = "['global_keyprefix', 'master_name', 'retry_policy', 'sentinel_kwargs']"
RETRY_KEYS = "['max_retries', 'interval_start', 'interval_step', 'interval_max', 'timeout']"
KNOWN_OPTIONS = (
    "redis_backend_health_check_interval, redis_backend_use_ssl, redis_list_index, "
    "redis_list_scan_limit, redis_max_connections, "
    "redis_publish_max_bytes, redis_retry_on_timeout, redis_socket_connect_timeout, "
    "redis_socket_keepalive, redis_socket_timeout, redis_username, "
    "result_backend_transport_options"
)


def pool_kwargs(backend: Backend) -> dict[str, Any]:
    kwargs: dict[str, Any] = backend.plugin.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    return kwargs


def connection_class(backend: Backend) -> type:
    """The redis-py class under the plugin's bounded one (see _bounded)."""
    cls: type = backend.plugin.client.connection_pool.connection_class  # type: ignore[attr-defined]
    assert issubclass(cls, (BoundedIO, AsyncBoundedIO)), cls
    base: type = cls.__bases__[1]
    return base


def error_of(url: str, **options: Any) -> BaseException:
    """The exception building a Backend raises (and its exact type is the one expected)."""
    with pytest.raises((ValueError, TypeError)) as raised:
        Backend(url, options=options).close()
    return raised.value


# --- redis:// -----------------------------------------------------------------------


class TestRedisURL:
    @pytest.mark.parametrize(
        ("url", "host", "port", "db"),
        [
            ("redis://", "localhost", 6379, 0),
            ("redis://cache.example", "cache.example", 6379, 0),
            ("redis://cache.example/", "cache.example", 6379, 0),
            ("redis://cache.example:6380/5", "cache.example", 6380, 5),
            ("redis://127.0.0.1:7000/15", "127.0.0.1", 7000, 15),
            ("redis://h?db=4", "h", 6379, 4),
            ("redis://h:6380/5?db=7", "h", 6380, 7),  # the query wins, as in Celery
            ("redis://[::1]:6390/2", "::1", 6390, 2),
        ],
    )
    def test_host_port_db(self, url: str, host: str, port: int, db: int) -> None:
        with Backend(url) as backend:
            kwargs = pool_kwargs(backend)
            assert connection_class(backend) is redis.Connection
            assert (kwargs["host"], kwargs["port"], kwargs["db"]) == (host, port, db)

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("redis://h/abc", "'redis://h/abc': db must be an integer, got 'abc'"),
            ("redis://h/1.5", "'redis://h/1.5': db must be an integer, got '1.5'"),
            ("redis://h/0/1", "'redis://h/0/1': db must be an integer, got '0/1'"),
            ("redis://h/-1", "'redis://h/-1': db must not be negative"),
            ("redis://h?db=x", "'redis://h?db=x': db must be an integer, got 'x'"),
            ("redis://h?db=", "'redis://h?db=': db must be an integer, got ''"),
            ("redis://h/0?db=-2", "'redis://h/0?db=-2': db must not be negative"),
            (
                "redis://h/0?colour=blue",
                "'redis://h/0?colour=blue': unknown query parameter(s) ['colour']",
            ),
            (
                "redis://h/0?b=1&a=2",
                "'redis://h/0?b=1&a=2': unknown query parameter(s) ['a', 'b']",
            ),
            (
                "redis://h/0?ssl_cert_reqs=none",
                "'redis://h/0?ssl_cert_reqs=none': unknown query parameter(s) "
                "['ssl_cert_reqs'] (TLS parameters need rediss://)",
            ),
        ],
    )
    def test_bad_url(self, url: str, message: str) -> None:
        error = error_of(url)
        assert type(error) is ValueError
        assert str(error) == message

    def test_credentials(self) -> None:
        with Backend("redis://app%40team:p%40ss%3Aw@h/0") as backend:
            kwargs = pool_kwargs(backend)
            assert (kwargs["username"], kwargs["password"]) == ("app@team", "p@ss:w")

    def test_redis_username_option(self) -> None:
        with Backend(f"redis://:{PASSWORD}@h/0", options={"redis_username": "acl-user"}) as b:
            assert (pool_kwargs(b)["username"], pool_kwargs(b)["password"]) == (
                "acl-user",
                PASSWORD,
            )

    def test_stores_in_the_db_of_the_url(self, redis_url: str, keyprefix: str) -> None:
        url = "redis://127.0.0.1:6379/3"
        with Backend(url, options=transport(keyprefix)) as backend:
            backend.mark_as_done("t", "in three")
            assert AsyncResult("t", backend).get(timeout=5) == "in three"
        key = f"{keyprefix}celery-task-meta-t"
        db3 = redis.Redis(port=6379, db=3)
        db0 = redis.Redis.from_url(redis_url)
        try:
            assert db3.exists(key) == 1
            assert db0.exists(key) == 0
        finally:
            db3.delete(key)
            db3.close()
            db0.close()


# --- unix sockets ---------------------------------------------------------------------


class SocketRedisServer(RedisServer):
    """A redis-server on a unix socket only (``--port 0``), checked over that socket."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "redis.sock"
        super().__init__(
            directory,
            *("--port", "0"),  # after RedisServer's own --port: no TCP listener at all
            *("--unixsocket", str(self.socket), "--unixsocketperm", "700"),
        )

    def wait_until_up(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server on {self.socket} did not start:\n{log}")
                time.sleep(0.02)
        finally:
            client.close()

    def client(self, db: int = 0) -> redis.Redis:  # type: ignore[override]
        return redis.Redis(unix_socket_path=str(self.socket), db=db)


@pytest.fixture(scope="module")
def socket_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SocketRedisServer]:
    server = SocketRedisServer(tmp_path_factory.mktemp("sock"))
    assert len(str(server.socket)) < 100, "unix socket paths are limited to ~107 bytes"
    server.start()
    try:
        client = server.client()
        try:  # no TCP listener: every test here goes by the socket
            assert client.config_get("port") == {"port": "0"}
        finally:
            client.close()
        yield server
    finally:
        server.stop()


class TestUnixSocket:
    @pytest.mark.parametrize(
        ("form", "db"),
        [("unix://{path}?db=3", 3), ("redis+socket://{path}", 0), ("unix://{path}", 0)],
    )
    def test_store_and_read(self, socket_server: SocketRedisServer, form: str, db: int) -> None:
        url = form.format(path=socket_server.socket)
        assert url.count("///") == 1
        with Backend(url) as backend:
            assert connection_class(backend) is redis.UnixDomainSocketConnection
            kwargs = pool_kwargs(backend)
            assert (kwargs["path"], kwargs["db"]) == (str(socket_server.socket), db)
            assert "host" not in kwargs
            assert "socket_connect_timeout" not in kwargs  # TCP-only
            backend.mark_as_done("sock-task", {"via": "socket"})
            assert AsyncResult("sock-task", backend).get(timeout=5) == {"via": "socket"}
        raw = socket_server.client(db)
        other = socket_server.client(1 - min(db, 1))
        try:
            assert raw.exists("celery-task-meta-sock-task") == 1
            assert other.exists("celery-task-meta-sock-task") == 0
            raw.delete("celery-task-meta-sock-task")
        finally:
            raw.close()
            other.close()

    def test_push_wait_over_the_socket(self, socket_server: SocketRedisServer) -> None:
        with (
            Backend(f"unix://{socket_server.socket}?db=3") as waiter,
            Backend(f"redis+socket://{socket_server.socket}?db=3") as provider,
        ):
            result = AsyncResult("sock-wait", waiter)
            store = threading.Timer(0.2, provider.mark_as_done, ("sock-wait", "woken"))
            started = time.monotonic()
            store.start()
            try:
                assert result.get(timeout=10) == "woken"
            finally:
                store.join()
            assert time.monotonic() - started < 5  # pushed, not found at the deadline
            provider.forget("sock-wait")

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("unix://", "'unix://': a socket URL needs a path, e.g. unix:///run/redis.sock"),
            (
                "redis+socket://",
                "'redis+socket://': a socket URL needs a path, e.g. unix:///run/redis.sock",
            ),
            ("unix:///r.sock?db=x", "'unix:///r.sock?db=x': db must be an integer, got 'x'"),
            ("unix:///r.sock?db=-1", "'unix:///r.sock?db=-1': db must not be negative"),
            (
                "unix:///r.sock?timeout=1",
                "'unix:///r.sock?timeout=1': unknown query parameter(s) ['timeout']",
            ),
        ],
    )
    def test_bad_socket_url(self, url: str, message: str) -> None:
        error = error_of(url)
        assert type(error) is ValueError
        assert str(error) == message

    def test_no_tls_on_a_socket(self) -> None:
        error = error_of("unix:///r.sock", redis_backend_use_ssl={"ssl_cert_reqs": "none"})
        assert type(error) is ValueError
        assert str(error) == "'unix:///r.sock': redis_backend_use_ssl does not apply to a socket"


# --- TLS -------------------------------------------------------------------------------


class TestTLS:
    @pytest.mark.parametrize(
        ("given", "mapped"),
        [
            ("required", "required"),
            ("CERT_REQUIRED", "required"),
            ("optional", "optional"),
            ("CERT_OPTIONAL", "optional"),
            ("none", "none"),
            ("CERT_NONE", "none"),
        ],
    )
    def test_cert_reqs_from_the_url(self, given: str, mapped: str) -> None:
        url = f"rediss://:{PASSWORD}@tls.example:6380/1?ssl_cert_reqs={given}"
        with Backend(url) as backend:
            assert connection_class(backend) is redis.SSLConnection
            kwargs = pool_kwargs(backend)
            assert kwargs["ssl_cert_reqs"] == mapped
            assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("tls.example", 6380, 1)
            assert kwargs["password"] == PASSWORD

    def test_every_tls_parameter_from_the_url(self) -> None:
        url = (
            "rediss://tls.example/0?ssl_cert_reqs=required&ssl_ca_certs=%2Fetc%2Fca.pem"
            "&ssl_certfile=/etc/client.pem&ssl_keyfile=/etc/client.key&ssl_check_hostname=false"
        )
        with Backend(url) as backend:
            kwargs = pool_kwargs(backend)
            assert kwargs["ssl_cert_reqs"] == "required"
            assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
            assert kwargs["ssl_certfile"] == "/etc/client.pem"
            assert kwargs["ssl_keyfile"] == "/etc/client.key"
            assert kwargs["ssl_check_hostname"] is False

    def test_defaults(self) -> None:
        with Backend("rediss://tls.example") as backend:
            assert connection_class(backend) is redis.SSLConnection
            kwargs = pool_kwargs(backend)
            assert (kwargs["port"], kwargs["db"]) == (6379, 0)
            assert kwargs["ssl_cert_reqs"] == "required"  # verified unless told otherwise
            assert kwargs["ssl_check_hostname"] is True

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            (
                "rediss://h/0?ssl_cert_reqs=maybe",
                "'rediss://h/0?ssl_cert_reqs=maybe': ssl_cert_reqs must be required, "
                "optional or none, got 'maybe'",
            ),
            (
                "rediss://h/0?ssl_cert_reqs=",
                "'rediss://h/0?ssl_cert_reqs=': ssl_cert_reqs must be required, "
                "optional or none, got ''",
            ),
            (
                "rediss://h/0?ssl_check_hostname=perhaps",
                "'rediss://h/0?ssl_check_hostname=perhaps': ssl_check_hostname must be "
                "true or false, got 'perhaps'",
            ),
            (
                f"rediss://:{PASSWORD}@h/0?ssl_cert_reqs=bogus",
                "'rediss://:****@h/0?ssl_cert_reqs=bogus': ssl_cert_reqs must be required, "
                "optional or none, got 'bogus'",
            ),
        ],
    )
    def test_bad_tls_parameter(self, url: str, message: str) -> None:
        error = error_of(url)
        assert type(error) is ValueError
        assert str(error) == message

    @pytest.mark.parametrize(
        ("given", "mapped"),
        [(ssl.CERT_NONE, "none"), (ssl.CERT_OPTIONAL, "optional"), ("CERT_REQUIRED", "required")],
    )
    def test_redis_backend_use_ssl(self, given: Any, mapped: str) -> None:
        use_ssl = {"ssl_cert_reqs": given, "ssl_ca_certs": "/etc/ca.pem"}
        with Backend("rediss://h/0", options={"redis_backend_use_ssl": use_ssl}) as backend:
            kwargs = pool_kwargs(backend)
            assert (kwargs["ssl_cert_reqs"], kwargs["ssl_ca_certs"]) == (mapped, "/etc/ca.pem")

    def test_the_url_query_overrides_redis_backend_use_ssl(self) -> None:
        options = {"redis_backend_use_ssl": {"ssl_cert_reqs": "none"}}
        with Backend("rediss://h/0?ssl_cert_reqs=required", options=options) as backend:
            assert pool_kwargs(backend)["ssl_cert_reqs"] == "required"

    def test_redis_backend_use_ssl_turns_tls_on_for_redis_urls(self) -> None:
        # As in Celery: TLS settings are never silently ignored because of the scheme.
        options = {"redis_backend_use_ssl": {"ssl_cert_reqs": "CERT_REQUIRED"}}
        with Backend("redis://h:6380/2", options=options) as backend:
            assert connection_class(backend) is redis.SSLConnection
            kwargs = pool_kwargs(backend)
            assert (kwargs["ssl_cert_reqs"], kwargs["port"], kwargs["db"]) == ("required", 6380, 2)

    def test_empty_redis_backend_use_ssl_is_off(self) -> None:
        with Backend("redis://h/0", options={"redis_backend_use_ssl": {}}) as backend:
            assert connection_class(backend) is redis.Connection

    def test_redis_backend_use_ssl_on_sentinel(self) -> None:
        options = {
            **transport("", master_name="mymaster"),
            "redis_backend_use_ssl": {"ssl_cert_reqs": "none"},
        }
        with Backend("sentinel://127.0.0.1:26379/0", options=options) as backend:
            assert connection_class(backend) is SentinelManagedSSLConnection
            assert pool_kwargs(backend)["ssl_cert_reqs"] == "none"

    def test_redis_backend_use_ssl_on_cluster(self) -> None:
        # RedisCluster connects as it is built: the settings it is built from are checked.
        options = {"redis_backend_use_ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED}}
        settings = _options.parse(URL.parse("redis+cluster://h:7000"), options)
        assert settings.kind == "cluster"
        assert settings.connection["ssl"] is True
        assert settings.connection["ssl_cert_reqs"] == "required"

    @pytest.mark.parametrize(
        ("use_ssl", "error", "message"),
        [
            (True, TypeError, "redis_backend_use_ssl must be a dict, got True"),
            ("yes", TypeError, "redis_backend_use_ssl must be a dict, got 'yes'"),
            (
                {"ssl_verify": True},
                ValueError,
                "redis_backend_use_ssl must be a dict with keys among ['ssl_ca_certs', "
                "'ssl_cert_reqs', 'ssl_certfile', 'ssl_check_hostname', 'ssl_keyfile']",
            ),
            (
                {"ssl_cert_reqs": 7},
                ValueError,
                "'rediss://h/0': ssl_cert_reqs must be required, optional or none, got 7",
            ),
        ],
    )
    def test_bad_redis_backend_use_ssl(
        self, use_ssl: Any, error: type[Exception], message: str
    ) -> None:
        raised = error_of("rediss://h/0", redis_backend_use_ssl=use_ssl)
        assert type(raised) is error
        assert str(raised) == message


# --- Celery's redis_* options ------------------------------------------------------------


class TestOptions:
    def test_defaults(self) -> None:
        with Backend("redis://h/0") as backend:
            kwargs = pool_kwargs(backend)
            assert kwargs["socket_timeout"] == 120.0  # Celery's redis_socket_timeout
            assert kwargs["socket_connect_timeout"] == 5.0
            assert kwargs["socket_keepalive"] is False
            assert kwargs["health_check_interval"] == 25.0
            # redis-py retries nothing: the core's policy does (its defaults).
            assert kwargs["retry"]._retries == 0
            assert kwargs.get("retry_on_error") in (None, [])
            settings = backend.plugin.settings  # type: ignore[attr-defined]
            assert settings.retry == RetryPolicy()
            assert settings.retry_on_timeout is False
            assert settings.publish_max_bytes == 1024 * 1024
            pool = backend.plugin.client.connection_pool  # type: ignore[attr-defined]
            assert type(pool) is WaitingPool
            assert (pool.max_connections, pool.wait) == (100, 30.0)
            assert backend.plugin.keyprefix == ""  # type: ignore[attr-defined]

    def test_every_option_applied(self) -> None:
        options = {
            "redis_socket_timeout": 3,
            "redis_socket_connect_timeout": 1.5,
            "redis_retry_on_timeout": True,
            "redis_socket_keepalive": True,
            "redis_backend_health_check_interval": 10,
            "redis_username": "acl",
            "redis_max_connections": 7,
            **transport("app:", retry_policy={"max_retries": 5, "interval_max": 2.0}),
        }
        with Backend(f"redis://:{PASSWORD}@h/0", options=options) as backend:
            pool = backend.plugin.client.connection_pool  # type: ignore[attr-defined]
            kwargs = pool.connection_kwargs
            assert pool.max_connections == 7
            assert kwargs["socket_timeout"] == 3
            assert kwargs["socket_connect_timeout"] == 1.5
            assert kwargs["socket_keepalive"] is True
            assert kwargs["health_check_interval"] == 10
            assert (kwargs["username"], kwargs["password"]) == ("acl", PASSWORD)
            assert kwargs["retry"]._retries == 0
            settings = backend.plugin.settings  # type: ignore[attr-defined]
            assert settings.retry_on_timeout is True
            assert settings.retry == RetryPolicy(max_retries=5, interval_max=2.0)
            assert settings.health_check_interval == 10.0
            assert backend.plugin.keyprefix == "app:"  # type: ignore[attr-defined]

    def test_none_timeouts(self) -> None:
        options = {"redis_socket_timeout": None, "redis_socket_connect_timeout": None}
        with Backend("redis://h/0", options=options) as backend:
            assert pool_kwargs(backend)["socket_timeout"] is None
            assert pool_kwargs(backend)["socket_connect_timeout"] is None

    def test_a_thread_waits_for_a_free_connection(
        self, redis_url: str, keyprefix: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_options, "POOL_WAIT", 0.3)
        options = {"redis_max_connections": 1, **transport(keyprefix)}
        with Backend(redis_url, options=options) as backend:
            pool = backend.plugin.client.connection_pool  # type: ignore[attr-defined]
            held = pool.get_connection()
            with pytest.raises(
                BackendUnavailable, match=r"no connection came free within 0\.30 s \(all 1 in use\)"
            ):
                backend.mark_as_done("t", 1)  # waited POOL_WAIT, then gave up
            release = threading.Timer(0.1, pool.release, [held])
            release.start()
            storer = Worker(lambda: backend.mark_as_done("t", 1))
            storer.start()
            assert storer.finish() is True  # it waited for the released connection
            release.join()
            assert backend.get_result("t") == 1

    def test_a_thousand_busy_threads_share_the_pool(self, tmp_path: Path) -> None:
        """More threads than connections: they queue for one instead of failing. On a
        server of the test's own: its client count is this backend's alone (on a shared
        one, other processes' connections come and go meanwhile)."""
        threads = 1000
        own = RedisServer(tmp_path / "redis").start()
        server = own.client()
        try:
            before = len(server.client_list())
            with Backend(own.url) as backend:
                backend.mark_as_done("t", "v")
                start = threading.Barrier(threads)

                def read() -> str:
                    start.wait()
                    return str(backend.get_result("t"))

                old_stack_size = threading.stack_size(256 * 1024)
                try:
                    workers = [Worker(read) for _ in range(threads)]
                    for worker in workers:
                        worker.start()
                finally:
                    threading.stack_size(old_stack_size)
                assert [w.finish() for w in workers] == ["v"] * threads
                assert len(server.client_list()) - before <= 100
        finally:
            server.close()
            own.stop()

    @pytest.mark.parametrize(
        ("option", "value", "error", "message"),
        [
            (
                "redis_socket_timeout",
                "3",
                TypeError,
                "redis_socket_timeout must be a number of seconds or None, got '3'",
            ),
            (
                "redis_socket_timeout",
                True,
                TypeError,
                "redis_socket_timeout must be a number of seconds or None, got True",
            ),
            (
                "redis_socket_timeout",
                -1,
                ValueError,
                "redis_socket_timeout must not be negative, got -1",
            ),
            (
                "redis_socket_connect_timeout",
                [5],
                TypeError,
                "redis_socket_connect_timeout must be a number of seconds or None, got [5]",
            ),
            (
                "redis_backend_health_check_interval",
                "25",
                TypeError,
                "redis_backend_health_check_interval must be a number of seconds or None, got '25'",
            ),
            (
                "redis_backend_health_check_interval",
                -0.5,
                ValueError,
                "redis_backend_health_check_interval must not be negative, got -0.5",
            ),
            (
                "redis_retry_on_timeout",
                "yes",
                TypeError,
                "redis_retry_on_timeout must be True or False, got 'yes'",
            ),
            (
                "redis_socket_keepalive",
                1,
                TypeError,
                "redis_socket_keepalive must be True or False, got 1",
            ),
            (
                "redis_retry_on_timeout",
                None,
                TypeError,
                "redis_retry_on_timeout must be True or False, got None",
            ),
            (
                "redis_max_connections",
                "10",
                TypeError,
                "redis_max_connections must be an int, got '10'",
            ),
            (
                "redis_max_connections",
                2.0,
                TypeError,
                "redis_max_connections must be an int, got 2.0",
            ),
            (
                "redis_max_connections",
                True,
                TypeError,
                "redis_max_connections must be an int, got True",
            ),
            (
                "redis_max_connections",
                0,
                ValueError,
                "redis_max_connections must be positive, got 0",
            ),
            ("redis_username", 5, TypeError, "redis_username must be a str, got int"),
            (
                "result_backend_transport_options",
                "global_keyprefix=x",
                TypeError,
                "result_backend_transport_options must be a dict, got 'global_keyprefix=x'",
            ),
        ],
    )
    def test_wrong_type_or_value(
        self, option: str, value: Any, error: type[Exception], message: str
    ) -> None:
        raised = error_of("redis://h/0", **{option: value})
        assert type(raised) is error
        assert str(raised) == message

    @pytest.mark.parametrize(
        ("option", "message"),
        [
            ("redis_socket_timout", "'redis_socket_timout'; did you mean 'redis_socket_timeout'?"),
            (
                "redis_max_connection",
                "'redis_max_connection'; did you mean 'redis_max_connections'?",
            ),
            (
                "result_backend_transport_option",
                "'result_backend_transport_option'; did you mean "
                "'result_backend_transport_options'?",
            ),
            ("colour", "'colour'"),
        ],
    )
    def test_unknown_option(self, option: str, message: str) -> None:
        # The core's check, from the plugin's option_names: before the plugin is built.
        raised = error_of("redis://h/0", **{option: 1})
        assert type(raised) is ValueError
        assert str(raised) == (
            "redis://h/0: plugin resultstore_redis.RedisBackend does not take option "
            f"{message} (it takes: {KNOWN_OPTIONS})"
        )

    def test_unknown_transport_option(self) -> None:
        raised = error_of("redis://h/0", **transport("p:", visibility_timeout=10, zz=1))
        assert type(raised) is ValueError
        assert str(raised) == (
            "result_backend_transport_options: unknown key(s) ['visibility_timeout', 'zz']; "
            f"known: {KNOWN_TRANSPORT}"
        )

    @pytest.mark.parametrize(
        ("url", "transport_options", "error", "message"),
        [
            (
                "redis://h/0",
                {"global_keyprefix": 5},
                TypeError,
                "global_keyprefix must be a str, got 5",
            ),
            (
                "sentinel://h:26379",
                {"master_name": "m", "sentinel_kwargs": ["password"]},
                TypeError,
                "sentinel_kwargs must be a dict, got ['password']",
            ),
            (
                "sentinel://h:26379",
                {},
                ValueError,
                "'sentinel://h:26379': sentinel:// needs "
                "result_backend_transport_options={'master_name': ...}",
            ),
            (
                "sentinel://h:26379",
                {"master_name": ""},
                ValueError,
                "'sentinel://h:26379': sentinel:// needs "
                "result_backend_transport_options={'master_name': ...}",
            ),
        ],
    )
    def test_bad_transport_option(
        self, url: str, transport_options: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        raised = error_of(url, result_backend_transport_options=transport_options)
        assert type(raised) is error
        assert str(raised) == message

    def test_cluster_has_only_db_zero(self) -> None:
        raised = error_of("redis+cluster://h:7000/1")
        assert type(raised) is ValueError
        assert str(raised) == "'redis+cluster://h:7000/1': Redis Cluster has only database 0"


class TestRetryPolicy:
    @pytest.mark.parametrize(
        ("policy", "expected"),
        [
            ({}, RetryPolicy(3, 0.05, None, 1.0, 10.0)),
            ({"max_retries": 0}, RetryPolicy(0, 0.05, None, 1.0, 10.0)),
            (
                {"max_retries": 10, "interval_start": 0, "interval_max": 0.5, "timeout": 2},
                RetryPolicy(10, 0, None, 0.5, 2),
            ),
        ],
    )
    def test_valid(self, policy: dict[str, Any], expected: RetryPolicy) -> None:
        with Backend("redis://h/0", options=transport("", retry_policy=policy)) as backend:
            assert backend.plugin.settings.retry == expected  # type: ignore[attr-defined]
            assert pool_kwargs(backend)["retry"]._retries == 0  # redis-py's own: none

    @pytest.mark.parametrize(
        ("policy", "message"),
        [
            (
                [3],
                f"retry_policy must be a dict with keys among {RETRY_KEYS}, got [3]",
            ),
            (
                {"interval_step": -0.2},
                "retry_policy interval_step must be a number of seconds >= 0, got -0.2",
            ),
            (
                {"interval_step": "1"},
                "retry_policy interval_step must be a number of seconds >= 0, got '1'",
            ),
            ({"max_retries": -1}, "retry_policy max_retries must be an int >= 0, got -1"),
            ({"max_retries": "3"}, "retry_policy max_retries must be an int >= 0, got '3'"),
            ({"max_retries": True}, "retry_policy max_retries must be an int >= 0, got True"),
            ({"max_retries": 1.5}, "retry_policy max_retries must be an int >= 0, got 1.5"),
            (
                {"interval_start": "0.1"},
                "retry_policy interval_start must be a number of seconds >= 0, got '0.1'",
            ),
            (
                {"interval_max": None},
                "retry_policy interval_max must be a number of seconds >= 0, got None",
            ),
            (
                {"interval_start": 2, "interval_max": 1},
                "retry_policy needs interval_start <= interval_max, got 2 and 1",
            ),
            (
                {"interval_start": -0.1},
                "retry_policy interval_start must be a number of seconds >= 0, got -0.1",
            ),
            (
                {"timeout": -1},
                "retry_policy timeout must be a number of seconds >= 0, got -1",
            ),
        ],
    )
    def test_invalid(self, policy: Any, message: str) -> None:
        raised = error_of("redis://h/0", **transport("", retry_policy=policy))
        assert type(raised) is ValueError
        assert str(raised) == message

    def test_celery_interval_step_means_linear_backoff(self) -> None:
        # Celery's default policy shape: start, start + step, ... capped at interval_max.
        policy = {"max_retries": 5, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
        with Backend("redis://127.0.0.1:6379/0", options=transport("", retry_policy=policy)) as b:
            retry = b.plugin.settings.retry  # type: ignore[attr-defined]
        assert list(retry.delays()) == [0, 0.2, 0.4, 0.5, 0.5]

    def test_bounded_then_a_clear_error(self) -> None:
        # Nothing listens on port 1: the store is retried max_retries times, then fails.
        options = {
            "redis_socket_connect_timeout": 0.5,
            **transport("", retry_policy={"max_retries": 2, "interval_start": 0.01}),
        }
        with Backend(f"redis://:{PASSWORD}@127.0.0.1:1/0", options=options) as backend:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as raised:
                backend.mark_as_done("t", 1)
            assert time.monotonic() - started < 5
        message = str(raised.value)
        assert re.fullmatch(
            re.escape(
                "storing celery-task-meta-t failed on redis://:****@127.0.0.1:1/0 after 3 "
                "attempts in "
            )
            + r"0\.\d\d s, no retries left \(max_retries=2\): "
            + re.escape(
                "ConnectionError: Error 111 connecting to 127.0.0.1:1. Connection refused."
            ),
            message,
        ), message
        assert PASSWORD not in message


# --- global_keyprefix ------------------------------------------------------------------------


class TestGlobalKeyprefix:
    @pytest.mark.parametrize(
        ("suffix", "applied"),
        [
            (":", ":"),
            ("-", "-"),
            (".", "."),
            ("_", "_"),
            ("app", "app_"),  # Celery appends '_' to a prefix without a separator
        ],
    )
    def test_every_key(self, redis_url: str, keyprefix: str, suffix: str, applied: str) -> None:
        given = keyprefix.rstrip(":") + suffix
        prefix = keyprefix.rstrip(":") + applied
        with Backend(redis_url, options=transport(given)) as backend:
            assert backend.plugin.keyprefix == prefix  # type: ignore[attr-defined]
            backend.mark_as_done("done", 1)
            backend.revoke("revoked")
            GroupResult("grp", [AsyncResult("done", backend)], backend).save()
            assert AsyncResult("done", backend).get(timeout=5) == 1
            assert backend.is_revoked("revoked")
            restored = backend.restore_group("grp")
            assert restored is not None
            assert [r.id for r in restored] == ["done"]
            raw = redis.Redis.from_url(redis_url)
            try:
                keys = sorted(k.decode() for k in raw.scan_iter(match=f"{prefix}*"))
                assert keys == [
                    f"{prefix}celery-task-meta-done",
                    f"{prefix}celery-task-meta-revoked",
                    f"{prefix}celery-taskset-meta-grp",
                    f"{prefix}resultstore-revoked-revoked",
                ]
                assert not raw.exists("celery-task-meta-done", "celery-taskset-meta-grp")
                assert backend.forget("revoked")
                assert backend.delete_group("grp")
                assert sorted(k.decode() for k in raw.scan_iter(match=f"{prefix}*")) == [
                    f"{prefix}celery-task-meta-done"
                ]
                raw.delete(f"{prefix}celery-task-meta-done")
            finally:
                raw.close()

    def test_two_prefixes_do_not_see_each_other(self, redis_url: str, keyprefix: str) -> None:
        with (
            Backend(redis_url, options=transport(f"{keyprefix}a:")) as a,
            Backend(redis_url, options=transport(f"{keyprefix}b:")) as b,
        ):
            a.mark_as_done("same-id", "from a")
            assert not b.exists("same-id")
            b.mark_as_done("same-id", "from b")
            assert a.get_result("same-id") == "from a"
            assert b.get_result("same-id") == "from b"


# --- from_config --------------------------------------------------------------------------


class TestFromConfig:
    def test_celery_settings(self, redis_url: str, keyprefix: str) -> None:
        config = {
            "result_backend": redis_url,
            "result_expires": 60,
            "result_extended": True,
            "redis_socket_timeout": 3,
            "redis_max_connections": 4,
            **transport(keyprefix, retry_policy={"max_retries": 1}),
        }
        with Backend.from_config(config) as backend:
            assert backend.expires == 60.0
            pool = backend.plugin.client.connection_pool  # type: ignore[attr-defined]
            assert pool.connection_kwargs["socket_timeout"] == 3
            assert pool.max_connections == 4
            assert backend.plugin.settings.retry.max_retries == 1  # type: ignore[attr-defined]
            backend.mark_as_done("cfg", "configured")
            assert AsyncResult("cfg", backend).get(timeout=5) == "configured"
        raw = redis.Redis.from_url(redis_url)
        try:
            assert 0 < raw.ttl(f"{keyprefix}celery-task-meta-cfg") <= 60
        finally:
            raw.close()

    def test_unknown_transport_key_is_the_plugins_error(self, redis_url: str) -> None:
        config = {"result_backend": redis_url, **transport("p:", bogus=1)}
        with pytest.raises(ValueError, match=r"^result_backend_transport_options") as raised:
            Backend.from_config(config)
        assert str(raised.value) == (
            f"result_backend_transport_options: unknown key(s) ['bogus']; known: {KNOWN_TRANSPORT}"
        )


# --- passwords -----------------------------------------------------------------------------


class TestPasswordsNeverShown:
    URL = f"redis://user:{PASSWORD}@127.0.0.1:6379/0"

    def test_reprs(self) -> None:
        with Backend(self.URL) as backend:
            for text in (
                repr(backend),
                str(backend),
                repr(backend.url),
                repr(backend.plugin.settings),  # type: ignore[attr-defined]
                repr(backend.plugin.client),  # type: ignore[attr-defined]
            ):
                assert PASSWORD not in text, text
            assert repr(backend) == (
                "<Backend 'redis://user:****@127.0.0.1:6379/0' "
                "plugin=resultstore_redis.RedisBackend>"
            )

    @pytest.mark.parametrize(
        ("url", "options"),
        [
            (URL, {"redis_socket_timout": 1}),
            (URL, {"redis_socket_timeout": "x"}),
            (URL, transport("p:", bogus=1)),
            (URL, transport("p:", retry_policy={"max_retries": -1})),
            (f"{URL}?colour=blue", {}),
            (f"redis://user:{PASSWORD}@h/x", {}),
            (f"rediss://user:{PASSWORD}@h/0?ssl_cert_reqs=x", {}),
            (f"sentinel://user:{PASSWORD}@h:26379", {}),
            (f"unix://user:{PASSWORD}@", {}),
        ],
    )
    def test_errors(self, url: str, options: dict[str, Any]) -> None:
        raised = error_of(url, **options)
        assert PASSWORD not in str(raised)
        assert PASSWORD not in repr(raised)
