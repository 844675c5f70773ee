"""The storage plugin of a :class:`Backend`: built from the config, registered with pluggy,
and built anew in a forked child.

A forked child inherits the parent's plugin object with its sockets, pools, threads
and event loops, none of which it may use: the sockets are shared with the parent,
and the threads did not survive. So in the child a Backend builds a fresh plugin
from the same config on first use, and the parent's object is kept, untouched and
never closed (closing could send a goodbye on a socket the parent still uses). A
plugin that handles fork itself declares ``keep_after_fork = True``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from . import _hookspecs, _registry
from ._errors import (
    BackendLoadError,
    PluginValidationError,
    ResultStoreError,
    UnsupportedOperation,
)
from ._plugins import (
    BackendConfig,
    Capability,
    check_options,
    declared_capabilities,
    declared_process_local,
    plugin_name,
    validate_plugin,
)
from ._url import URL

# Plugin objects a forked child inherited: kept so that nothing ever finalizes them there.
_INHERITED: list[object] = []


@dataclass
class Parts:
    """What closes a Backend's connections: its hook relay (``None`` in a forked child
    until the plugin is built anew) and its hub. The finalizer of a dropped Backend
    holds this, not the Backend."""

    hooks: Any
    hub: Any = None


class PluginHost:
    """Mixed into :class:`Backend`: the plugin, its manager, and the hot-path callables."""

    url: URL
    config: BackendConfig
    plugin: object
    capabilities: frozenset[Capability]
    process_local: bool
    _parts: Parts
    _get: Callable[..., Any]
    _store: Callable[..., Any]
    _observed: bool

    def _require(self, capability: Capability, operation: str) -> None:
        if capability not in self.capabilities:
            raise UnsupportedOperation(
                f"{operation} needs capability {capability.value!r}, which plugin "
                f"{plugin_name(self.plugin)} for {self.url.masked!r} does not declare"
            )

    def _start_plugin(self, resolved: _registry.Resolved) -> None:
        self._resolved = resolved
        self._extras: list[object] = []  # wrappers and observers, registered again after fork
        self._stale = False
        self._renew_lock = threading.Lock()
        self._pm = _manager()
        self.plugin = self._construct()
        try:
            self.capabilities = declared_capabilities(self.plugin)
            self.process_local = declared_process_local(self.plugin)
            self._register(self.plugin, storage=True)
        except BaseException:
            close = getattr(self.plugin, "close", None)  # not registered: close it directly
            if callable(close):
                close()
            raise
        self._parts = Parts(self._pm.hook)

    def _construct(self) -> object:
        resolved = self._resolved
        check_options(resolved.factory, self.config.options, self.url.masked)
        try:
            return resolved.factory(self.config)
        except (ResultStoreError, ValueError, TypeError, PermissionError):
            raise  # the plugin's own clear word on the URL, options or rights
        except Exception as exc:
            raise BackendLoadError(
                f"the plugin for {self.url.masked!r} ({resolved.source}) failed to start: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _register(self, plugin: object, *, storage: bool) -> None:
        validate_plugin(self._pm, plugin, storage=storage)
        try:
            self._pm.register(plugin)
        except (pluggy.PluginValidationError, ValueError) as exc:  # ValueError: added twice
            raise PluginValidationError(f"plugin {plugin_name(plugin)}: {exc}") from None
        # The hot paths call the storage plugin's own method while nothing wraps it:
        # pluggy's dispatch was ~3 us of a ~45 us Redis get.
        hook = self._pm.hook
        self._get = _direct(hook.get, ("task_id",))
        self._store = _direct(hook.store_result, ("meta", "ttl", "overwrite"))
        self._observed = bool(hook.result_stored.get_hookimpls())

    def add_plugin(self, plugin: object) -> None:
        """Add a wrapper (``@hookimpl(wrapper=True)``) or an observer (``result_stored``)."""
        self._current()
        self._register(plugin, storage=False)
        self._extras.append(plugin)

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """pluggy's manager, to look at: register plugins with :meth:`add_plugin`
        (the hot paths learn of wrappers and observers from it)."""
        self._current()
        return self._pm

    @property
    def _hook(self) -> Any:
        """pluggy's hook relay, for every hook but the hot paths' get and store."""
        self._current()
        return self._pm.hook

    def _current(self) -> None:
        """In a forked child, build the plugin anew before its first use."""
        if self._stale:
            self._renew()

    def _forked(self) -> None:
        """In a forked child: leave the parent's plugin alone, build a new one on first use."""
        if getattr(self.plugin, "keep_after_fork", False) is True:
            return
        _INHERITED.append(self.plugin)
        self._stale = True
        self._renew_lock = threading.Lock()  # the parent's may have been held at fork time
        self._parts = Parts(None)

        def get(**kwargs: Any) -> Any:
            self._current()
            return self._get(**kwargs)

        def store(**kwargs: Any) -> Any:
            self._current()
            return self._store(**kwargs)

        self._get, self._store = get, store

    def _renew(self) -> None:
        with self._renew_lock:
            if not self._stale:
                return
            self._pm = _manager()
            plugin = self._construct()
            self._register(plugin, storage=True)
            for extra in self._extras:
                self._register(extra, storage=False)
            self.plugin = plugin
            self._parts.hooks = self._pm.hook
            self._stale = False


def _manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(_hookspecs.PROJECT)
    pm.add_hookspecs(_hookspecs)
    return pm


def _direct(caller: pluggy.HookCaller, argnames: tuple[str, ...]) -> Callable[..., Any]:
    """The only implementation of a hook, when it is a plain one taking every argument;
    else pluggy's caller (wrappers, observers, several plugins)."""
    impls = caller.get_hookimpls()
    if len(impls) != 1 or impls[0].wrapper or impls[0].hookwrapper:
        return caller
    return impls[0].function if tuple(impls[0].argnames) == argnames else caller
