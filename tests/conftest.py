from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import resultstore
from resultstore_memory import drop_store


@pytest.fixture
def store_url() -> Iterator[str]:
    """A memory:// URL of a store no other test uses (dropped afterwards)."""
    name = f"t-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    drop_store(name)


@pytest.fixture
def backend(store_url: str) -> Iterator[resultstore.Backend]:
    with resultstore.Backend(store_url) as b:
        yield b


@pytest.fixture
def first_party_hidden(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Resolve as if resultstore-redis and resultstore-db were not installed."""
    from resultstore import _registry

    hidden = {"resultstore-redis", "resultstore-db"}
    real = _registry.entry_points

    def visible(**selection: str) -> list[Any]:
        return [ep for ep in real(**selection) if ep.dist is None or ep.dist.name not in hidden]

    monkeypatch.setattr(_registry, "entry_points", visible)
    _registry._cache.clear()
    yield
    _registry._cache.clear()
