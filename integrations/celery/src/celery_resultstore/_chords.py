"""Chords: Celery's ``apply_chord`` / ``on_chord_part_return`` on the counter capability.

With ``counter`` (memory, db, the file example, ...) each finishing header part is
one atomic increment in the store, of a counter that ``apply_chord`` set to minus
the number of parts: of parts finishing together each gets a value of its own, so
exactly one brings the counter to 0 and runs the callback, and every other part
costs one round trip whatever the chord's size. The last part joins the header
(one ``get_many``: every part stored its state before incrementing) and sends the
callback, or fails it with Celery's ``ChordError`` when a part failed.

Without the counter (a third-party plugin may lack it) every finishing part reads the header's
members (its last ones first, and the rest only when those are ready), and the
parts that find it complete race to store a claim record: a ready state is never
replaced, atomically in every plugin, so one wins. Correct on any plugin with
``groups``; a part costs two or three round trips.
A plugin without ``groups`` gets Celery's own ``chord_unlock`` task (the base
class's ``apply_chord``), which polls the header every ``result_chord_retry_interval``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import states
from celery.backends.base import _create_chord_error_with_cause
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from celery.result import GroupResult, allow_join_result

from resultstore import Backend, Capability, GroupMeta

log = logging.getLogger("celery_resultstore")


# Without a counter, how many of a header's last members a part reads before the rest.
TAIL = 16


def counter_name(group_id: str) -> str:
    return f"chord-unlock-{group_id}"


def claim_name(group_id: str) -> str:
    return f"chord-claim-{group_id}"


def member_ids(group_tuple: Any) -> list[str]:
    """The task ids of a group in Celery's ``as_tuple`` form, nested groups' members too:
    ``((group_id, parent), [((task_id, parent), None), ((group_id, parent), [...]), ...])``."""
    (_, members) = group_tuple
    ids: list[str] = []
    for (member_id, _parent), nested in members:
        ids.extend(member_ids(((member_id, _parent), nested)) if nested else [member_id])
    return ids


class Chords:
    """Mixed into :class:`ResultStoreBackend`."""

    app: Any
    store: Backend
    expires: float | None

    @property
    def counts_chords(self) -> bool:
        return Capability.COUNTER in self.store.capabilities

    @property
    def chord_expires(self) -> float | None:
        value = self.app.conf.result_chord_expires
        return self.expires if value is None else self.prepare_expires(value)  # type: ignore[attr-defined]

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        if Capability.GROUPS not in self.store.capabilities:
            super().apply_chord(header_result_args, body, **kwargs)  # type: ignore[misc]
            return
        self.ensure_chords_allowed()  # type: ignore[attr-defined]
        header = self.app.GroupResult(*header_result_args)
        self.store.save_group_meta(
            GroupMeta(header.id, header.as_tuple()), expires=self.chord_expires
        )
        # Before any header part is sent (a frozen chord applied again starts anew): the
        # counter starts at minus the number of parts, so that the part that brings it to
        # 0 is the last one and knows it from the one increment it makes.
        if self.counts_chords:
            self.store.forget_counter(counter_name(header.id))
            parts = len(member_ids(header.as_tuple()))
            self.store.incr(counter_name(header.id), -parts, expires=self.chord_expires)
        else:
            self.store.forget(claim_name(header.id))

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        """Celery's count of the parts (before it sends the last one). apply_chord
        counted the header's members, nested groups' too, which is the same number;
        should they ever differ, the counter is corrected."""
        if not self.counts_chords:
            return
        meta = self.store.get_group_meta(group_id)
        counted = len(member_ids(meta.result)) if meta is not None else chord_size
        if counted != chord_size:
            log.warning("chord %r: %d parts, not %d", group_id, chord_size, counted)
            self.store.incr(counter_name(group_id), counted - chord_size)

    def add_to_chord(self, group_id: str, result: Any) -> None:
        """A task replaced by more (``Task.replace`` in a header): one more part to wait for."""
        if not self.counts_chords:
            super().add_to_chord(group_id, result)  # type: ignore[misc]
            return
        self.store.incr(counter_name(group_id), -1, expires=self.chord_expires)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        group_id = request.group
        if not group_id or Capability.GROUPS not in self.store.capabilities:
            return  # chord_unlock (Celery's fallback) watches the header itself
        if self.counts_chords:
            count = self.store.incr(counter_name(group_id), expires=self.chord_expires)
            if count < 0 or (count > 0 and not self._last_uncounted(group_id, request, count)):
                return  # one round trip for every part but the last
        elif not self._claimed(group_id):
            return
        callback = maybe_signature(request.chord, app=self.app)
        header = GroupResult.restore(group_id, backend=self)
        if header is None:
            self.chord_error_from_stack(  # type: ignore[attr-defined]
                callback, ChordError(f"GroupResult {group_id} no longer exists")
            )
            return
        if not self.counts_chords:
            self._finish_chord(header, callback)  # the header and claim expire with it
            return
        try:
            self._finish_chord(header, callback)
        finally:
            header.delete()
            self.store.forget_counter(counter_name(group_id))

    def _last_uncounted(self, group_id: str, request: Any, count: int) -> bool:
        """A count above 0: a header apply_chord did not count, or a part arriving again
        after its chord finished (the header is gone then: nothing to do)."""
        meta = self.store.get_group_meta(group_id)
        if meta is None:
            return False
        size = request.chord.get("chord_size") or len(member_ids(meta.result))
        if count > size:
            log.warning("chord %r: counter at %d of %d parts", group_id, count, size)
        return bool(count == size)

    def _claimed(self, group_id: str) -> bool:
        """Without a counter: whether this part is the one to call back. Every part reads
        the header's members (two round trips, and no result objects: a GroupResult would
        subscribe to every member); of those that find it complete, the first to store
        the claim wins, since a ready state is never replaced (atomically, in every
        plugin): exactly one, however many parts finish together."""
        meta = self.store.get_group_meta(group_id)
        if meta is None:
            return True  # the caller reports the lost header
        members = member_ids(meta.result)
        # The members sent last first: while they are not all ready, no need to read the
        # rest (most parts of a large chord stop here; the whole header every time made a
        # 1,000-part chord read a million records). A member not ready yet has not
        # stored its state, so its own part checks again after storing: the last to
        # store sees everything ready.
        for chunk in (members[-TAIL:], members[:-TAIL]):
            metas = self.store.get_many(chunk) if chunk else {}
            if not all(m.status in states.READY_STATES for m in metas.values()):
                return False
        return self.store.store_result(
            claim_name(group_id), os.getpid(), states.SUCCESS, expires=self.chord_expires
        )

    def _culprit(self, header: GroupResult) -> str | None:
        """The first header part that failed (one read of them all), for Celery's message
        "Dependency <id> raised ..." (Celery finds it only among cached results)."""
        metas = self.store.get_many(r.id for r in header.results)
        return next((t for t, m in metas.items() if m.status in states.PROPAGATE_STATES), None)

    def _finish_chord(self, header: GroupResult, callback: Any) -> None:
        try:
            with allow_join_result():
                values = header.join_native(
                    timeout=self.app.conf.result_chord_join_timeout, propagate=True
                )
        except Exception as exc:
            culprit = self._culprit(header)
            reason = repr(exc) if culprit is None else f"Dependency {culprit} raised {exc!r}"
            log.error("chord %r raised: %s", header.id, reason)
            error = _create_chord_error_with_cause(message=reason, original_exc=exc)
            self.chord_error_from_stack(callback=callback, exc=error)  # type: ignore[attr-defined]
            return
        try:
            self.app.amqp._retry_publish(callback.delay, values)
        except Exception as exc:
            log.exception("chord %r: sending the callback failed", header.id)
            error = _create_chord_error_with_cause(
                message=f"Callback error: {exc!r}", original_exc=exc
            )
            self.chord_error_from_stack(callback=callback, exc=error)  # type: ignore[attr-defined]
