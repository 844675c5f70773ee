"""The apps bench/hosts_bench.py measures: a taskiq broker and a dramatiq broker whose
result backend is the task system's own or a resultstore bridge, as the environment says.

The worker processes import this module (``taskiq worker hosts_apps:taskiq_broker``,
``dramatiq hosts_apps:dramatiq_broker``) and so does the benchmark, with the same
environment: ``HB_SYSTEM``, ``HB_BACKEND`` ("native" or a resultstore URL), ``HB_QUEUE``
(queue, namespace and key prefix of this run).
"""

from __future__ import annotations

import os
from typing import Any

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
EXPIRES = 600  # seconds: what a run leaves behind is gone soon after


def _resultstore_options(url: str, queue: str) -> dict[str, Any]:
    if url.startswith("redis"):
        return {"result_backend_transport_options": {"global_keyprefix": f"{queue}:"}}
    return {}


def make_taskiq(backend: str, queue: str) -> Any:
    from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

    from taskiq_resultstore import ResultStoreBackend, push_waits

    broker = ListQueueBroker(REDIS_URL, queue_name=queue)
    if backend == "native":
        results: Any = RedisAsyncResultBackend(REDIS_URL, prefix_str=queue, result_ex_time=EXPIRES)
        broker = broker.with_result_backend(results)
    else:
        options = _resultstore_options(backend, queue)
        results = ResultStoreBackend(backend, result_ex_time=EXPIRES, options=options)
        broker = push_waits(broker.with_result_backend(results))

    @broker.task(task_name="echo")
    async def echo(value: int) -> int:
        return value

    return broker


def make_dramatiq(backend: str, queue: str) -> Any:
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    from dramatiq_resultstore import ResultStoreBackend

    # RabbitMQ: its consumer is pushed messages, where the Redis broker's polls with a
    # backoff; the broker then adds the same small delay to every backend measured.
    broker = RabbitmqBroker(url=RABBITMQ_URL)
    if backend == "native":
        results: Any = RedisBackend(url=REDIS_URL, namespace=queue)
    else:
        results = ResultStoreBackend(backend, options=_resultstore_options(backend, queue))
    broker.add_middleware(Results(backend=results, result_ttl=EXPIRES * 1000))
    dramatiq.set_broker(broker)

    @dramatiq.actor(broker=broker, actor_name="echo", queue_name=queue, store_results=True)
    def echo(value: int) -> int:
        return value

    return broker


if os.environ.get("HB_SYSTEM") == "taskiq":
    taskiq_broker = make_taskiq(os.environ["HB_BACKEND"], os.environ["HB_QUEUE"])
elif os.environ.get("HB_SYSTEM") == "dramatiq":
    dramatiq_broker = make_dramatiq(os.environ["HB_BACKEND"], os.environ["HB_QUEUE"])
