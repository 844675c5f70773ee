"""From a URL scheme to a plugin factory: explicit registrations, then entry points.

Nothing is imported until a scheme is asked for, and then only its own entry
point, so ``memory://`` never imports redis or sqlalchemy.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ._errors import AmbiguousBackend, BackendLoadError, BackendNotFound
from ._url import URL

GROUP = "resultstore.backends"

# First-party schemes and the distribution that serves them, for "pip install ..." hints.
KNOWN_DISTRIBUTIONS = {
    "memory": "resultstore-memory",
    "redis": "resultstore-redis",
    "rediss": "resultstore-redis",
    "redis+socket": "resultstore-redis",
    "unix": "resultstore-redis",
    "sentinel": "resultstore-redis",
    "redis+cluster": "resultstore-redis",
    "db": "resultstore-db",
    "database": "resultstore-db",
}

# Where a first-party plugin's URL needs a driver, the extra of its distribution that
# installs it, by the dialect after "db+".
_DB_EXTRAS = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}
# SQLAlchemy's dialects: their URLs are the db plugin's once "db+" is put in front.
_SQL_DIALECTS = frozenset(
    {"postgresql", "postgres", "mysql", "mariadb", "sqlite", "oracle", "mssql"}
)

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*$")

PluginFactory = Callable[..., Any]


@dataclass(frozen=True)
class Resolved:
    """The outcome of resolving a URL: which plugin, from where, and its inner URL."""

    scheme: str
    factory: PluginFactory
    source: str  # "resultstore-memory 0.1.0" or "register_backend('x', 'pkg.mod:Obj')"
    inner_url: URL | None

    @property
    def option_names(self) -> frozenset[str] | None:
        """The backend options the plugin reads (its ``option_names``), ``None`` if it does
        not say: a host forwards exactly these of its settings."""
        from ._plugins import declared_option_names  # _plugins imports hook specs

        return declared_option_names(self.factory)


_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    # Another thread of the parent may have held it at fork time: in the child nobody
    # ever would release it.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)
_explicit: dict[str, str | PluginFactory] = {}
_cache: dict[str, tuple[PluginFactory, str]] = {}


def register_backend(scheme: str, target: str | PluginFactory) -> None:
    """Serve ``scheme`` with ``target``: a ``"package.module:Object"`` string (imported
    when first used) or the plugin class itself. Overrides installed entry points."""
    if not isinstance(scheme, str) or not _SCHEME.match(scheme):
        raise ValueError(
            f"scheme must be lowercase letters, digits, '+', '-' or '.', starting with a "
            f"letter; got {scheme!r}"
        )
    if isinstance(target, str):
        if not _TARGET.match(target):
            raise ValueError(f"target must look like 'package.module:Object', got {target!r}")
    elif not callable(target):
        raise TypeError(
            f"target must be a 'package.module:Object' string or a class, got {target!r}"
        )
    with _lock:
        _explicit[scheme] = target
        _cache.pop(scheme, None)


def unregister_backend(scheme: str) -> None:
    """Undo :func:`register_backend` (entry points serve the scheme again)."""
    with _lock:
        _explicit.pop(scheme, None)
        _cache.pop(scheme, None)


def resolve(url: str | URL) -> Resolved:
    """Find the plugin for ``url``: exact scheme first, then the part before the first '+'."""
    parsed = URL.parse(url)
    found = _lookup(parsed.scheme)
    if found is not None:
        return Resolved(parsed.scheme, found[0], found[1], None)
    prefix, plus, inner = parsed.scheme.partition("+")
    if plus and inner:
        found = _lookup(prefix)
        if found is not None:
            return Resolved(prefix, found[0], found[1], parsed.with_scheme(inner))
    raise BackendNotFound(_not_found_message(parsed))


def installed_schemes() -> dict[str, str]:
    """Every scheme that can be resolved, with what serves it."""
    schemes = {ep.name: _describe(ep) for ep in entry_points(group=GROUP)}
    with _lock:
        explicit = dict(_explicit)
    schemes.update({s: _describe_explicit(s, t) for s, t in explicit.items()})
    return dict(sorted(schemes.items()))


@dataclass(frozen=True)
class InstalledPlugin:
    """One installed scheme, as ``resultstore plugins`` lists it."""

    scheme: str
    distribution: str | None  # None when served by register_backend()
    version: str | None
    target: str  # "package.module:Object"
    capabilities: tuple[str, ...] | None  # None: the plugin decides per URL
    error: str | None  # why it does not load, or None


def installed_plugins() -> list[InstalledPlugin]:
    """Every installed scheme with its plugin's capabilities, loading each one to see."""
    from ._plugins import declared_capabilities  # _plugins imports hook specs; keep this lazy

    found = []
    for scheme in installed_schemes():
        with _lock:
            explicit = _explicit.get(scheme)
        distribution = version = None
        if explicit is None:
            points = _entry_points(scheme)
            target = ", ".join(ep.value for ep in points)
            if len(points) == 1 and points[0].dist is not None:
                distribution, version = points[0].dist.name, points[0].dist.version
        else:
            target = _target_name(explicit)
        try:
            factory, _ = _lookup(scheme) or (None, "")
            capabilities: tuple[str, ...] | None = None
            if hasattr(factory, "capabilities"):
                capabilities = tuple(sorted(c.value for c in declared_capabilities(factory)))
            error = None
        except Exception as exc:
            capabilities, error = None, f"{type(exc).__name__}: {exc}"
        found.append(InstalledPlugin(scheme, distribution, version, target, capabilities, error))
    return found


def _lookup(scheme: str) -> tuple[PluginFactory, str] | None:
    with _lock:
        if scheme in _cache:
            return _cache[scheme]
        explicit = _explicit.get(scheme)
    if explicit is not None:
        found = (_load_target(scheme, explicit), _describe_explicit(scheme, explicit))
    else:
        points = _entry_points(scheme)
        if not points:
            return None
        if len(points) > 1:
            names = " and ".join(_describe(ep) for ep in points)
            raise AmbiguousBackend(
                f"scheme {scheme!r} is published by both {names}; uninstall one, or choose "
                f"with resultstore.register_backend({scheme!r}, 'package.module:Object')"
            )
        found = (_load_entry_point(points[0]), _describe(points[0]))
    with _lock:
        _cache[scheme] = found
    return found


def _entry_points(scheme: str) -> list[EntryPoint]:
    # The same distribution can be seen twice (e.g. on sys.path twice); count it once.
    unique: dict[tuple[str, str], EntryPoint] = {}
    for ep in entry_points(group=GROUP, name=scheme):
        unique.setdefault((_dist_name(ep), ep.value), ep)
    return list(unique.values())


def _load_entry_point(ep: EntryPoint) -> PluginFactory:
    try:
        obj = ep.load()
    except Exception as exc:
        raise BackendLoadError(
            f"the plugin for scheme {ep.name!r} from {_describe(ep)} failed to import "
            f"({ep.value}): {type(exc).__name__}: {exc}"
        ) from exc
    return _check_factory(obj, _describe(ep))


def _load_target(scheme: str, target: str | PluginFactory) -> PluginFactory:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise BackendLoadError(
            f"the plugin registered for scheme {scheme!r} ({target}) failed to import: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return _check_factory(obj, target)


def _check_factory(obj: object, source: str) -> PluginFactory:
    if not callable(obj):
        raise BackendLoadError(f"{source} does not name a plugin class (got {obj!r})")
    return obj


def _dist_name(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "<unknown distribution>"


def _describe(ep: EntryPoint) -> str:
    return f"{_dist_name(ep)} {ep.dist.version}" if ep.dist is not None else _dist_name(ep)


def _describe_explicit(scheme: str, target: str | PluginFactory) -> str:
    return f"register_backend({scheme!r}, {_target_name(target)!r})"


def _target_name(target: str | PluginFactory) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def _not_found_message(url: URL) -> str:
    scheme = url.scheme
    installed = installed_schemes()
    lines = [f"no resultstore backend for scheme {scheme!r} in {url.masked!r}"]
    prefix, _, inner = scheme.partition("+")
    dist = KNOWN_DISTRIBUTIONS.get(scheme) or KNOWN_DISTRIBUTIONS.get(prefix)
    if prefix in _SQL_DIALECTS:
        lines.append(f"did you mean {'db+' + url.masked!r}? (SQL URLs take the db+ prefix)")
        if "db" not in installed:
            lines.append(f"install it with: {_install_command('resultstore-db', prefix)}")
    elif dist:
        lines.append(f"install it with: {_install_command(dist, inner.partition('+')[0])}")
    else:
        close = difflib.get_close_matches(scheme, set(installed) | set(KNOWN_DISTRIBUTIONS), n=1)
        if close:
            lines.append(f"did you mean {close[0]!r}?")
    shown = ", ".join(installed) if installed else "none"
    lines.append(f"installed schemes: {shown}")
    return "; ".join(lines)


def _install_command(dist: str, dialect: str) -> str:
    extra = _DB_EXTRAS.get(dialect) if dist == "resultstore-db" else None
    return f'pip install "{dist}[{extra}]"' if extra else f"pip install {dist}"
