"""The hook contract between the core and storage plugins (project name ``resultstore``).

Storage hooks are ``firstresult``: the storage plugin answers them. Wrappers
(metrics, tracing, compression, encryption) implement the same hooks with
``@hookimpl(wrapper=True)`` and ``return (yield)``. Observers implement
``result_stored``. The ``async_*`` hooks are the asyncio twins of the storage
hooks (capability ``async``). docs/writing-a-plugin.md is the guide for plugin
authors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Protocol

import pluggy

from ._listing import CountQuery, ListQuery, ResultPage
from ._meta import GroupMeta, TaskMeta

PROJECT = "resultstore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

OnChange = Callable[[str, "TaskMeta | None"], None]


class NotifyChannel(Protocol):
    """What a push plugin's ``notify`` hook returns: one channel per backend and process.

    The core subscribes only the ids someone waits on and unsubscribes them when
    the last waiter leaves. The plugin calls ``on_change(task_id, meta)`` from
    any thread whenever a subscribed id may have changed; ``meta`` is the new
    state when the plugin has it at hand, else ``None`` (the core then reads).
    """

    def subscribe(self, task_ids: Collection[str]) -> None: ...

    def unsubscribe(self, task_ids: Collection[str]) -> None: ...

    def close(self) -> None: ...


# --- required -------------------------------------------------------------


@hookspec(firstresult=True)
def store_result(meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool | None:
    """Persist ``meta`` (replacing any earlier state of ``meta.task_id``).

    ``ttl`` is seconds until the record may expire, or ``None`` to keep it.
    Unless ``overwrite`` is true, a stored *ready* state (SUCCESS, FAILURE,
    REVOKED) must be left as it is; the check and the write must be one atomic
    step in the store (a lock, a Lua script, a conditional UPDATE). A plugin
    with push announces the write to subscribers in the same step.
    Return ``True`` when written, ``False`` when a ready state was kept.
    """


@hookspec(firstresult=True)
def get(task_id: str) -> TaskMeta | None:
    """Return the stored meta, or ``None`` when nothing is stored (never a PENDING stand-in)."""


@hookspec(firstresult=True)
def forget(task_id: str) -> bool | None:
    """Delete the stored meta. Idempotent: return whether something was deleted."""


# --- optional, announced by capabilities ------------------------------------


@hookspec(firstresult=True)
def notify(on_change: OnChange) -> NotifyChannel | None:
    """Capability ``push``: open the process's change channel for this backend."""


@hookspec(firstresult=True)
def get_many(task_ids: Sequence[str]) -> Mapping[str, TaskMeta] | None:
    """Capability ``get_many``: read many ids in one round trip; omit the missing ones."""


@hookspec(firstresult=True)
def save_group(meta: GroupMeta, ttl: float | None) -> bool | None:
    """Capability ``groups``: persist a group's member list."""


@hookspec(firstresult=True)
def get_group(group_id: str) -> GroupMeta | None:
    """Capability ``groups``: the saved group, or ``None``."""


@hookspec(firstresult=True)
def forget_group(group_id: str) -> bool | None:
    """Capability ``groups``: delete a saved group. Idempotent."""


@hookspec(firstresult=True)
def cleanup(progress: Callable[[int], None]) -> int | None:
    """Capability ``cleanup``: delete every expired record now; return how many.

    A plugin that deletes in batches calls ``progress(count)`` after each batch
    with the number it just deleted (the ``resultstore cleanup`` command shows
    it); a plugin that deletes in one step may leave the argument out.
    """


@hookspec(firstresult=True)
def revoke(task_id: str, ttl: float | None) -> bool | None:
    """Capability ``revoke``: record ``task_id`` as revoked for ``ttl`` seconds."""


@hookspec(firstresult=True)
def is_revoked(task_id: str) -> bool | None:
    """Capability ``revoke``: whether ``task_id`` was recorded as revoked."""


@hookspec(firstresult=True)
def incr(name: str, amount: int, ttl: float | None) -> int | None:
    """Capability ``counter``: add ``amount`` to the counter ``name`` and return the new value.

    One atomic step in the store, whichever processes increment at once: each caller
    gets a value of its own (a script, an ``INSERT ... ON CONFLICT ... RETURNING``, a
    lock the engine holds). A missing counter starts from 0. ``ttl`` is the seconds
    until the counter expires, counted again from every increment, or ``None`` to keep
    it; an expired counter starts from 0 again.
    """


@hookspec(firstresult=True)
def forget_counter(name: str) -> bool | None:
    """Capability ``counter``: delete the counter. Idempotent: return whether it existed."""


@hookspec(firstresult=True)
def list_results(query: ListQuery) -> ResultPage | None:
    """Capability ``listing``: one page of stored results that pass ``query``'s filters.

    In the listing order (``resultstore._listing``: unfinished first, then newest
    ``date_done`` first, then task id, all descending), starting strictly after
    ``query.after`` (the decoded cursor) and at most ``query.limit`` long, with the
    cursor of the last item when more follow. ``ListQuery.matches`` is the reference
    for the filters; a plugin that reads its records anyway can return
    ``page_of(records, query)``.
    """


@hookspec(firstresult=True)
def count_results(query: CountQuery) -> Mapping[str, list[int]] | None:
    """Capability ``listing``: counts by state of the results in ``query``'s window,
    ``{state: [count per bucket]}`` with ``query.buckets`` counts (see
    ``CountQuery.bucket``); ``count_of(records, query)`` is the reference."""


# --- capability ``async``: asyncio twins of the storage hooks ------------------
#
# Implemented with ``async def`` (and only so): pluggy calls the implementation,
# which returns a coroutine without running it, and the core awaits that. Each
# twin keeps the contract of its sync hook and must never block the event loop
# (use the engine's asyncio client). A plugin without ``async`` is still usable
# from asyncio: the core runs its sync hooks in a worker thread.


@hookspec(firstresult=True)
def async_store_result(
    meta: TaskMeta, ttl: float | None, overwrite: bool
) -> Awaitable[bool] | None:
    """Capability ``async``: ``store_result`` without blocking the loop (same contract)."""


@hookspec(firstresult=True)
def async_get(task_id: str) -> Awaitable[TaskMeta | None] | None:
    """Capability ``async``: ``get`` without blocking the loop (same contract)."""


@hookspec(firstresult=True)
def async_forget(task_id: str) -> Awaitable[bool] | None:
    """Capability ``async``: ``forget`` without blocking the loop (same contract)."""


@hookspec(firstresult=True)
def async_get_many(task_ids: Sequence[str]) -> Awaitable[Mapping[str, TaskMeta]] | None:
    """Capabilities ``async`` and ``get_many``: ``get_many`` without blocking the loop."""


# --- every plugin -------------------------------------------------------------


@hookspec
def result_stored(meta: TaskMeta, written: bool) -> None:
    """Observers: called after every store, with whether it was written."""


@hookspec
def close() -> None:
    """Release connections, threads and files. Called once by ``Backend.close()``."""


REQUIRED_HOOKS = ("store_result", "get", "forget")
ASYNC_PREFIX = "async_"
