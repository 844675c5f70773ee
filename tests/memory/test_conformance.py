"""memory:// passes the conformance suite it is the reference for, on a fake clock."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from resultstore import Backend
from resultstore.testing import BackendTests, FakeClock


class TestMemoryConformance(BackendTests):
    @pytest.fixture(autouse=True)
    def _fresh_store(self) -> None:
        self.url = f"memory://conformance-{uuid.uuid4().hex}"  # type: ignore[misc]
        self.clock = FakeClock()

    def make_backend(self, **overrides: Any) -> Backend:
        return Backend(self.url, options={"clock": self.clock}, **overrides)

    def let_time_pass(self, seconds: float) -> None:
        self.clock.advance(seconds)
