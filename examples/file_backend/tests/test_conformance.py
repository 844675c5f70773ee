"""resultstore-file passes resultstore's conformance suite.

Run from this folder after installing the plugin, as in any plugin's own
repository: ``pip install .`` then ``pytest``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resultstore.testing import BackendTests


class TestFileBackend(BackendTests):
    # Whole directories are scanned by cleanup(); each test has a fresh one, so a pass
    # stays far shorter than this (see the guide on short_ttl and cleanup).
    short_ttl = 0.2

    @pytest.fixture(autouse=True)
    def _fresh_directory(self, tmp_path: Path) -> None:
        # One directory per test: no run or test sees another's files.
        self.url = f"file://{tmp_path}/results"  # type: ignore[misc]
