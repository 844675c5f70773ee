from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import resultstore


@pytest.fixture
def store_url() -> str:
    """A memory:// URL of a store no other test uses."""
    return f"memory://t-{uuid.uuid4().hex}"


@pytest.fixture
def backend(store_url: str) -> Iterator[resultstore.Backend]:
    with resultstore.Backend(store_url) as b:
        yield b
