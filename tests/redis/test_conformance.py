"""resultstore-redis passes the conformance suite on the machine's Redis server."""

from __future__ import annotations

from typing import Any

import pytest

from resultstore import Backend
from resultstore.testing import BackendTests

from .conftest import transport


class TestRedisConformance(BackendTests):
    short_ttl = 0.2

    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str, keyprefix: str) -> None:
        self.url = redis_url  # type: ignore[misc]
        self.prefix = keyprefix

    def make_backend(self, **overrides: Any) -> Backend:
        return Backend(self.url, options=transport(self.prefix), **overrides)


class TestRedisConformanceListIndex(TestRedisConformance):
    """The whole suite again with the listing index on: every store, forget and expiry
    must keep it, and every listing test is answered from it instead of a SCAN."""

    def make_backend(self, **overrides: Any) -> Backend:
        options = {**transport(self.prefix), "redis_list_index": True}
        return Backend(self.url, options=options, **overrides)
