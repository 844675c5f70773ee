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
