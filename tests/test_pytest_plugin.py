"""The opt-in pytest plugin works when enabled and stays out of the way otherwise."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USES_FIXTURES = """
import resultstore

def test_expiry_on_the_fake_clock(memory_backend, fake_clock):
    memory_backend.mark_as_done("t", 1, expires=10)
    fake_clock.advance(9.5)
    assert memory_backend.get_result("t") == 1
    fake_clock.advance(0.5)
    assert memory_backend.exists("t") is False

def test_url_option(resultstore_url):
    assert resultstore_url == "memory://given"
"""


def test_fixtures_when_enabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=USES_FIXTURES)
    result = pytester.runpytest_inprocess(
        "-p", "resultstore.testing.plugin", "--resultstore-url", "memory://given"
    )
    result.assert_outcomes(passed=2)


def test_url_fixture_skips_without_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=USES_FIXTURES)
    result = pytester.runpytest_inprocess("-p", "resultstore.testing.plugin", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*no --resultstore-url given*"])


def test_not_registered_by_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=USES_FIXTURES)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'memory_backend' not found*"])
