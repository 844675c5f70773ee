"""Chords: Celery's ``apply_chord`` / ``on_chord_part_return`` on the counter capability.

With ``counter`` (memory, db, the file example, ...) each finishing header part is
one atomic increment in the store: of parts finishing together each gets a value of
its own, so exactly one sees the chord's size and runs the callback, and every other
part costs one round trip whatever the chord's size. The last part joins the
header (one ``get_many``: every part stored its state before incrementing) and
sends the callback, or fails it with Celery's ``ChordError`` when a part failed.

Without the counter the bridge falls back to Celery's own ``chord_unlock`` task
(the base class's ``apply_chord``), which polls the header every
``result_chord_retry_interval``: slower, but correct on any plugin.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.backends.base import _create_chord_error_with_cause
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from celery.result import GroupResult, allow_join_result

from resultstore import Backend, Capability, GroupMeta

log = logging.getLogger("celery_resultstore")


def counter_name(group_id: str) -> str:
    return f"chord-unlock-{group_id}"


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
        if not self.counts_chords:
            super().apply_chord(header_result_args, body, **kwargs)  # type: ignore[misc]
            return
        self.ensure_chords_allowed()  # type: ignore[attr-defined]
        header = self.app.GroupResult(*header_result_args)
        # Before any header part is sent: a frozen chord applied again counts anew.
        self.store.forget_counter(counter_name(header.id))
        self.store.save_group_meta(
            GroupMeta(header.id, header.as_tuple()), expires=self.chord_expires
        )

    def add_to_chord(self, group_id: str, result: Any) -> None:
        """A task replaced by more (``Task.replace`` in a header): one more part to wait for."""
        if not self.counts_chords:
            super().add_to_chord(group_id, result)  # type: ignore[misc]
            return
        self.store.incr(counter_name(group_id), -1, expires=self.chord_expires)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        group_id = request.group
        if not self.counts_chords or not group_id:
            return  # chord_unlock (the fallback) watches the header itself
        size = request.chord.get("chord_size")
        count = self.store.incr(counter_name(group_id), expires=self.chord_expires)
        if size is not None and count < size:
            return
        callback = maybe_signature(request.chord, app=self.app)
        header = GroupResult.restore(group_id, backend=self)
        if header is None:
            self.chord_error_from_stack(  # type: ignore[attr-defined]
                callback, ChordError(f"GroupResult {group_id} no longer exists")
            )
            return
        size = len(header) if size is None else size
        if count != size:
            if count > size:
                log.warning("chord %r: counter at %d of %d parts", group_id, count, size)
            return
        try:
            self._finish_chord(header, callback)
        finally:
            header.delete()
            self.store.forget_counter(counter_name(group_id))

    def _finish_chord(self, header: GroupResult, callback: Any) -> None:
        try:
            with allow_join_result():
                values = header.join_native(
                    timeout=self.app.conf.result_chord_join_timeout, propagate=True
                )
        except Exception as exc:
            culprit = next(header._failed_join_report(), None)
            reason = repr(exc) if culprit is None else f"Dependency {culprit.id} raised {exc!r}"
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
