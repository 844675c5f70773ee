"""Tools for testing with resultstore, and the conformance suite for plugin authors.

A plugin proves itself with one test class::

    from resultstore.testing import BackendTests

    class TestMyPlugin(BackendTests):
        url = "myscheme://localhost/0"

Every test that needs a capability runs only when the plugin declares it, and
then checks that the capability really works. Needs pytest.
"""

from __future__ import annotations

from ._clock import FakeClock
from ._plumbing import wait_until
from ._suite import BackendTests

__all__ = ["BackendTests", "FakeClock", "wait_until"]
