"""Backends the executor tests run on: memory (threads only), Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from resultstore import Backend

from ..db.conftest import postgres_admin, postgres_url, sqlite_url
from ..redis.conftest import keyprefix, redis_url, transport

__all__ = ["keyprefix", "postgres_admin", "postgres_url", "redis_url", "sqlite_url"]

SHARED = ["redis", "sqlite", "postgresql"]


def _open(kind: str, request: pytest.FixtureRequest) -> Backend:
    """A backend with extended results (the worker's name), on a store of this test's own."""
    if kind == "memory":
        return Backend(request.getfixturevalue("store_url"), extended=True)
    if kind == "redis":
        prefix = request.getfixturevalue("keyprefix")
        url = request.getfixturevalue("redis_url")
        return Backend.from_config(
            {"result_backend": url, "result_extended": True, **transport(prefix)}
        )
    fixture = {"sqlite": "sqlite_url", "postgresql": "postgres_url"}[kind]
    return Backend(request.getfixturevalue(fixture), extended=True)


@pytest.fixture(params=SHARED)
def shared_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A backend that processes share."""
    with _open(request.param, request) as backend:
        yield backend


@pytest.fixture(params=["memory", *SHARED])
def any_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with _open(request.param, request) as backend:
        yield backend


def new_id() -> str:
    return f"t-{uuid.uuid4().hex}"
