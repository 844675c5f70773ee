"""Plugin objects: their options, their capabilities and the checks at registration."""

from __future__ import annotations

import difflib
import enum
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import _hookspecs
from ._errors import PluginValidationError
from ._serialization import Codec
from ._url import URL


class Capability(str, enum.Enum):
    """What a storage plugin declares it can do; the core picks native paths by these."""

    TTL = "ttl"
    PUSH = "push"
    GET_MANY = "get_many"
    GROUPS = "groups"
    CLEANUP = "cleanup"
    REVOKE = "revoke"
    ASYNC = "async"
    COUNTER = "counter"
    LISTING = "listing"

    def __str__(self) -> str:
        return self.value


# Hooks a plugin must implement to declare a capability (TTL is a promise about store_result).
CAPABILITY_HOOKS: Mapping[Capability, tuple[str, ...]] = {
    Capability.TTL: (),
    Capability.PUSH: ("notify",),
    Capability.GET_MANY: ("get_many",),
    Capability.GROUPS: ("save_group", "get_group", "forget_group"),
    Capability.CLEANUP: ("cleanup",),
    Capability.REVOKE: ("revoke", "is_revoked"),
    Capability.ASYNC: ("async_store_result", "async_get", "async_forget"),
    Capability.COUNTER: ("incr", "forget_counter"),
    Capability.LISTING: ("list_results", "count_results"),
}
# Hooks two capabilities need together: the asyncio twin of a native path.
JOINT_HOOKS: Mapping[frozenset[Capability], tuple[str, ...]] = {
    frozenset({Capability.ASYNC, Capability.GET_MANY}): ("async_get_many",),
}

_SPECS: dict[str, inspect.Signature] = {
    name: inspect.signature(obj)
    for name, obj in vars(_hookspecs).items()
    if callable(obj) and hasattr(obj, f"{_hookspecs.PROJECT}_spec")
}


@dataclass(frozen=True)
class BackendConfig:
    """Everything a storage plugin is constructed with: ``PluginClass(config)``.

    ``url`` is the URL the user gave; ``inner_url`` is the part after the
    ``+`` when the plugin was chosen by its prefix (``db+postgresql://`` ->
    ``postgresql://``), else ``None``. ``options`` are the backend options the
    user passed, for the plugin to validate.
    """

    url: URL
    inner_url: URL | None
    codec: Codec
    expires: float | None
    extended: bool
    options: Mapping[str, Any] = field(default_factory=dict)


def plugin_name(plugin: object) -> str:
    cls = plugin if isinstance(plugin, type) else type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


def declared_capabilities(plugin: object) -> frozenset[Capability]:
    raw = getattr(plugin, "capabilities", ())
    if isinstance(raw, str) or not isinstance(raw, Iterable):
        raise PluginValidationError(
            f"plugin {plugin_name(plugin)}: 'capabilities' must be a set of names, got {raw!r}"
        )
    caps = set()
    for item in raw:
        try:
            caps.add(Capability(item))
        except ValueError:
            known = ", ".join(c.value for c in Capability)
            raise PluginValidationError(
                f"plugin {plugin_name(plugin)} declares unknown capability {item!r} "
                f"(known: {known})"
            ) from None
    return frozenset(caps)


def declared_option_names(plugin: object) -> frozenset[str] | None:
    """The backend options the plugin reads (``option_names``), or ``None`` if it does not
    say. Hosts forward exactly these of their settings (Celery's ``redis_*``, ...)."""
    raw = getattr(plugin, "option_names", None)
    if raw is None:
        return None
    if (
        isinstance(raw, str)
        or not isinstance(raw, Iterable)
        or not all(isinstance(name, str) for name in raw)
    ):
        raise PluginValidationError(
            f"plugin {plugin_name(plugin)}: 'option_names' must be a set of str, got {raw!r:.200}"
        )
    return frozenset(raw)


def check_options(plugin: object, options: Mapping[str, Any], where: str) -> None:
    """Refuse an option the plugin does not read, naming a close spelling: a misspelt
    setting must not be ignored in silence."""
    names = declared_option_names(plugin)
    unknown = sorted(set(options) - names) if names is not None else []
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], names or (), n=1)
    hint = f"; did you mean {close[0]!r}?" if len(unknown) == 1 and close else ""
    known = ", ".join(sorted(names or ())) or "none"
    listed = ", ".join(repr(key) for key in unknown)
    raise ValueError(
        f"{where}: plugin {plugin_name(plugin)} does not take option"
        f"{'s' * (len(unknown) > 1)} {listed}{hint} (it takes: {known})"
    )


def declared_process_local(plugin: object) -> bool:
    """Whether the plugin keeps results inside this process (``process_local = True``):
    no other process can read them, so a worker in another process must not use it."""
    raw = getattr(plugin, "process_local", False)
    if not isinstance(raw, bool):
        raise PluginValidationError(
            f"plugin {plugin_name(plugin)}: 'process_local' must be True or False, got {raw!r}"
        )
    return raw


def validate_plugin(pm: pluggy.PluginManager, plugin: object, *, storage: bool) -> None:
    """Check a plugin against the hook specs before pluggy sees it.

    Names the plugin, the hook and what is wrong: a misspelt hook name, an
    argument the spec does not have, a coroutine where a function is due, a
    hook-named method without ``@hookimpl``, a missing required hook, or a
    capability without the hooks it needs. The ``async_*`` hooks are the other
    way round: their implementations must be ``async def``.
    """
    name = plugin_name(plugin)
    marked: set[str] = set()
    for attr in dir(plugin):
        if attr.startswith("_"):
            continue
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            if attr in _SPECS and callable(getattr(plugin, attr, None)):
                raise PluginValidationError(
                    f"plugin {name}: method {attr!r} has the name of a hook but is not "
                    "decorated with @resultstore.hookimpl"
                )
            continue
        marked.add(attr)
        _check_impl(name, attr, getattr(plugin, attr), opts)
    if storage:
        for hook in _hookspecs.REQUIRED_HOOKS:
            if hook not in marked:
                raise PluginValidationError(
                    f"plugin {name} does not implement the required hook {hook!r}"
                )
        caps = declared_capabilities(plugin)
        needs = {frozenset({cap}): CAPABILITY_HOOKS[cap] for cap in Capability if cap in caps}
        needs.update((joint, hooks) for joint, hooks in JOINT_HOOKS.items() if joint <= caps)
        for declared, hooks in needs.items():
            missing = [hook for hook in hooks if hook not in marked]
            if missing:
                what = " and ".join(repr(cap.value) for cap in Capability if cap in declared)
                noun = "capabilities" if len(declared) > 1 else "capability"
                raise PluginValidationError(
                    f"plugin {name} declares {noun} {what} but does not implement "
                    f"{', '.join(repr(m) for m in missing)}"
                )


def _check_impl(plugin: str, attr: str, func: Callable[..., Any], opts: Mapping[str, Any]) -> None:
    hook = opts.get("specname") or attr
    spec = _SPECS.get(hook)
    if spec is None:
        close = difflib.get_close_matches(hook, _SPECS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PluginValidationError(f"plugin {plugin}: unknown hook {hook!r}{hint}")
    wraps = opts.get("wrapper") or opts.get("hookwrapper")
    if hook.startswith(_hookspecs.ASYNC_PREFIX) and not wraps:
        if not inspect.iscoroutinefunction(func):
            twin = hook.removeprefix(_hookspecs.ASYNC_PREFIX)
            raise PluginValidationError(
                f"plugin {plugin}: hook {hook!r} must be 'async def' (the asyncio twin of {twin!r})"
            )
    elif inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        # Wrappers of the async_* hooks too: they are generators around the coroutine.
        raise PluginValidationError(
            f"plugin {plugin}: hook {hook!r} must be a plain function, not 'async def'"
        )
    params = [
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)
    ]
    allowed = list(spec.parameters)
    extra = [p for p in params if p not in allowed]
    if extra:
        raise PluginValidationError(
            f"plugin {plugin}: hook {hook!r} takes ({', '.join(params)}) but the spec is "
            f"{hook}({', '.join(allowed)}); unknown argument(s): {', '.join(extra)}"
        )
