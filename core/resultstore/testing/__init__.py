"""Tools for testing with resultstore, and the conformance suite for plugin authors.

A plugin proves itself with one test class::

    from resultstore.testing import BackendTests

    class TestMyPlugin(BackendTests):
        url = "myscheme://localhost/0"

Every test that needs a capability runs only when the plugin declares it, and
then checks that the capability really works. Needs pytest.

``RestartTests`` is the suite's server-restart test alone (``BackendTests``
includes it), for running it on a throwaway server of the test's own while the
whole suite runs on a server that must not be restarted.
"""

from __future__ import annotations

import pytest

# pytest rewrites the asserts of test files only; a failing conformance test must show
# its values too. Registered before the suite's modules are imported.
pytest.register_assert_rewrite(
    "resultstore.testing._fork",
    "resultstore.testing._hosts",
    "resultstore.testing._listing",
    "resultstore.testing._plumbing",
    "resultstore.testing._processes",
    "resultstore.testing._restart",
    "resultstore.testing._suite",
)

from ._clock import FakeClock  # noqa: E402
from ._plumbing import wait_until  # noqa: E402
from ._restart import RestartTests  # noqa: E402
from ._suite import BackendTests  # noqa: E402

__all__ = ["BackendTests", "FakeClock", "RestartTests", "wait_until"]
