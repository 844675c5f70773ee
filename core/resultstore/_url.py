"""Backend URLs: parsed once, shown only with the password masked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from ._errors import InvalidURL

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
# user:password@ in any URL of the string (Celery's sentinel form joins several with ';').
_USERINFO_PASSWORD = re.compile(r"(?P<head>://[^/@;?#]*?:)(?P<secret>[^/@;?#]*)@")
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
            raise InvalidURL(
                f"backend URL {mask_password(url)!r} has no valid scheme; "
                "expected '<scheme>://...', e.g. 'memory://' or 'redis://localhost:6379/0'"
            )
        # Only the first URL of a ';'-joined list (Celery's sentinel form) is split here;
        # the plugin reads the rest from ``raw``.
        parts = urlsplit(f"{scheme}://{rest.split(';', 1)[0]}")
        try:
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(f"backend URL {mask_password(url)!r} has a bad port: {exc}") from None
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
