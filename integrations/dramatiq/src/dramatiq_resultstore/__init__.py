"""dramatiq's results backend on resultstore: pick the store by URL, get results by push.

>>> backend = ResultStoreBackend("db+postgresql://app@db/app")
>>> broker.add_middleware(Results(backend=backend))
>>> broker.add_middleware(GroupCallbacks(backend))  # for group completion callbacks
"""

from __future__ import annotations

from ._backend import ResultStoreBackend
from ._barrier import CounterBarrierBackend, GroupCallbacks

__all__ = ["CounterBarrierBackend", "GroupCallbacks", "ResultStoreBackend"]
