"""From Celery's configuration to a resultstore Backend, shared by a process's Celery backends.

Celery keeps one backend object per thread (``app.backend`` is thread-local), and
builds more when it unpickles one: each would open its own pools and push channel.
They all wrap one resultstore ``Backend`` per configuration and process instead;
a forked child gets a fresh plugin from the core on first use.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable
from typing import Any

from celery.app.defaults import DEFAULTS

from resultstore import Backend, resolve

_lock = threading.Lock()
_shared: dict[str, Backend] = {}


def plugin_options(conf: Any, names: Iterable[str] | None) -> dict[str, Any]:
    """The settings the plugin declares it reads (``option_names``), as the app set them.

    A setting left at Celery's default is not forwarded: the plugin's own default
    applies (Celery's defaults are its backends' defaults, e.g. ``database_engine_options``
    with ``pool_recycle``, and the plugin refuses values it cannot use). A plugin that
    declares nothing gets nothing: forwarding every setting would make it refuse all
    of Celery's. A setting that is not Celery's and is spelt like one the plugin reads
    (``redis_socket_timout``) is forwarded too, so that the plugin refuses it by name
    instead of it being ignored.
    """
    if names is None:
        return {}
    wanted = frozenset(names)
    options = {}
    for name in list(conf.keys()):
        if not isinstance(name, str):
            continue
        if name in wanted:
            value = conf[name]
            if name not in DEFAULTS or value != DEFAULTS[name]:
                options[name] = value
        elif name not in DEFAULTS and difflib.get_close_matches(name, wanted, n=1, cutoff=0.85):
            options[name] = conf[name]
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


def close_stores() -> None:
    """Close every store the bridge opened in this process (their pools and push
    channels); a Celery backend used afterwards opens its store anew."""
    with _lock:
        backends = list(_shared.values())
        _shared.clear()
    for backend in backends:
        backend.close()
