"""Backend URLs: parsed once, shown only with the password masked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from ._errors import InvalidURL

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
# Celery's sentinel form joins several URLs with ';' (a ';' inside a password is not one).
_NEXT_URL = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.\-]*://)")
# user:password@ in any URL of the string. The password runs to the last '@' of its
# URL, whatever it holds ('#', '?' and '/' included, which urlsplit would misread):
# masking a little too much is safe, showing part of a password is not.
_USERINFO_PASSWORD = re.compile(
    r"(?P<head>://[^/@;?#:]*:)(?P<secret>(?:(?!;[A-Za-z][A-Za-z0-9+.\-]*://).)*)@"
)
# What looks like ":secret@" in text that is not even a URL (a mistyped "://").
_LOOSE_PASSWORD = re.compile(r":[^:@/]*@")
# password=... in a query string.
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd)=)(?P<secret>[^&;#]*)", re.I)

MASK = "****"


def mask_password(url: str) -> str:
    """Return ``url`` with every password replaced by ``****``."""
    masked = _USERINFO_PASSWORD.sub(lambda m: m["head"] + MASK + "@", url)
    return _QUERY_PASSWORD.sub(lambda m: m["head"] + MASK, masked)


@dataclass(frozen=True)
class URL:
    """An immutable, parsed backend URL.

    ``str()`` and ``repr()`` never show the password; :attr:`raw` holds the
    original text for the plugin that needs to connect.
    """

    raw: str = field(repr=False)
    scheme: str
    username: str | None = field(repr=False)
    password: str | None = field(repr=False)
    host: str | None = field(repr=False)
    port: int | None = field(repr=False)
    path: str = field(repr=False)
    query: tuple[tuple[str, str], ...] = field(repr=False)

    @classmethod
    def parse(cls, url: object) -> URL:
        if isinstance(url, URL):
            return url
        if not isinstance(url, str):
            raise TypeError(f"backend URL must be a str, got {type(url).__name__}")
        if not url.strip():
            raise InvalidURL("backend URL is empty; expected e.g. 'memory://'")
        scheme, sep, rest = url.partition("://")
        if not sep or not _SCHEME.match(scheme):
            shown = _LOOSE_PASSWORD.sub(":" + MASK + "@", mask_password(url))
            raise InvalidURL(
                f"backend URL {shown!r} has no valid scheme; "
                "expected '<scheme>://...', e.g. 'memory://' or 'redis://localhost:6379/0'"
            )
        # Only the first URL of a ';'-joined list (Celery's sentinel form) is split here;
        # the plugin reads the rest from ``raw``.
        try:
            parts = urlsplit(f"{scheme}://{_NEXT_URL.split(rest, maxsplit=1)[0]}")
        except ValueError as exc:  # e.g. "Invalid IPv6 URL"; the text holds no part of the URL
            raise InvalidURL(f"backend URL {mask_password(url)!r} is malformed: {exc}") from None
        hosts = parts.netloc.rpartition("@")[2]
        if "," in hosts:
            # One host per URL: the fields below have room for one. Celery's form for
            # several (its sentinel URLs) joins whole URLs with ';', which parses.
            joined = ";".join(f"{scheme}://{host}{parts.path}" for host in hosts.split(","))
            raise InvalidURL(
                f"backend URL {mask_password(url)!r} names several hosts ({hosts}) but a URL "
                "holds one; a plugin that takes several reads them from URLs joined by ';' "
                f"({joined!r}: Celery's sentinel form, the rest in URL.raw) or from a query "
                "parameter of its own"
            )
        try:
            port = parts.port
        except ValueError as exc:
            masked = mask_password(url)
            # urllib quotes what it took for the port: with a secret in the URL (a '#'
            # in a password moves urllib's split) that could be part of the password.
            reason = f": {exc}" if masked == url else " (is a '#', '?' or '/' in the password?)"
            raise InvalidURL(f"backend URL {masked!r} has a bad port{reason}") from None
        return cls(
            raw=url,
            scheme=scheme.lower(),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            host=parts.hostname,
            port=port,
            path=parts.path,
            query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
        )

    @property
    def masked(self) -> str:
        return mask_password(self.raw)

    def with_scheme(self, scheme: str) -> URL:
        """The same URL under another scheme (``db+postgresql://`` -> ``postgresql://``)."""
        return URL.parse(scheme + self.raw[self.raw.index("://") :])

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"URL({self.masked!r})"
