"""One row the client cannot decode, on an engine served by the core's shared poller (SQLite).

The row is written behind the backend's back (pickle bytes where only json is accepted),
as an old Celery deployment might have left it: its own waiter gets the DecodeError at
once, and every other wait of the process goes on being served.
"""

from __future__ import annotations

import pickle
import sqlite3
from functools import partial

import pytest

import resultstore
from resultstore import AsyncResult, Backend, Capability

from ..threads import DEADLINE, Worker, wait_until


@pytest.mark.parametrize("timeout", [DEADLINE, None], ids=["with-timeout", "without"])
def test_a_pickled_row_fails_its_own_wait_and_no_other(
    sqlite_url: str, timeout: float | None
) -> None:
    with Backend(sqlite_url) as backend:
        assert Capability.PUSH not in backend.capabilities
        backend.mark_as_started("bad")
        good = Worker(partial(AsyncResult("good", backend).get, timeout=timeout))
        bad = Worker(partial(AsyncResult("bad", backend).get, timeout=timeout))
        good.start()
        bad.start()
        wait_until(lambda: backend.waiting_ids() == {"good", "bad"}, "both waits are blocked")
        with sqlite3.connect(sqlite_url.removeprefix("db+sqlite:///")) as db:
            db.execute(
                "UPDATE celery_taskmeta SET status = 'SUCCESS', result = ? WHERE task_id = 'bad'",
                (pickle.dumps(42),),
            )
        with pytest.raises(
            resultstore.DecodeError, match="'pickle' is not in result_accept_content"
        ):
            bad.finish()
        assert bad.elapsed < DEADLINE / 2
        backend.mark_as_done("good", "fine")
        assert good.finish() == "fine"
        assert backend.waiting_ids() == frozenset()
