"""The dramatiq app of the tests: its worker runs as ``dramatiq tests.dramatiq.app:broker``.

dramatiq's RedisBroker on the machine's Redis, in a namespace of the test module's own
(``DQ_NAMESPACE``); results and group callbacks' counters go to the resultstore URL in
``RS_URL``. The test process builds the same broker with :func:`make_broker`.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results

from dramatiq_resultstore import GroupCallbacks, ResultStoreBackend

from ..hostenv import REDIS_URL, store_from_env


class Refused(Exception):
    """An exception class of the app's own (not a builtin)."""


def make_broker(namespace: str, url: str, options: dict[str, Any]) -> RedisBroker:
    broker = RedisBroker(url=REDIS_URL, namespace=namespace)
    results = ResultStoreBackend(url, options=options)
    broker.add_middleware(Results(backend=results))
    broker.add_middleware(GroupCallbacks(results))

    @dramatiq.actor(broker=broker, actor_name="add", store_results=True)
    def add(x: int, y: int) -> int:
        return x + y

    @dramatiq.actor(broker=broker, actor_name="fail", store_results=True, max_retries=0)
    def fail(text: str) -> None:
        raise Refused(text)

    @dramatiq.actor(broker=broker, actor_name="kept", store_results=True, result_ttl=60_000)
    def kept() -> str:
        return "kept a minute"

    @dramatiq.actor(broker=broker, actor_name="completed", store_results=True)
    def completed(counter: str) -> int:
        # How many times a group's completion callback ran: counted in the store.
        return results.backend.incr(counter)

    return broker


if os.environ.get("DQ_NAMESPACE"):  # imported by the worker command
    broker = make_broker(os.environ["DQ_NAMESPACE"], *store_from_env())
