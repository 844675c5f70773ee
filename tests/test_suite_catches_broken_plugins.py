"""The conformance suite can fail: broken plugins fail exactly the tests that check them."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

BROKEN_PLUGINS = textwrap.dedent(
    '''
    import dataclasses
    import threading
    import time
    import uuid

    import pytest

    import resultstore
    from resultstore import Capability, KeyValueStore, hookimpl
    from resultstore.testing import BackendTests
    from resultstore_file import FileBackend

    ALL = {"ttl", "push", "get_many", "groups", "cleanup", "revoke"}
    STORES = {}


    class DictStore(KeyValueStore):
        """Honest key-value plugin over a dict shared by every Backend of one URL."""

        capabilities = frozenset({"ttl", "get_many", "groups", "revoke"})
        process_local = True  # a dict in this process

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


    class WrongTaskId(DictStore):
        """Answers with the right content under another task's id."""

        def decode_meta(self, task_id, data):
            return dataclasses.replace(super().decode_meta(task_id, data), task_id="someone-else")


    class Exchange:
        """A pub/sub server of one URL: restart() cuts every channel's connection."""

        def __init__(self):
            self.lock = threading.Lock()
            self.connected = set()

        def publish(self, task_id, meta):
            with self.lock:
                listeners = list(self.connected)
            for channel in listeners:  # outside the lock: on_change wakes waiters
                channel.deliver(task_id, meta)

        def restart(self):
            with self.lock:
                cut, self.connected = self.connected, set()
            for channel in cut:
                channel.reconnect()


    EXCHANGES = {}


    class _Channel:
        def __init__(self, exchange, on_change):
            self.exchange, self.on_change, self.ids = exchange, on_change, set()
            self.reconnect()

        def reconnect(self):
            with self.exchange.lock:
                self.exchange.connected.add(self)
            for task_id in list(self.ids):  # what was stored during the cut
                self.on_change(task_id, None)

        def deliver(self, task_id, meta):
            if task_id in self.ids:
                self.on_change(task_id, meta)

        def subscribe(self, task_ids): self.ids.update(task_ids)
        def unsubscribe(self, task_ids): self.ids.difference_update(task_ids)

        def close(self):
            with self.exchange.lock:
                self.exchange.connected.discard(self)


    class _ForgetfulChannel(_Channel):
        def reconnect(self):  # reconnects without its subscriptions: push is dead after it
            self.ids = set()
            super().reconnect()


    class Reconnects(DictStore):
        """Honest push over an exchange that can restart."""

        capabilities = DictStore.capabilities | {"push"}
        channel = _Channel

        def announce(self, meta, data):
            EXCHANGES.setdefault(self.config.url.raw, Exchange()).publish(meta.task_id, meta)

        @hookimpl
        def notify(self, on_change):
            return self.channel(EXCHANGES.setdefault(self.config.url.raw, Exchange()), on_change)


    class StopsAfterReconnect(Reconnects):
        """Push that works until the first reconnect."""

        channel = _ForgetfulChannel


    class ProcessLockOnFiles(FileBackend):
        """A shared engine (files) whose ready guard is a lock inside one process only."""

        kv_lock = KeyValueStore.kv_lock


    for scheme, cls in [("honest", DictStore), ("ignorettl", IgnoresTTL),
                        ("deaf", LosesWakeups), ("liar", LiesAboutGroups),
                        ("processlock", ProcessLockOnFiles), ("wrongid", WrongTaskId),
                        ("reconnects", Reconnects), ("stopsafter", StopsAfterReconnect)]:
        resultstore.register_backend(scheme, cls)


    class Suite(BackendTests):
        short_ttl = 0.05
        wait_timeout = 1.5  # longer than wake_bound: a deaf channel must fail on latency
        wake_bound = 0.3
        expiry_grace = 0.3
        reconnect_bound = 0.5

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


    class TestWrongTaskId(Suite):
        scheme = "wrongid"


    class WithRestarts(Suite):
        @pytest.fixture
        def restart_server(self):
            return EXCHANGES.setdefault(self.url, Exchange()).restart


    class TestReconnects(WithRestarts):
        scheme = "reconnects"


    class TestStopsAfterReconnect(WithRestarts):
        scheme = "stopsafter"


    class TestProcessLockOnFiles(Suite):
        @pytest.fixture(autouse=True)
        def _fresh(self, tmp_path):
            self.url = f"processlock://{tmp_path}"
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
        "TestProcessLockOnFiles::test_ready_state_is_kept_when_another_process_races",
        # Most of all, the test that says what is wrong: a read answers for another id.
        "TestWrongTaskId::test_every_read_names_the_task_it_was_asked_for",
        "TestWrongTaskId::test_a_watch_hears_every_store_of_its_ids",
        "TestWrongTaskId::test_get_many_and_join",
        "TestWrongTaskId::test_async_for_yields_in_completion_order",
        "TestWrongTaskId::test_async_join_in_member_order",
        "TestWrongTaskId::test_async_join_raises_the_first_failure",
        "TestProcessLockOnFiles::test_a_counter_gives_each_process_its_own_value",
        "TestStopsAfterReconnect::test_waits_begun_before_a_restart_get_results_stored_after_it",
    }


def test_failures_show_the_values_compared(pytester: pytest.Pytester) -> None:
    """The suite's asserts are rewritten although it lives in an installed package."""
    pytester.makepyfile(test_broken=BROKEN_PLUGINS)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-k", "TestWrongTaskId and names_the_task"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert 'someone-else' == 'conformance-*"])


def test_a_channel_dead_after_a_reconnect_fails_the_restart_test(pytester: pytest.Pytester) -> None:
    """Only where a restart_server fixture is given; an honest channel passes it."""
    pytester.makepyfile(test_broken=BROKEN_PLUGINS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA", "-k", "restart")
    result.assert_outcomes(passed=1, failed=1, skipped=6)
    result.stdout.fnmatch_lines(
        [
            "E * Failed: wait 1 of 3, begun before the server restarted, was not woken within "
            "reconnect_bound (0.5 s) of its result stored after the restart: push did not "
            "survive the restart",
            "PASSED test_broken.py::TestReconnects::test_waits_begun_before_a_restart_*",
        ]
    )
