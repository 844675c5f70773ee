"""Small stand-ins shared by the core tests."""

from __future__ import annotations

import traceback

import resultstore
from resultstore import hookimpl


class DictPlugin:
    """A minimal storage plugin keeping metas in a dict; it accepts every URL."""

    capabilities = frozenset({"ttl"})

    def __init__(self, config: resultstore.BackendConfig) -> None:
        self.config = config
        self.data: dict[str, resultstore.TaskMeta] = {}

    @hookimpl
    def store_result(self, meta: resultstore.TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        self.data[meta.task_id] = meta
        return True

    @hookimpl
    def get(self, task_id: str) -> resultstore.TaskMeta | None:
        return self.data.get(task_id)

    @hookimpl
    def forget(self, task_id: str) -> bool:
        return self.data.pop(task_id, None) is not None


def fail_with(exc: BaseException) -> BaseException:
    """Raise ``exc`` and return it caught, so that it carries a traceback."""
    try:
        raise exc  # RAISE-LINE
    except BaseException as caught:
        return caught


def traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
