"""The Backend: one configured storage plugin, the provider API and the consumer's reads."""

from __future__ import annotations

import asyncio
import traceback as tb_module
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from . import _registry
from ._args import (
    DEFAULT,
    DEFAULT_EXPIRES,
    DEFAULT_URL,
    Expires,
    _Default,
    seconds,
    unique_ids,
    validate_task_id,
)
from ._backend_groups import Groups
from ._backend_listing import Listing
from ._backend_marks import Marks
from ._backend_waits import Waits
from ._errors import (
    PluginValidationError,
)
from ._exceptions import ExceptionRebuilder, exception_to_dict
from ._hookspecs import ASYNC_PREFIX
from ._meta import TaskInfo, TaskMeta, check_extra
from ._plugins import (
    BackendConfig,
    Capability,
    plugin_name,
)
from ._provider import TaskRun
from ._serialization import DEFAULT_SERIALIZER, Codec
from ._states import (
    EXCEPTION_STATES,
    READY_STATES,
    REVOKED,
)
from ._url import URL

_EXPIRING = frozenset({Capability.TTL, Capability.CLEANUP})
# Celery's setting names accepted by Backend.from_config, mapped to keyword arguments.
SETTINGS = {
    "result_backend": "url",
    "result_expires": "expires",
    "result_serializer": "serializer",
    "result_accept_content": "accept_content",
    "result_extended": "extended",
    "result_exception_allow": "exception_allow",
}
# Celery's result_* settings that belong to the plugin: passed on as plugin options
# under their own name (Celery's Redis backend reads global_keyprefix, retry_policy,
# master_name, ... from result_backend_transport_options).
PLUGIN_SETTINGS = ("result_backend_transport_options",)


_NO_INFO = TaskInfo()  # frozen: one for every store without a request


def _ignore(count: int) -> None:
    pass


class Backend(Marks, Waits, Groups, Listing):
    """A result store selected by URL.

    >>> backend = Backend("memory://")
    >>> backend.mark_as_done("t1", 42)
    True
    >>> backend.get_result("t1")
    42
    """

    def __init__(
        self,
        url: str | URL = DEFAULT_URL,
        *,
        expires: Expires = DEFAULT_EXPIRES,
        serializer: str = DEFAULT_SERIALIZER,
        accept_content: Iterable[str] | None = None,
        extended: bool = False,
        exception_allow: Iterable[type[BaseException]] = (),
        plugins: Iterable[object] = (),
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = URL.parse(url)
        if accept_content is not None and not isinstance(accept_content, str):
            accept_content = list(accept_content)  # read twice: by the codec and below
        exception_allow = tuple(exception_allow)
        if not isinstance(extended, bool):
            raise TypeError(f"result_extended must be a bool, got {extended!r}")
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"options must be a mapping, got {type(options).__name__}")
        self.expires = seconds(expires, "result_expires")
        self.codec = Codec.create(serializer, accept_content)
        self._rebuilder = ExceptionRebuilder(exception_allow)
        # What another process needs to open the same backend (the executor's workers).
        self.arguments: dict[str, Any] = {
            "url": self.url,
            "expires": self.expires,
            "serializer": serializer,
            "accept_content": accept_content,
            "extended": extended,
            "exception_allow": exception_allow,
            "options": dict(options or {}),
        }
        resolved = _registry.resolve(self.url)
        self.config = BackendConfig(
            url=self.url,
            inner_url=resolved.inner_url,
            codec=self.codec,
            expires=self.expires,
            extended=extended,
            options=dict(options or {}),
        )
        self._start_plugin(resolved)
        self._closed = False
        self._start_hub()
        try:
            for extra in plugins:
                self.add_plugin(extra)
            if self.expires is not None and not self.capabilities & _EXPIRING:
                raise PluginValidationError(
                    f"plugin {plugin_name(self.plugin)} can neither expire results (ttl) nor "
                    "clean them up (cleanup); pass expires=None to keep results until forgotten"
                )
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> Backend:
        """Build from Celery-style settings (``result_backend``, ``result_expires``, ...).

        Keys that do not start with ``result_`` are handed to the plugin as options,
        and so is ``result_backend_transport_options`` (it configures the plugin).
        """
        settings: dict[str, Any] = {}
        options: dict[str, Any] = {}
        for key, value in config.items():
            if key in SETTINGS:
                settings[SETTINGS[key]] = value
            elif key.startswith("result_") and key not in PLUGIN_SETTINGS:
                known = ", ".join([*SETTINGS, *PLUGIN_SETTINGS])
                raise ValueError(f"unknown setting {key!r}; known: {known}")
            else:
                options[key] = value
        if options:
            settings["options"] = options
        return cls(**settings, **kwargs)

    def __repr__(self) -> str:
        return f"<Backend {self.url.masked!r} plugin={plugin_name(self.plugin)}>"

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the push channel (or poller) and the plugin's connections. Idempotent."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._dropped.detach()
        self._hub.close()
        if self._parts.hooks is not None:  # None: a forked child that never used it
            self._parts.hooks.close()

    # --- provider side ---------------------------------------------------------

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: TaskInfo | None = None,
        *,
        expires: Expires | _Default = DEFAULT,
        overwrite: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Store ``state`` with ``result`` for ``task_id``.

        Returns ``False`` when the task is already in a ready state and
        ``overwrite`` is false: a late or duplicate write never replaces a
        final state. Raises :class:`EncodeError` (storing nothing) when the
        result cannot be serialized. ``extra`` are a host's own fields (see
        :attr:`TaskMeta.extra`), stored beside Celery's where its readers ignore them.
        """
        meta = self._task_meta(task_id, result, state, traceback, request, extra)
        written = bool(self._store(meta=meta, ttl=self._ttl(expires), overwrite=overwrite))
        if self._observed:
            self._hook.result_stored(meta=meta, written=written)
        return written

    async def astore_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: TaskInfo | None = None,
        *,
        expires: Expires | _Default = DEFAULT,
        overwrite: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """:meth:`store_result` for coroutines: never blocks the event loop.

        Observers (``result_stored``) are called on the loop, as they are in the
        storing thread by :meth:`store_result`.
        """
        meta = self._task_meta(task_id, result, state, traceback, request, extra)
        ttl = self._ttl(expires)
        written = bool(await self._acall("store_result", meta=meta, ttl=ttl, overwrite=overwrite))
        self._hook.result_stored(meta=meta, written=written)
        return written

    def _task_meta(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None,
        request: TaskInfo | None,
        extra: Mapping[str, Any] | None = None,
    ) -> TaskMeta:
        """The meta to store: arguments checked, an exception turned into its dict."""
        validate_task_id(task_id)
        if not isinstance(state, str) or not state:
            raise ValueError(f"state must be a non-empty str, got {state!r}")
        if request is not None and not isinstance(request, TaskInfo):
            raise TypeError(f"request must be a TaskInfo, got {type(request).__name__}")
        info = request or _NO_INFO
        if isinstance(result, BaseException):
            if traceback is None and result.__traceback__ is not None:
                traceback = "".join(tb_module.format_exception(result))
            result = exception_to_dict(result, self._probe_encode)
        # Like Celery, the extended fields are written only when there is a request.
        extended = self.config.extended and request is not None
        # Every field by name, without the frozen dataclass's __init__ (a setattr per
        # field: a tenth of a memory:// store).
        return TaskMeta.from_fields(
            {
                "task_id": task_id,
                "status": state,
                "result": result,
                "traceback": traceback,
                "children": list(info.children),
                "date_done": datetime.now(timezone.utc) if state in READY_STATES else None,
                "group_id": info.group_id,
                "parent_id": info.parent_id,
                "extended": extended,
                "name": info.name if extended else None,
                "args": info.args if extended else None,
                "kwargs": info.kwargs if extended else None,
                "worker": info.worker if extended else None,
                "retries": info.retries if extended else None,
                "queue": info.queue if extended else None,
                "extra": check_extra(extra),
            }
        )

    def run(
        self, task_id: str, request: TaskInfo | None = None, *, track_started: bool = True
    ) -> TaskRun:
        """The provider API: ``with backend.run(task_id) as run:`` around one task run.

        See :class:`TaskRun`: STARTED on entry, SUCCESS, FAILURE or REVOKED on exit.
        """
        return TaskRun(self, validate_task_id(task_id), request, track_started=track_started)

    def _ttl(self, expires: Expires | _Default) -> float | None:
        """A call's ``expires=`` as seconds, the backend's result_expires by default."""
        return self.expires if isinstance(expires, _Default) else seconds(expires, "expires")

    def _probe_encode(self, value: object) -> object:
        return self.codec.dumps(value, "exception argument")

    # --- reading -------------------------------------------------------------------

    def exists(self, task_id: str) -> bool:
        """Whether anything is stored for ``task_id`` (PENDING reads also mean "unknown")."""
        return self._get(task_id=validate_task_id(task_id)) is not None

    def get_task_meta(self, task_id: str) -> TaskMeta:
        """The stored meta, or a PENDING meta when nothing is stored."""
        meta: TaskMeta | None = self._get(task_id=validate_task_id(task_id))
        return meta if meta is not None else TaskMeta(task_id)

    def get_many(self, task_ids: Iterable[str]) -> dict[str, TaskMeta]:
        """Metas for many ids in one round trip where the plugin can; PENDING for missing."""
        ids = unique_ids(task_ids)
        return _or_pending(ids, self._read(ids))

    async def aget_task_meta(self, task_id: str) -> TaskMeta:
        """:meth:`get_task_meta` for coroutines: never blocks the event loop."""
        meta: TaskMeta | None = await self._acall("get", task_id=validate_task_id(task_id))
        return meta if meta is not None else TaskMeta(task_id)

    async def aget_many(self, task_ids: Iterable[str]) -> dict[str, TaskMeta]:
        """:meth:`get_many` for coroutines: never blocks the event loop."""
        ids = unique_ids(task_ids)
        return _or_pending(ids, await self._aread(ids))

    async def _acall(self, hook: str, **kwargs: Any) -> Any:
        """A storage hook from a coroutine: the plugin's async twin where it declares
        ``async``, else the sync hook in a worker thread (never on the loop)."""
        if Capability.ASYNC in self.capabilities:
            pending = getattr(self._hook, ASYNC_PREFIX + hook)(**kwargs)
            return None if pending is None else await pending
        return await asyncio.to_thread(getattr(self._hook, hook), **kwargs)

    def get_state(self, task_id: str) -> str:
        return self.get_task_meta(task_id).status

    get_status = get_state

    def get_result(self, task_id: str) -> Any:
        """The return value, progress meta, or (for failures) the rebuilt exception."""
        return self.result_value(self.get_task_meta(task_id))

    def get_traceback(self, task_id: str) -> str | None:
        return self.get_task_meta(task_id).traceback

    def result_value(self, meta: TaskMeta) -> Any:
        if meta.status in EXCEPTION_STATES:
            return self.exception_from_meta(meta)
        return meta.result

    def exception_from_meta(self, meta: TaskMeta) -> BaseException:
        return self._rebuilder.rebuild(meta.result, meta.traceback)

    # --- removal, expiry, revocation ----------------------------------------------

    def forget(self, task_id: str) -> bool:
        """Delete what is stored for ``task_id``. Idempotent; returns whether it existed."""
        return bool(self._hook.forget(task_id=validate_task_id(task_id)))

    async def aforget(self, task_id: str) -> bool:
        """:meth:`forget` for coroutines: never blocks the event loop."""
        return bool(await self._acall("forget", task_id=validate_task_id(task_id)))

    def cleanup(self, progress: Callable[[int], None] | None = None) -> int:
        """Delete expired results now and return how many (0 where the engine expires them).

        ``progress(count)`` is called after each batch the plugin deletes.
        """
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable, got {progress!r}")
        if Capability.CLEANUP in self.capabilities:
            return int(self._hook.cleanup(progress=progress or _ignore) or 0)
        return 0

    def revoke(
        self, task_id: str, reason: str = "revoked", *, expires: Expires | _Default = DEFAULT
    ) -> bool:
        """Record ``task_id`` as revoked; an unfinished task then reads REVOKED.

        A finished task keeps its result. Returns whether the task now reads REVOKED.
        """
        validate_task_id(task_id)
        ttl = self._ttl(expires)
        # The state first: a running task that sees the revocation (by either record)
        # then finds the client's REVOKED with its reason already stored.
        written = self.mark_as_revoked(task_id, reason, expires=ttl)
        if Capability.REVOKE in self.capabilities:
            self._hook.revoke(task_id=task_id, ttl=ttl)
        return written or self.get_state(task_id) == REVOKED

    def is_revoked(self, task_id: str) -> bool:
        """Whether ``task_id`` was revoked (providers ask before and while running a task)."""
        validate_task_id(task_id)
        if Capability.REVOKE in self.capabilities and self._hook.is_revoked(task_id=task_id):
            return True
        return self.get_state(task_id) == REVOKED


def _or_pending(ids: list[str], found: Mapping[str, TaskMeta]) -> dict[str, TaskMeta]:
    return {t: found.get(t) or TaskMeta(t) for t in ids}
