"""resultstore-redis passes the suite's restart test on a server of its own.

The restart is SIGKILL, then a new server on the same port: every connection is
cut and every key is gone. The rest of the suite runs on the machine's server
(test_conformance.py), which no test may restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from resultstore.testing import RestartTests

from .servers import RedisServer


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


class TestRedisRestart(RestartTests):
    @pytest.fixture(autouse=True)
    def _server(self, own_redis: RedisServer) -> None:
        self.url = own_redis.url  # type: ignore[misc]

    @pytest.fixture
    def restart_server(self, own_redis: RedisServer) -> Callable[[], None]:
        def restart() -> None:
            own_redis.stop()
            own_redis.start()  # returns once the new server answers PING, within 10 s

        return restart
