"""resultstore-db passes the conformance suite on SQLite (a file), PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from resultstore import Backend, TaskMeta
from resultstore.testing import BackendTests

from .bulk import insert_metas


class DatabaseTests(BackendTests):
    short_ttl = 0.3
    keeps_group_ids = False  # Celery's celery_taskmeta has no group_id/parent_id columns

    def seed_results(self, backend: Backend, metas: Sequence[TaskMeta]) -> None:
        # One executemany of the plugin's own rows: 10,000 stores took a minute per engine.
        insert_metas(backend, metas)


class TestSQLiteConformance(DatabaseTests):
    @pytest.fixture(autouse=True)
    def _database(self, sqlite_url: str) -> None:
        self.url = sqlite_url  # type: ignore[misc]


class TestPostgreSQLConformance(DatabaseTests):
    @pytest.fixture(autouse=True)
    def _database(self, postgres_url: str) -> None:
        self.url = postgres_url  # type: ignore[misc]


class TestMariaDBConformance(DatabaseTests):
    @pytest.fixture(autouse=True)
    def _database(self, mysql_url: str) -> None:
        self.url = mysql_url  # type: ignore[misc]
