"""The out-of-tree example plugin, installed as its own distribution, passes the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from resultstore.testing import BackendTests


class TestFilePluginConformance(BackendTests):
    short_ttl = 0.2

    @pytest.fixture(autouse=True)
    def _fresh_directory(self, tmp_path: Path) -> None:
        self.url = f"file://{tmp_path}/results"  # type: ignore[misc]
