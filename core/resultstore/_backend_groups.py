"""Groups and counters of :class:`Backend`: optional capabilities a host builds joins and
chords on.

A group is its member list in Celery's ``as_tuple`` form; hosts with result
classes of their own (Celery's GroupResult) read and write that raw form. A
counter is an integer that any process increments and reads back in one atomic
step of the store, with an expiry: the step a chord needs to know that its last
part has finished, once, however many parts finish together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ._args import DEFAULT, Expires, _Default, validate_task_id
from ._backend_plugin import PluginHost
from ._meta import GroupMeta
from ._plugins import Capability

if TYPE_CHECKING:
    from ._backend import Backend
    from ._result import GroupResult


class Groups(PluginHost):
    """Mixed into :class:`Backend`."""

    _ttl: Callable[[Expires | _Default], float | None]

    # --- groups ---------------------------------------------------------------------

    def save_group(
        self, group_id: str, result: GroupResult, *, expires: Expires | _Default = DEFAULT
    ) -> None:
        # Group members are validated ids: their tuple always encodes.
        self.save_group_meta(GroupMeta(group_id, result.as_tuple()), expires=expires)

    def save_group_meta(self, meta: GroupMeta, *, expires: Expires | _Default = DEFAULT) -> None:
        """Store a group as it is: ``meta.result`` in Celery's ``as_tuple`` form (a host's
        own group class writes its tuple here). Raises EncodeError (storing nothing) when
        the tuple cannot be serialized."""
        if not isinstance(meta, GroupMeta):
            raise TypeError(f"meta must be a GroupMeta, got {type(meta).__name__}")
        self._require(Capability.GROUPS, "save_group")
        validate_task_id(meta.group_id, "group id")
        self._hook.save_group(meta=meta, ttl=self._ttl(expires))

    def get_group_meta(self, group_id: str) -> GroupMeta | None:
        """The stored group as it is (Celery's ``as_tuple`` form), or ``None``."""
        self._require(Capability.GROUPS, "get_group_meta")
        meta: GroupMeta | None = self._hook.get_group(
            group_id=validate_task_id(group_id, "group id")
        )
        return meta

    def restore_group(self, group_id: str) -> GroupResult | None:
        from ._result import GroupResult, result_from_tuple  # they sit on top of Backend

        meta = self.get_group_meta(group_id)
        if meta is None:
            return None
        group = result_from_tuple(meta.result, cast("Backend", self))
        if not isinstance(group, GroupResult):
            raise ValueError(f"group {group_id!r} holds {meta.result!r:.200}, not a group")
        return group

    def delete_group(self, group_id: str) -> bool:
        self._require(Capability.GROUPS, "delete_group")
        return bool(self._hook.forget_group(group_id=validate_task_id(group_id, "group id")))

    # --- counters -------------------------------------------------------------------------

    def incr(self, name: str, amount: int = 1, *, expires: Expires | _Default = DEFAULT) -> int:
        """Add ``amount`` to the counter ``name`` and return its new value, in one atomic
        step of the store (capability ``counter``): of many processes incrementing at
        once, each gets a value of its own. A counter nobody incremented for
        ``expires`` seconds (``result_expires`` by default; ``None``: never) is gone
        and starts again from 0."""
        self._require(Capability.COUNTER, "incr")
        validate_task_id(name, "counter name")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be an int, got {amount!r}")
        value = self._hook.incr(name=name, amount=amount, ttl=self._ttl(expires))
        return int(value)

    def forget_counter(self, name: str) -> bool:
        """Delete the counter ``name``. Idempotent; returns whether it existed."""
        self._require(Capability.COUNTER, "forget_counter")
        return bool(self._hook.forget_counter(name=validate_task_id(name, "counter name")))
