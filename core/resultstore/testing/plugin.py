"""An opt-in pytest plugin for applications that use resultstore.

It is not registered automatically; enable it with ``-p resultstore.testing.plugin``
on the command line or ``pytest_plugins = ["resultstore.testing.plugin"]`` in a
top-level conftest.py. Fixtures:

- ``fake_clock``: a :class:`FakeClock` to move expiry by hand.
- ``memory_backend``: a ``Backend`` on a fresh ``memory://`` store driven by
  ``fake_clock``, closed after the test.
- ``resultstore_url``: the URL given with ``--resultstore-url`` (the test is
  skipped without one), for running your tests against a real engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from .. import Backend
from ._clock import FakeClock


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--resultstore-url",
        default=None,
        help="backend URL for tests that use the resultstore_url fixture",
    )


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_backend(fake_clock: FakeClock) -> Iterator[Backend]:
    from resultstore_memory import drop_store

    name = f"test-{uuid.uuid4().hex}"
    with Backend(f"memory://{name}", options={"clock": fake_clock}) as backend:
        yield backend
    drop_store(name)  # memory:// stores otherwise live as long as the process


@pytest.fixture
def resultstore_url(request: pytest.FixtureRequest) -> str:
    url = request.config.getoption("--resultstore-url")
    if not url:
        pytest.skip("no --resultstore-url given")
    return str(url)
