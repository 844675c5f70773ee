"""Results stored in bulk: rows built by the plugin's own row code, one executemany.

For tests that need thousands of results (a store each, through the upsert, would take
a minute per engine), and for rows with dates chosen to the microsecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from resultstore import Backend, TaskMeta
from resultstore_db import DatabaseBackend
from resultstore_db._rows import row_values


def insert_metas(backend: Backend, metas: Sequence[TaskMeta], **columns: Any) -> None:
    """Insert ``metas`` as new rows in one transaction (``date_done`` as given, else now);
    ``columns`` overrides columns of every row (``date_done=None``: rows without one)."""
    plugin = backend.plugin
    assert isinstance(plugin, DatabaseBackend)
    rows = [{"task_id": m.task_id, **row_values(plugin.codec, m), **columns} for m in metas]
    with plugin.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(plugin.tables.task.insert(), rows[start : start + 5000])
