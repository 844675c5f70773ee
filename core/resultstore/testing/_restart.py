"""The conformance test of a server restart: push must survive the cut, by itself.

Runs when the author gives the suite a way to restart the server (the
``restart_server`` fixture). Waits begun before the cut block without a
deadline, so nothing but the plugin's channel (or the core's poller) can end
them: a channel that stays dead after a reconnect is not rescued by the read a
wait makes at its deadline, and fails here instead of in production, where its
waits would return late by their whole timeout.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .. import STARTED, Backend
from ._plumbing import BlockedWait, Plumbing, wait_until

# Waits begun before the cut: the first result stored after it may reach its wait by
# the channel's re-check at its reconnect; the others only by push that really works.
WAITS = 3


class RestartTests(Plumbing):
    def test_waits_begun_before_a_restart_get_results_stored_after_it(
        self, backend: Backend, other: Backend, restart_server: Callable[[], None] | None
    ) -> None:
        if restart_server is None:
            pytest.skip("no restart_server fixture given (see BackendTests)")
        ids = [self.new_id() for _ in range(WAITS)]
        waits = {t: BlockedWait(backend, t, None) for t in ids}
        self.wait_until_waiting(backend, set(ids))
        for task_id in ids:
            other.mark_as_started(task_id)
        # Each wait has read its task's STARTED, so it is past its first reads (which would
        # meet the cut, and raise) and blocked until woken; both sides are connected.
        wait_until(
            lambda: all(w.seen == [STARTED] for w in waits.values()),
            self.wait_timeout,
            "every wait saw its task STARTED",
        )

        restart_server()

        for n, task_id in enumerate(ids):
            other.mark_as_done(task_id, n)  # `other` reconnects too, by its retries
            if not waits[task_id].joined(self.reconnect_bound):
                pytest.fail(
                    f"wait {n + 1} of {WAITS}, begun before the server restarted, was not "
                    f"woken within reconnect_bound ({self.reconnect_bound} s) of its result "
                    "stored after the restart: push did not survive the restart"
                )
            assert waits[task_id].result() == n
        assert backend.waiting_ids() == frozenset()
