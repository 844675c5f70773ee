"""taskiq's result backend on resultstore: pick the store by URL, wait by push.

>>> broker = ListQueueBroker("redis://localhost:6379/0")
>>> broker = push_waits(broker.with_result_backend(ResultStoreBackend("db+sqlite:///r.db")))
"""

from __future__ import annotations

from ._backend import PROGRESS_SUFFIX, ResultIsMissingError, ResultStoreBackend
from ._task import PushDecoratedTask, PushKicker, ResultStoreTask, push_waits

__all__ = [
    "PROGRESS_SUFFIX",
    "PushDecoratedTask",
    "PushKicker",
    "ResultIsMissingError",
    "ResultStoreBackend",
    "ResultStoreTask",
    "push_waits",
]
