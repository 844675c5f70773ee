"""The conformance suite can fail: broken plugins fail exactly the tests that check them."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

BROKEN_PLUGINS = textwrap.dedent(
    '''
    import time
    import uuid

    import pytest

    import resultstore
    from resultstore import Capability, KeyValueStore, hookimpl
    from resultstore.testing import BackendTests

    ALL = {"ttl", "push", "get_many", "groups", "cleanup", "revoke"}
    STORES = {}


    class DictStore(KeyValueStore):
        """Honest key-value plugin over a dict shared by every Backend of one URL."""

        capabilities = frozenset({"ttl", "get_many", "groups", "revoke"})

        def __init__(self, config):
            super().__init__(config)
            self.data = STORES.setdefault(config.url.raw, {})

        def kv_get(self, key):
            value, expires_at = self.data.get(key, (None, None))
            if expires_at is not None and expires_at <= time.time():
                return None
            return value

        def kv_set(self, key, value, ttl):
            self.data[key] = (value, None if ttl is None else time.time() + ttl)

        def kv_delete(self, key):
            return self.kv_get(key) is not None and self.data.pop(key) is not None


    class IgnoresTTL(DictStore):
        """Claims ttl, keeps everything forever."""

        def kv_set(self, key, value, ttl):
            super().kv_set(key, value, None)


    class _DeafChannel:
        def subscribe(self, task_ids): pass
        def unsubscribe(self, task_ids): pass
        def close(self): pass


    class LosesWakeups(DictStore):
        """Claims push, never delivers a notification."""

        capabilities = DictStore.capabilities | {"push"}

        @hookimpl
        def notify(self, on_change):
            return _DeafChannel()


    class LiesAboutGroups(DictStore):
        """Claims groups, forgets them at once."""

        @hookimpl
        def get_group(self, group_id):
            return None


    for scheme, cls in [("honest", DictStore), ("ignorettl", IgnoresTTL),
                        ("deaf", LosesWakeups), ("liar", LiesAboutGroups)]:
        resultstore.register_backend(scheme, cls)


    class Suite(BackendTests):
        short_ttl = 0.05
        wait_timeout = 1.5  # longer than wake_bound: a deaf channel must fail on latency
        wake_bound = 0.3
        expiry_grace = 0.3

        @pytest.fixture(autouse=True)
        def _fresh(self):
            self.url = f"{self.scheme}://{uuid.uuid4().hex}"

        def test_scheme_is_published_as_entry_point(self):
            pytest.skip("registered in-process, not an installed distribution")


    class TestHonest(Suite):
        scheme = "honest"


    class TestIgnoresTTL(Suite):
        scheme = "ignorettl"


    class TestLosesWakeups(Suite):
        scheme = "deaf"


    class TestLiesAboutGroups(Suite):
        scheme = "liar"
    '''
)


def failed_tests(pytester: pytest.Pytester) -> set[str]:
    pytester.makepyfile(test_broken=BROKEN_PLUGINS)
    reprec = pytester.inline_run("-p", "no:cacheprovider", "-p", "no:randomly")
    _, _, failed = reprec.listoutcomes()
    return {report.nodeid.split("::", 1)[1] for report in failed}


def test_suite_fails_exactly_the_broken_capabilities(pytester: pytest.Pytester) -> None:
    assert failed_tests(pytester) == {
        "TestIgnoresTTL::test_ttl_expiry",
        "TestLosesWakeups::test_a_store_wakes_a_blocked_waiter",
        "TestLosesWakeups::test_no_wakeup_is_lost",
        "TestLosesWakeups::test_async_store_wakes_an_await",
        "TestLosesWakeups::test_a_watch_hears_every_store_of_its_ids",
        "TestLosesWakeups::test_a_forked_child_uses_the_backend_and_leaves_the_parent_alone",
        "TestLiesAboutGroups::test_groups",
        "TestLiesAboutGroups::test_a_groups_raw_meta_round_trips",
    }
