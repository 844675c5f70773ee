"""dramatiq's ``ResultBackend`` on a resultstore ``Backend``.

dramatiq's base backend polls ``_get`` with a backoff that starts at 100 ms;
this one overrides ``get_result`` to sleep on the store's push channel. A result
is a resultstore task record in Celery's wire format under the message id, so
``resultstore show MESSAGE_ID`` and Celery's ``AsyncResult`` read it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dramatiq.common import q_name
from dramatiq.message import Message
from dramatiq.results import ResultBackend, ResultFailure, ResultMissing, ResultTimeout
from dramatiq.results.backend import DEFAULT_TIMEOUT

import resultstore
from resultstore import (
    EXCEPTION_STATES,
    FAILURE,
    READY_STATES,
    SUCCESS,
    Backend,
    TaskInfo,
    TaskMeta,
)

# The extra field that keeps dramatiq's own view of an exception: its type name and
# str(), which ResultFailure carries (Celery's exc_message holds the args instead).
EXTRA = "dramatiq"


class ResultStoreBackend(ResultBackend):
    """A dramatiq results backend on any resultstore plugin, chosen by ``url``.

    Use it as dramatiq's own: ``broker.add_middleware(Results(backend=...))``.
    ``get_result(message, block=True, timeout=ms)`` waits by push;
    ``ResultMissing``, ``ResultTimeout`` and ``ResultFailure`` as dramatiq raises them.
    Results are stored under the message id (with ``use_namespace_prefix_keys``:
    ``namespace:queue:actor:message_id``, dramatiq's readable key). The keywords
    after ``url`` but the namespace's go to :class:`resultstore.Backend`.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "dramatiq-results",
        use_namespace_prefix_keys: bool = False,
        exception_allow: Iterable[type[BaseException]] = (),
        **backend_settings: Any,
    ) -> None:
        super().__init__(namespace=namespace, use_namespace_prefix_keys=use_namespace_prefix_keys)
        self.backend = Backend(url, exception_allow=exception_allow, **backend_settings)

    def __repr__(self) -> str:
        return f"<ResultStoreBackend {self.backend.url.masked!r}>"

    def close(self) -> None:
        """Close the store's connections and push channel."""
        self.backend.close()

    def build_message_key(self, message: Message[Any]) -> str:
        if self.use_namespace_prefix_keys:
            return f"{self.namespace}:{q_name(message.queue_name)}:{message.actor_name}:" + (
                message.message_id
            )
        return message.message_id

    def get_result(
        self, message: Message[Any], *, block: bool = False, timeout: int | None = None
    ) -> Any:
        """The result; ``block=True`` waits up to ``timeout`` ms (10 s by default) by push."""
        key = self.build_message_key(message)
        if block:
            wait = (DEFAULT_TIMEOUT if timeout is None else timeout) / 1000
            try:
                meta = self.backend.wait_for(key, timeout=max(wait, 0))
            except resultstore.TimeoutError:
                raise ResultTimeout(message) from None
        else:
            meta = self.backend.get_task_meta(key)
            if meta.status not in READY_STATES:
                raise ResultMissing(message)
        return self.result_of(meta)

    def result_of(self, meta: TaskMeta) -> Any:
        """A ready record's value, or the ``ResultFailure`` dramatiq raises for it."""
        if meta.status not in EXCEPTION_STATES:
            return self.unwrap_result(meta.result)
        stored = (meta.extra or {}).get(EXTRA)
        if isinstance(stored, dict):
            kind, text = str(stored.get("type")), str(stored.get("msg"))
        else:  # written by Celery or resultstore: the rebuilt exception's type and str()
            error = self.backend.exception_from_meta(meta)
            kind, text = getattr(error, "exc_type", type(error).__name__), str(error)
        raise ResultFailure(f"actor raised {kind}: {text}", kind, text)

    def store_result(self, message: Message[Any], result: Any, ttl: int) -> None:
        # dramatiq's backends replace what is stored (a message re-run from the dead
        # letters stores again): resultstore would keep the first ready state.
        self.backend.store_result(
            self.build_message_key(message),
            result,
            SUCCESS,
            request=_request(message),
            expires=_seconds(ttl),
            overwrite=True,
        )

    def store_exception(self, message: Message[Any], exception: Exception, ttl: int) -> None:
        self.backend.store_result(
            self.build_message_key(message),
            exception,
            FAILURE,
            request=_request(message),
            expires=_seconds(ttl),
            overwrite=True,
            extra={EXTRA: {"type": type(exception).__name__, "msg": str(exception)}},
        )


def _seconds(ttl: int | None) -> float | None:
    """dramatiq's TTLs are milliseconds."""
    return None if ttl is None else ttl / 1000


def _request(message: Message[Any]) -> TaskInfo:
    """What ``result_extended=True`` records of the message (Celery's extended fields)."""
    return TaskInfo(
        name=message.actor_name,
        args=list(message.args),
        kwargs=dict(message.kwargs),
        queue=message.queue_name,
        retries=message.options.get("retries", 0),
    )
