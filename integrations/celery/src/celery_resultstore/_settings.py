"""From Celery's configuration to a resultstore Backend, shared by a process's Celery backends.

Celery keeps one backend object per thread (``app.backend`` is thread-local), and
builds more when it unpickles one: each would open its own pools and push channel.
They all wrap one resultstore ``Backend`` per configuration and process instead;
a forked child gets a fresh plugin from the core on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from resultstore import Backend, resolve

_lock = threading.Lock()
_shared: dict[str, Backend] = {}


def plugin_options(conf: Any, names: Iterable[str] | None) -> dict[str, Any]:
    """The settings the plugin declares it reads (``option_names``), as the app set them.

    A setting left at Celery's default is not forwarded: the plugin's own default
    applies (Celery's defaults are its backends' defaults, e.g. ``database_engine_options``
    with ``pool_recycle``, and the plugin refuses values it cannot use). A plugin that
    declares nothing gets nothing: forwarding every setting would make it refuse all
    of Celery's.
    """
    if names is None:
        return {}
    changes: Mapping[str, Any] = getattr(conf, "changes", {})
    # conf.defaults: the app's configuration source(s), then Celery's own defaults.
    sources: list[Mapping[str, Any]] = list(getattr(conf, "defaults", ())[:-1])
    options = {}
    for name in sorted(names):
        if name in changes:
            options[name] = changes[name]
            continue
        for source in sources:
            if name in source:
                options[name] = source[name]
                break
    return options


def shared_backend(url: str, **settings: Any) -> Backend:
    """The process's one resultstore Backend for this URL and these settings."""
    options = plugin_options(settings.pop("conf"), resolve(url).option_names)
    key = repr((url, sorted(settings.items()), sorted(options.items())))
    with _lock:
        backend = _shared.get(key)
        if backend is None:
            backend = _shared[key] = Backend(url, options=options, **settings)
        return backend
