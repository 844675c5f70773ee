"""``await task.wait_result(timeout=...)`` by push.

taskiq's ``AsyncTaskiqTask.wait_result`` asks ``is_result_ready`` and sleeps
``check_interval`` (0.2 s) in a loop, and its kicker builds that class itself; a
result backend cannot change it. :func:`push_waits` makes the broker's tasks
return :class:`ResultStoreTask`, whose ``wait_result`` sleeps on the store's push
channel instead: the call a taskiq user already writes then waits by push.
"""

from __future__ import annotations

import logging
from copy import copy
from typing import Any, TypeVar

from taskiq import AsyncBroker, TaskiqResult
from taskiq.compat import parse_obj_as
from taskiq.decor import AsyncTaskiqDecoratedTask
from taskiq.kicker import AsyncKicker
from taskiq.task import AsyncTaskiqTask

from ._backend import ResultStoreBackend

logger = logging.getLogger("taskiq.task")  # where taskiq's own task logs the same warning
_T = TypeVar("_T")
_B = TypeVar("_B", bound=AsyncBroker)


class ResultStoreTask(AsyncTaskiqTask[_T]):
    """A sent task whose ``wait_result`` waits by push on a :class:`ResultStoreBackend`.

    ``check_interval`` is accepted for taskiq's signature and not used; ``timeout``
    keeps taskiq's meaning (a negative or zero value: no deadline) and its error
    (``TaskiqResultTimeoutError``). On another result backend it polls as taskiq does.
    """

    async def wait_result(
        self, check_interval: float = 0.2, timeout: float = -1.0, with_logs: bool = False
    ) -> TaskiqResult[_T]:
        backend = self.result_backend
        if not isinstance(backend, ResultStoreBackend):
            return await super().wait_result(check_interval, timeout, with_logs)
        meta = await backend.wait_ready(self.task_id, timeout if timeout > 0 else None)
        # The wait's last read is the result: no second round trip through get_result,
        # whose parsing of the task's return type this repeats.
        result: TaskiqResult[_T] = await backend.take(meta, with_logs)
        if self.return_type is not None:
            try:
                result.return_value = parse_obj_as(self.return_type, result.return_value)
            except ValueError:
                logger.warning("Cannot parse return type into %s", self.return_type)
        return result


class PushKicker(AsyncKicker[Any, _T]):
    """taskiq's kicker, returning :class:`ResultStoreTask`."""

    async def kiq(self, *args: Any, **kwargs: Any) -> ResultStoreTask[_T]:
        sent = await super().kiq(*args, **kwargs)
        return ResultStoreTask(sent.task_id, sent.result_backend, sent.return_type)


class PushDecoratedTask(AsyncTaskiqDecoratedTask[Any, _T]):
    """taskiq's decorated task, whose ``kiq`` and ``kicker()`` use :class:`PushKicker`."""

    def kicker(self) -> PushKicker[_T]:
        return PushKicker(
            task_name=self.task_name,
            broker=self.broker,
            labels=copy(self.labels),
            return_type=self.return_type,
        )


def push_waits(broker: _B) -> _B:
    """Make the tasks this broker declares from now on wait for results by push.

    Call it where the broker is built, before ``@broker.task``: a task declared
    earlier keeps taskiq's polling ``wait_result``. Returns the broker.
    """
    if broker.decorator_class is AsyncTaskiqDecoratedTask:
        broker.decorator_class = PushDecoratedTask
    elif not issubclass(broker.decorator_class, PushDecoratedTask):
        # A broker with a task class of its own (taskiq's shared broker): keep it.
        broker.decorator_class = type(  # type: ignore[assignment]
            "Push" + broker.decorator_class.__name__,
            (PushDecoratedTask, broker.decorator_class),
            {},
        )
    return broker
