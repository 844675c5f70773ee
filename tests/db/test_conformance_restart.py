"""resultstore-db passes the suite's restart test on a PostgreSQL cluster of its own.

The restart is an immediate stop (a crash, for the clients) and a start with
crash recovery: every connection is cut, the LISTEN one too. The rest of the
suite runs on the machine's server (test_conformance.py), which no test may
restart.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from resultstore.testing import RestartTests

from .servers import PostgresServer


class TestPostgreSQLRestart(RestartTests):
    @pytest.fixture(autouse=True)
    def _database(self, pg_server: PostgresServer) -> None:
        name = pg_server.create_database()  # gone with the module's cluster
        self.url = f"db+postgresql://postgres@127.0.0.1:{pg_server.port}/{name}"  # type: ignore[misc]

    @pytest.fixture
    def restart_server(self, pg_server: PostgresServer) -> Callable[[], None]:
        def restart() -> None:
            pg_server.stop()
            pg_server.start()  # pg_ctl -w: returns once it accepts connections, within 30 s

        return restart
