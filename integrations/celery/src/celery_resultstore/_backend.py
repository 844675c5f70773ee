"""``ResultStoreBackend``: Celery's result backend interface on a resultstore Backend.

Celery's base classes keep doing what they do for every backend (encoding results
and exceptions, errbacks, failing chains, ``ignore_result``, rebuilding exceptions
on the client, the asynchronous waiting model); this class only moves the stored
states in and out of resultstore and maps Celery's request to resultstore's fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from celery import states
from celery.backends.asynchronous import AsyncBackendMixin
from celery.backends.base import BaseBackend
from celery.exceptions import ImproperlyConfigured
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import result_from_tuple

from resultstore import Backend, Capability, GroupMeta, TaskInfo, TaskMeta
from resultstore import TimeoutError as StoreTimeoutError

from ._chords import Chords
from ._consumer import ResultConsumer, is_missing
from ._settings import shared_backend

PREFIX = "resultstore+"


def _text(task_id: str | bytes) -> str:
    """Celery hands ids over as str, and as bytes from some of its own paths."""
    return task_id.decode() if isinstance(task_id, bytes) else task_id


class ResultStoreBackend(Chords, AsyncBackendMixin, BaseBackend):  # type: ignore[misc]
    """``result_backend = "resultstore+<url>"``: any installed resultstore plugin's URL."""

    ResultConsumer = ResultConsumer
    supports_native_join = True

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url, **kwargs)
        if not url:
            raise ImproperlyConfigured(
                "result_backend 'resultstore' needs a resultstore URL after the prefix, "
                "e.g. resultstore+redis://localhost:6379/0 or resultstore+db+sqlite:///r.db"
            )
        conf = self.app.conf
        expires = self.expires or None  # Celery: 0 or None keep results for ever
        self.store: Backend = shared_backend(
            url,
            conf=conf,
            expires=expires,
            serializer=self.serializer,
            accept_content=sorted(self.accept),
            extended=bool(conf.find_value_for_key("extended", "result")),
        )
        self._refuse_in_worker()
        self.supports_autoexpire = Capability.TTL in self.store.capabilities
        self.unsized_chords = {}
        self.result_consumer = self.ResultConsumer(
            self, self.app, self.accept, self._pending_results, self._pending_messages
        )

    def _refuse_in_worker(self) -> None:
        # Celery's worker sets up its app with setup_worker_optimizations before it
        # builds the backend (for its banner); that marks the app use_fast_trace_task.
        in_worker = getattr(self.app, "use_fast_trace_task", False) is True
        if in_worker and self.store.process_local:
            raise ImproperlyConfigured(
                f"result_backend {self.as_uri()!r} keeps results inside one process: a "
                "worker's pool processes and its clients could never read them. Use a "
                "store that other processes share, e.g. resultstore+redis://... or "
                "resultstore+db+sqlite:///results.db"
            )

    def as_uri(self, include_password: bool = False) -> str:
        url = self.store.url
        return PREFIX + (url.raw if include_password else url.masked)

    def __reduce__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        # A prefork child (or anything unpickling a result) rebuilds it from the URL.
        return super().__reduce__(args, dict(kwargs or {}, url=self.url, expires=self.expires))

    # --- worker side ---------------------------------------------------------------

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        # Celery's own mapping of its request (group, parent, children and, with
        # result_extended, name, args, kwargs, worker, retries, queue).
        meta = self._get_result_meta(result, state, traceback, request, format_date=False)
        info = None
        if request is not None:
            info = TaskInfo(
                name=meta.get("name"),
                args=meta.get("args"),
                kwargs=meta.get("kwargs"),
                worker=meta.get("worker"),
                retries=meta.get("retries"),
                queue=meta.get("queue"),
                group_id=meta.get("group_id"),
                parent_id=meta.get("parent_id"),
                children=meta.get("children") or (),
            )
        # A ready state is never replaced (atomic in the store): a late STARTED or a
        # duplicate worker's write after SUCCESS is dropped, as Celery's Redis does.
        self.store.store_result(_text(task_id), result, state, traceback, info)
        return result

    def cleanup(self) -> None:
        """Celery's daily ``backend_cleanup`` task: the plugin's expiry sweep."""
        self.store.cleanup()

    # --- client side ---------------------------------------------------------------

    def meta_for_celery(self, meta: TaskMeta) -> dict[str, Any]:
        """Celery's decoded meta dict, the failure rebuilt by Celery's rules."""
        if is_missing(meta):
            return {"status": states.PENDING, "result": None}  # as Celery's for a missing id
        decoded: dict[str, Any] = self.meta_from_decoded(meta.to_wire())
        return decoded

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        return self.meta_for_celery(self.store.get_task_meta(_text(task_id)))

    def task_result_exists(self, task_id: str) -> bool:
        return self.store.exists(_text(task_id))

    def _forget(self, task_id: str) -> None:
        self.store.forget(_text(task_id))

    def on_task_call(self, producer: Any, task_id: str) -> dict[str, Any]:
        from celery.result import task_join_will_block

        # Watched from the moment it is sent, as Celery's Redis backend subscribes:
        # get() never misses a result that was quicker than the call.
        if not task_join_will_block():
            self.result_consumer.consume_from(task_id)
        return {}

    def get_many(
        self,
        task_ids: Iterable[str],
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Any = None,
        on_interval: Any = None,
        max_iterations: int | None = None,
        READY_STATES: frozenset[str] = states.READY_STATES,  # Celery's name
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Celery's generator of ``(task_id, meta)`` as members become ready: every
        pending member read in one round trip per wake-up, waits by push."""
        pending = []
        for task_id in dict.fromkeys(_text(t) for t in task_ids):
            cached = self._cache.get(task_id)
            if cached is not None and cached["status"] in READY_STATES:
                yield task_id, cached
            else:
                pending.append(task_id)
        if not pending:
            return
        if max_iterations:
            # A look, not a wait (ResultSet._iter_meta asks for one round).
            metas: Iterable[TaskMeta] = self.store.get_many(pending).values()
            metas = [m for m in metas if m.status in READY_STATES]
            yield from self._hand_out(metas, on_message)
            return
        try:
            with self.store.iter_ready(pending, timeout=timeout) as ready:
                yield from self._hand_out(ready, on_message)
        except StoreTimeoutError:
            raise CeleryTimeoutError(f"Operation timed out ({timeout})") from None

    def _hand_out(
        self, metas: Iterable[TaskMeta], on_message: Any
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for meta in metas:
            decoded = self.meta_for_celery(meta)
            if decoded["status"] == states.SUCCESS:
                self._cache[meta.task_id] = decoded
            if on_message is not None:
                on_message(decoded)
            yield meta.task_id, decoded

    # --- groups --------------------------------------------------------------------

    def _save_group(self, group_id: str, result: Any) -> Any:
        self.store.save_group_meta(GroupMeta(group_id, result.as_tuple()))
        return result

    def _restore_group(self, group_id: str) -> dict[str, Any] | None:
        meta = self.store.get_group_meta(_text(group_id))
        if meta is None:
            return None
        return {"result": result_from_tuple(meta.result, self.app)}

    def _delete_group(self, group_id: str) -> None:
        self.store.delete_group(_text(group_id))
