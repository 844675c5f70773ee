"""Chords: Celery's ``apply_chord`` / ``on_chord_part_return`` on the counter capability.

With ``counter`` (memory, db, the file example, ...) each finishing header part is
one atomic increment in the store, of a counter that reaches 0 exactly when the
last part has counted: of parts finishing together each gets a value of its own,
so exactly one sees 0 and runs the callback, and every other part costs one round
trip whatever the chord's size. The size is Celery's ``set_chord_size``, which it
calls before it sends the header's last part, as its Redis backend learns it:
until then the counter stands at :data:`UNSIZED` plus the parts counted, which no
part brings to 0. ``set_chord_size`` subtracts ``UNSIZED`` and the size in one
step, and a part added by ``Task.add_to_chord`` subtracts 1: from then on the
counter is "parts counted minus parts expected". Had every part counted before the
size arrived, ``set_chord_size`` itself gets the 0 and runs the callback.

The one that gets the 0 joins the header (one ``get_many``: every part stored its
state before incrementing) and the added parts after it, and sends the callback,
or fails it with Celery's ``ChordError`` when a part failed. The header is the
group ``apply_chord`` saved, except for a header that is a generator: Celery
produces its parts (and their ids) only as it sends them, so each of its parts
records its id and index under a number of its own (two more round trips) and the
join takes them in Celery's order, by index.

Without the counter (a third-party plugin may lack it) every finishing part reads the header's
members (its last ones first, and the rest only when those are ready), and the
parts that find it complete race to store a claim record: a ready state is never
replaced, atomically in every plugin, so one wins. Correct on any plugin with
``groups``; a part costs two or three round trips. A generator header is unrolled
there before its first part is sent.
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
from celery.result import GroupResult, allow_join_result, result_from_tuple
from celery.utils.functional import _regen

from resultstore import Backend, Capability, GroupMeta

log = logging.getLogger("celery_resultstore")


# Without a counter, how many of a header's last members a part reads before the rest.
TAIL = 16

# Where a chord's counter starts: far above any number of parts (the db plugin's
# counter is a 64-bit integer), so that it reaches 0 only once the size is subtracted.
UNSIZED = 2**40

# The key apply_chord sets in the body of a chord whose header is a generator. The
# body travels in every part's message (``request.chord``, a dict, where Celery's own
# base backend reads a ``chord_size``), and Celery ignores keys it does not know.
GENERATOR_HEADER = "resultstore_generator_header"


def counter_name(group_id: str) -> str:
    return f"chord-unlock-{group_id}"


def claim_name(group_id: str) -> str:
    return f"chord-claim-{group_id}"


def added_name(group_id: str) -> str:
    """The counter that numbers the parts ``add_to_chord`` added: 1, 2, ... (each
    recorded as its result's tuple)."""
    return f"chord-added-{group_id}"


def reported_name(group_id: str) -> str:
    """The counter that numbers the finished parts of a generator header: 1, 2, ...
    (each recorded as ``[group_index, task_id]``)."""
    return f"chord-parts-{group_id}"


def record_name(counter: str, number: int) -> str:
    """The record numbered ``number`` by the counter ``counter``."""
    return f"{counter}-{number}"


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
    # The bodies of chords applied and not sized yet, by group id: set_chord_size
    # sends one if every part counted before it. Celery calls apply_chord and
    # set_chord_size in one thread, on its backend object of that thread.
    unsized_chords: dict[str, Any]

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
        group_id = header_result_args[0]
        if not self.counts_chords:
            # Unrolls a generator header: the claim needs the members.
            self._save_header(header_result_args)
            self.store.forget(claim_name(group_id))
            return
        # A generator header's results are frozen as Celery sends its parts (and those
        # it sends are copies, with ids of their own): its parts report themselves.
        if isinstance(header_result_args[1], _regen):
            body[GENERATOR_HEADER] = True
        else:
            self._save_header(header_result_args)
        self.unsized_chords[group_id] = body
        # Before any header part is sent (a frozen chord applied again starts anew).
        for name in (counter_name, added_name, reported_name):
            self.store.forget_counter(name(group_id))
        self.store.incr(counter_name(group_id), UNSIZED, expires=self.chord_expires)

    def _save_header(self, header_result_args: Any) -> None:
        header = self.app.GroupResult(*header_result_args)
        self.store.save_group_meta(
            GroupMeta(header.id, header.as_tuple()), expires=self.chord_expires
        )

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        """Celery's count of the parts, before it sends the last one. Celery calls it
        for a group that ends a chain in a header too, which ``apply_chord`` never saw
        (its parts count for the chord around it): that counter just expires."""
        if not self.counts_chords:
            return
        body = self.unsized_chords.pop(group_id, None)
        count = self.store.incr(
            counter_name(group_id), -(UNSIZED + chord_size), expires=self.chord_expires
        )
        # 0: every part counted already (Celery sends the last one after this call, so
        # not today, but that order is Celery's to change).
        if count == 0 and body is not None:
            self._call_back(group_id, maybe_signature(body, app=self.app))

    def add_to_chord(self, group_id: str, result: Any) -> None:
        """``Task.add_to_chord`` (a header part adding one): one more part to wait for,
        and its result, joined after the header's in the order they were added."""
        if not self.counts_chords:
            super().add_to_chord(group_id, result)  # type: ignore[misc]
            return
        number = self.store.incr(added_name(group_id), expires=self.chord_expires)
        self.store.store_result(
            record_name(added_name(group_id), number),
            result.as_tuple(),
            states.SUCCESS,
            expires=self.chord_expires,
            overwrite=True,
        )
        # The part that adds has not counted itself yet: the counter cannot reach 0 before.
        self.store.incr(counter_name(group_id), -1, expires=self.chord_expires)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        group_id = request.group
        if not group_id or Capability.GROUPS not in self.store.capabilities:
            return  # chord_unlock (Celery's fallback) watches the header itself
        if self.counts_chords:
            if request.chord.get(GENERATOR_HEADER):
                self._report(group_id, request)  # before counting: the last one reads it
            if self.store.incr(counter_name(group_id), expires=self.chord_expires) != 0:
                return  # one round trip for every part but the last
        elif not self._claimed(group_id):
            return
        self._call_back(group_id, maybe_signature(request.chord, app=self.app))

    def _report(self, group_id: str, request: Any) -> None:
        number = self.store.incr(reported_name(group_id), expires=self.chord_expires)
        self.store.store_result(
            record_name(reported_name(group_id), number),
            [request.group_index, request.id],
            states.SUCCESS,
            expires=self.chord_expires,
            overwrite=True,
        )

    def _call_back(self, group_id: str, callback: Any) -> None:
        if not self.counts_chords:
            header = GroupResult.restore(group_id, backend=self)
            if header is None:
                self._lost(group_id, callback)
            else:
                self._finish_chord(header, callback)  # the header and claim expire with it
            return
        try:
            if callback.get(GENERATOR_HEADER):
                parts = self._reported_parts(group_id)
            else:
                header = GroupResult.restore(group_id, backend=self)
                if header is None:
                    self._lost(group_id, callback)
                    return
                header.delete()
                parts = [*header.results, *self._added_parts(group_id)]
        except ChordError as exc:
            self.chord_error_from_stack(callback, exc)  # type: ignore[attr-defined]
        else:
            self._finish_chord(self.app.GroupResult(group_id, parts), callback)
        finally:
            self.store.forget_counter(counter_name(group_id))

    def _lost(self, group_id: str, callback: Any) -> None:
        self.chord_error_from_stack(  # type: ignore[attr-defined]
            callback, ChordError(f"GroupResult {group_id} no longer exists")
        )

    def _added_parts(self, group_id: str) -> list[Any]:
        """The results ``add_to_chord`` recorded, in the order it was called."""
        tuples = self._take_records(added_name(group_id))
        return [result_from_tuple(t, self.app) for t in tuples]

    def _reported_parts(self, group_id: str) -> list[Any]:
        """A generator header's parts, added ones too, by their index in the header as
        Celery's Redis backend orders them (an added part has the index of the part
        that added it; equal indexes in the order they finished)."""
        reports = self._take_records(reported_name(group_id))
        # Added parts reported themselves here too (they carry the chord's body): the
        # records add_to_chord kept of them are only forgotten.
        self._take_records(added_name(group_id))
        order = sorted(
            range(len(reports)), key=lambda i: (reports[i][0] is None, reports[i][0] or 0, i)
        )
        return [self.app.AsyncResult(reports[i][1]) for i in order]

    def _take_records(self, name: str) -> list[Any]:
        """The values of the records the counter ``name`` numbered, in that order;
        the records and the counter are forgotten (every part has written its own:
        it did before it counted)."""
        count = self.store.incr(name, 0, expires=self.chord_expires)
        ids = [record_name(name, number) for number in range(1, count + 1)]
        metas = self.store.get_many(ids) if ids else {}
        for task_id in ids:
            self.store.forget(task_id)
        self.store.forget_counter(name)
        lost = [task_id for task_id in ids if metas[task_id].status != states.SUCCESS]
        if lost:
            raise ChordError(f"the chord's record {lost[0]} no longer exists")
        return [metas[task_id].result for task_id in ids]

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
