"""URL parsing and password masking: the URL object, reprs and every error message."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest

import resultstore
from resultstore import URL, Backend, BackendNotFound, InvalidURL, mask_password

from ..doubles import DictPlugin

SECRET = "hunter2"
NO_SCHEME_HINT = "expected '<scheme>://...', e.g. 'memory://' or 'redis://localhost:6379/0'"


class FailingPlugin:
    """A plugin whose constructor fails the way a connection refused would."""

    def __init__(self, config: resultstore.BackendConfig) -> None:
        raise RuntimeError("connection refused")


@pytest.fixture
def anyurl() -> Iterator[str]:
    resultstore.register_backend("anyurl", DictPlugin)
    yield "anyurl"
    resultstore.unregister_backend("anyurl")


@pytest.fixture
def failing() -> Iterator[str]:
    resultstore.register_backend("failing", FailingPlugin)
    yield "failing"
    resultstore.unregister_backend("failing")


def _installed() -> str:
    return ", ".join(resultstore.installed_schemes())


# --- parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "memory://",
            ("memory", None, None, None, None, "", ()),
        ),
        (
            "memory://name",
            ("memory", None, None, "name", None, "", ()),
        ),
        (
            "redis://:secret@h:6379/0",
            ("redis", None, "secret", "h", 6379, "/0", ()),
        ),
        (
            "redis://user:secret@h/0",
            ("redis", "user", "secret", "h", None, "/0", ()),
        ),
        (
            "REDIS://User:Pw@Host:1/2?a=b&c=",
            ("redis", "User", "Pw", "host", 1, "/2", (("a", "b"), ("c", ""))),
        ),
        (
            "db+postgresql://u:p%40ss@h/db",
            ("db+postgresql", "u", "p@ss", "h", None, "/db", ()),
        ),
        (
            "redis://u%3Ax:s%3Bc@h/0",
            ("redis", "u:x", "s;c", "h", None, "/0", ()),
        ),
        (
            "redis://user:pa:ss@h/0",
            ("redis", "user", "pa:ss", "h", None, "/0", ()),
        ),
        (
            "redis://:secret@[::1]:6379/0",
            ("redis", None, "secret", "::1", 6379, "/0", ()),
        ),
        (
            "sentinel://:pw@h1:26379;sentinel://:pw@h2:26379/0",
            ("sentinel", None, "pw", "h1", 26379, "", ()),
        ),
        (
            "redis://h/0?password=x&ssl_cert_reqs=required",
            (
                "redis",
                None,
                None,
                "h",
                None,
                "/0",
                (("password", "x"), ("ssl_cert_reqs", "required")),
            ),
        ),
    ],
)
def test_parse_parts(url: str, expected: tuple[Any, ...]) -> None:
    parsed = URL.parse(url)
    got = (
        parsed.scheme,
        parsed.username,
        parsed.password,
        parsed.host,
        parsed.port,
        parsed.path,
        parsed.query,
    )
    assert got == expected
    assert parsed.raw == url


def test_parse_returns_a_url_unchanged() -> None:
    parsed = URL.parse("memory://x")
    assert URL.parse(parsed) is parsed


def test_url_is_immutable() -> None:
    parsed = URL.parse("redis://:secret@h/0")
    with pytest.raises(dataclasses.FrozenInstanceError, match=re.escape("cannot assign to field")):
        parsed.password = "other"  # type: ignore[misc]
    assert parsed.password == "secret"


def test_equal_urls_compare_equal() -> None:
    assert URL.parse("redis://h/0") == URL.parse("redis://h/0")
    assert URL.parse("redis://h/0") != URL.parse("redis://h/1")


# --- masking ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:secret@h:6379/0", "redis://:****@h:6379/0"),
        ("redis://user:secret@h/0", "redis://user:****@h/0"),
        ("db+postgresql://u:p%40ss@h/db", "db+postgresql://u:****@h/db"),
        (
            "sentinel://:pw@h1:26379;sentinel://:pw@h2:26379/0",
            "sentinel://:****@h1:26379;sentinel://:****@h2:26379/0",
        ),
        ("redis://h/0?password=x", "redis://h/0?password=****"),
        ("redis://h/0?foo=1&PASSWORD=x&bar=2", "redis://h/0?foo=1&PASSWORD=****&bar=2"),
        (
            "rediss://:secret@h/0?ssl_cert_reqs=required&password=abc",
            "rediss://:****@h/0?ssl_cert_reqs=required&password=****",
        ),
        ("redis://user:pa:ss@h/0", "redis://user:****@h/0"),
        ("redis://:secret@[::1]:6379/0", "redis://:****@[::1]:6379/0"),
        ("redis://user@h/0", "redis://user@h/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("memory://", "memory://"),
    ],
)
def test_masking(url: str, masked: str) -> None:
    parsed = URL.parse(url)
    assert parsed.masked == masked
    assert str(parsed) == masked
    assert repr(parsed) == f"URL({masked!r})"
    assert mask_password(url) == masked
    assert parsed.raw == url  # the plugin still gets the real URL to connect with


def test_sentinel_form_masks_every_password() -> None:
    url = f"sentinel://:{SECRET}@h1:26379;sentinel://:{SECRET}@h2:26379/0"
    shown = str(URL.parse(url))
    assert SECRET not in shown
    assert shown.count("****") == 2


def test_password_with_a_raw_at_sign_is_masked_whole() -> None:
    parsed = URL.parse("redis://:p@ss@h/0")
    assert parsed.password == "p@ss"
    assert str(parsed) == "redis://:****@h/0"


# --- the password never leaves through reprs or errors --------------------------------


def test_backend_repr_masks_the_password(anyurl: str) -> None:
    with Backend(f"{anyurl}://:{SECRET}@h:1/0", expires=None) as backend:
        expected = f"<Backend '{anyurl}://:****@h:1/0' plugin={DictPlugin.__module__}.DictPlugin>"
        assert repr(backend) == expected
        assert SECRET not in repr(backend.url)
        assert SECRET not in repr(backend.config)
        # The plugin can still connect with it.
        assert backend.url.password == SECRET
        assert backend.config.url.raw == f"{anyurl}://:{SECRET}@h:1/0"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            f"redis://:{SECRET}@h:6379/0",
            "no resultstore backend for scheme 'redis' in 'redis://:****@h:6379/0'; "
            "install it with: pip install resultstore-redis; installed schemes: {installed}",
        ),
        (
            f"db+postgresql://u:{SECRET}@h/db",
            "no resultstore backend for scheme 'db+postgresql' in 'db+postgresql://u:****@h/db'; "
            'install it with: pip install "resultstore-db[postgresql]"; '
            "installed schemes: {installed}",
        ),
        (
            f"sentinel://:{SECRET}@h1:26379;sentinel://:{SECRET}@h2:26379/0",
            "no resultstore backend for scheme 'sentinel' in "
            "'sentinel://:****@h1:26379;sentinel://:****@h2:26379/0'; "
            "install it with: pip install resultstore-redis; installed schemes: {installed}",
        ),
        (
            f"nosuchscheme://h/0?password={SECRET}",
            "no resultstore backend for scheme 'nosuchscheme' in "
            "'nosuchscheme://h/0?password=****'; installed schemes: {installed}",
        ),
    ],
)
def test_resolve_errors_mask_the_password(first_party_hidden: None, url: str, message: str) -> None:
    with pytest.raises(BackendNotFound) as info:
        resultstore.resolve(url)
    assert str(info.value) == message.format(installed=_installed())
    assert SECRET not in str(info.value)
    with pytest.raises(BackendNotFound) as info:
        Backend(url)
    assert str(info.value) == message.format(installed=_installed())


def test_plugin_start_failure_masks_the_password(failing: str) -> None:
    with pytest.raises(resultstore.BackendLoadError) as info:
        Backend(f"{failing}://user:{SECRET}@h/0")
    assert str(info.value) == (
        f"the plugin for '{failing}://user:****@h/0' "
        f"(register_backend('failing', '{__name__}:FailingPlugin')) failed to start: "
        "RuntimeError: connection refused"
    )
    assert isinstance(info.value.__cause__, RuntimeError)


def test_memory_plugin_refuses_a_password_without_showing_it() -> None:
    with pytest.raises(ValueError, match=r"\Amemory") as info:
        Backend(f"memory://:{SECRET}@x")
    assert str(info.value) == (
        "memory:// takes only a store name (memory://NAME), got 'memory://:****@x'"
    )


def test_bad_port_error_masks_the_password() -> None:
    with pytest.raises(InvalidURL) as info:
        URL.parse(f"redis://:{SECRET}@h:bad/0")
    assert str(info.value) == (
        "backend URL 'redis://:****@h:bad/0' has a bad port (is a '#', '?' or '/' in the password?)"
    )


@pytest.mark.parametrize("password", ["pa#ss", "p?ss", "pa/ss", "a#b?c/d@e"])
def test_passwords_urllib_misreads_are_never_shown(password: str) -> None:
    url = f"redis://user:{password}@host:6379/0"
    assert mask_password(url) == "redis://user:****@host:6379/0"
    with pytest.raises(InvalidURL) as info:
        URL.parse(url)
    assert str(info.value) == (
        "backend URL 'redis://user:****@host:6379/0' has a bad port "
        "(is a '#', '?' or '/' in the password?)"
    )


def test_password_with_a_semicolon_is_parsed_and_masked_whole() -> None:
    url = URL.parse("redis://:se;cret@h/0")
    assert (url.password, url.host, url.path) == ("se;cret", "h", "/0")
    assert str(url) == "redis://:****@h/0"


def test_no_scheme_error_hides_a_password() -> None:
    with pytest.raises(InvalidURL) as info:
        URL.parse(f"redis:/:{SECRET}@h:6379/0")
    assert SECRET not in str(info.value)


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (6379, "backend URL must be a str, got int"),
        (None, "backend URL must be a str, got NoneType"),
        (b"memory://", "backend URL must be a str, got bytes"),
    ],
)
def test_non_str_url(value: object, message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)) as info:
        URL.parse(value)
    assert str(info.value) == message
    assert not isinstance(info.value, InvalidURL)
    with pytest.raises(TypeError, match=re.escape(message)):
        Backend(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_empty_url(value: str) -> None:
    with pytest.raises(InvalidURL) as info:
        URL.parse(value)
    assert str(info.value) == "backend URL is empty; expected e.g. 'memory://'"


@pytest.mark.parametrize(
    "value", ["localhost:6379", "redis:/h/0", "9redis://h", "re dis://h", "://h", " memory://"]
)
def test_no_valid_scheme(value: str) -> None:
    with pytest.raises(InvalidURL) as info:
        URL.parse(value)
    assert str(info.value) == f"backend URL {value!r} has no valid scheme; {NO_SCHEME_HINT}"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("redis://h:notaport/0", "Port could not be cast to integer value as 'notaport'"),
        ("redis://h:99999/0", "Port out of range 0-65535"),
    ],
)
def test_bad_port(value: str, reason: str) -> None:
    with pytest.raises(InvalidURL) as info:
        URL.parse(value)
    assert str(info.value) == f"backend URL {value!r} has a bad port: {reason}"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


def test_unbalanced_ipv6_bracket_is_invalid_url() -> None:
    with pytest.raises(InvalidURL, match=re.escape("backend URL 'redis://[::1/0'")):
        URL.parse("redis://[::1/0")


def test_invalid_url_is_a_value_error() -> None:
    assert issubclass(InvalidURL, ValueError)
    assert issubclass(InvalidURL, resultstore.ResultStoreError)
    with pytest.raises(ValueError, match=re.escape("backend URL is empty")):
        URL.parse("")


# --- with_scheme --------------------------------------------------------------------


def test_with_scheme() -> None:
    outer = URL.parse("db+postgresql://u:p%40ss@h:5432/db?sslmode=require")
    inner = outer.with_scheme("postgresql")
    assert inner.raw == "postgresql://u:p%40ss@h:5432/db?sslmode=require"
    assert inner.scheme == "postgresql"
    assert (inner.username, inner.password, inner.host, inner.port, inner.path) == (
        "u",
        "p@ss",
        "h",
        5432,
        "/db",
    )
    assert inner.query == (("sslmode", "require"),)
    assert str(inner) == "postgresql://u:****@h:5432/db?sslmode=require"
    # The original is unchanged.
    assert outer.scheme == "db+postgresql"
    assert outer.raw == "db+postgresql://u:p%40ss@h:5432/db?sslmode=require"


def test_with_scheme_lowercases_and_validates() -> None:
    url = URL.parse("redis://:pw@h/0")
    assert url.with_scheme("REDISS").scheme == "rediss"
    with pytest.raises(InvalidURL) as info:
        url.with_scheme("")
    assert str(info.value) == f"backend URL '://:****@h/0' has no valid scheme; {NO_SCHEME_HINT}"


@pytest.mark.parametrize(
    ("url", "shown", "hosts", "joined"),
    [
        (
            "nats://h1:4222,h2:4222/B",
            "nats://h1:4222,h2:4222/B",
            "h1:4222,h2:4222",
            "nats://h1:4222/B;nats://h2:4222/B",
        ),
        (  # no ports: urllib would take "h1,h2" for one host name
            f"nats://u:{SECRET}@h1,h2,h3/B?x=1",
            "nats://u:****@h1,h2,h3/B?x=1",
            "h1,h2,h3",
            "nats://h1/B;nats://h2/B;nats://h3/B",
        ),
    ],
)
def test_several_hosts_are_refused_saying_how_a_plugin_takes_them(
    url: str, shown: str, hosts: str, joined: str
) -> None:
    expected = (
        f"backend URL '{shown}' names several hosts ({hosts}) but a URL holds one; a plugin "
        f"that takes several reads them from URLs joined by ';' ('{joined}': Celery's "
        "sentinel form, the rest in URL.raw) or from a query parameter of its own"
    )
    with pytest.raises(InvalidURL, match=f"^{re.escape(expected)}$"):
        URL.parse(url)
    parsed = URL.parse(joined)  # the form it suggests parses, the first host in the fields
    assert (parsed.host, parsed.path, parsed.raw) == ("h1", "/B", joined)
