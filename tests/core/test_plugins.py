"""The hook contract: validation of storage plugins, wrappers and observers, and a KV plugin."""

from __future__ import annotations

import collections
import inspect
import json
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, ClassVar

import pytest

import resultstore
from resultstore import (
    SUCCESS,
    AsyncResult,
    Backend,
    BackendConfig,
    Capability,
    KeyValueStore,
    PluginValidationError,
    TaskMeta,
    hookimpl,
)

from ..doubles import DictPlugin

SCHEME = "hooktest"
URL = f"{SCHEME}://"


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --- storage plugins, good and bad -------------------------------------------------------


class Good:
    """A valid storage plugin; the others below break one rule each."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"ttl"})
    instances: ClassVar[list[Good]] = []

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.data: dict[str, TaskMeta] = {}
        self.closed = 0
        type(self).instances.append(self)

    @hookimpl
    def store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        current = self.data.get(meta.task_id)
        if current is not None and current.ready and not overwrite:
            return False
        self.data[meta.task_id] = meta
        return True

    @hookimpl
    def get(self, task_id: str) -> TaskMeta | None:
        return self.data.get(task_id)

    @hookimpl
    def forget(self, task_id: str) -> bool:
        return self.data.pop(task_id, None) is not None

    @hookimpl
    def close(self) -> None:
        self.closed += 1


class Misspelt(Good):
    @hookimpl
    def gett(self, task_id: str) -> TaskMeta | None:
        return None


class ExtraArgument(Good):
    @hookimpl
    def get(self, task_id: str, extra: int) -> TaskMeta | None:  # type: ignore[override]
        return None


class AsyncGet(Good):
    @hookimpl
    async def get(self, task_id: str) -> TaskMeta | None:  # type: ignore[override]
        return None


class Undecorated(Good):
    def forget(self, task_id: str) -> bool:
        return False


class NoForget:
    capabilities: ClassVar[frozenset[str]] = frozenset({"ttl"})

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    @hookimpl
    def store_result(self, meta: TaskMeta, ttl: float | None, overwrite: bool) -> bool:
        return True

    @hookimpl
    def get(self, task_id: str) -> TaskMeta | None:
        return None


class PushWithoutNotify(Good):
    capabilities: ClassVar[frozenset[str]] = frozenset({"ttl", "push"})


class GroupsHalfDone(Good):
    capabilities: ClassVar[frozenset[str]] = frozenset({"ttl", "groups"})

    @hookimpl
    def get_group(self, group_id: str) -> None:
        return None


class UnknownCapability(Good):
    capabilities: ClassVar[frozenset[str]] = frozenset({"ttl", "teleport"})


class CapabilitiesAsString(Good):
    capabilities = "ttl"  # type: ignore[assignment]


class NoExpiry(Good):
    capabilities: ClassVar[frozenset[str]] = frozenset()


class CleanupOnly(Good):
    capabilities: ClassVar[frozenset[str]] = frozenset({"cleanup"})

    @hookimpl
    def cleanup(self) -> int:
        return 0


class SubsetArguments(Good):
    """Implementations may take a subset of the spec's arguments (pluggy's rule)."""

    @hookimpl
    def store_result(self, meta: TaskMeta) -> bool:  # type: ignore[override]
        self.data[meta.task_id] = meta
        return True


@pytest.fixture
def use() -> Iterator[Callable[[type], str]]:
    """``use(PluginClass)`` serves ``hooktest://`` with it for one test."""

    def _use(cls: type) -> str:
        resultstore.register_backend(SCHEME, cls)
        return URL

    yield _use
    resultstore.unregister_backend(SCHEME)
    Good.instances.clear()


def _rejected(use: Callable[[type], str], cls: type, **kwargs: Any) -> str:
    with pytest.raises(PluginValidationError) as info:
        Backend(use(cls), **kwargs)
    assert isinstance(info.value, TypeError)
    return str(info.value)


def test_a_valid_plugin_is_accepted(use: Callable[[type], str]) -> None:
    with Backend(use(Good)) as backend:
        assert type(backend.plugin) is Good
        assert backend.capabilities == frozenset({Capability.TTL})
        assert backend.mark_as_done("t", 1) is True
        assert backend.get_result("t") == 1
    assert Good.instances[0].closed == 1


def test_misspelt_hook(use: Callable[[type], str]) -> None:
    assert _rejected(use, Misspelt) == (
        f"plugin {qualname(Misspelt)}: unknown hook 'gett'; did you mean 'get'?"
    )
    assert qualname(Misspelt) == f"{__name__}.Misspelt"


def test_unknown_argument(use: Callable[[type], str]) -> None:
    assert _rejected(use, ExtraArgument) == (
        f"plugin {qualname(ExtraArgument)}: hook 'get' takes (task_id, extra) but the spec is "
        "get(task_id); unknown argument(s): extra"
    )


def test_async_hook(use: Callable[[type], str]) -> None:
    assert _rejected(use, AsyncGet) == (
        f"plugin {qualname(AsyncGet)}: hook 'get' must be a plain function, not 'async def'"
    )


def test_hook_named_method_without_hookimpl(use: Callable[[type], str]) -> None:
    assert _rejected(use, Undecorated) == (
        f"plugin {qualname(Undecorated)}: method 'forget' has the name of a hook but is not "
        "decorated with @resultstore.hookimpl"
    )


def test_missing_required_hook(use: Callable[[type], str]) -> None:
    assert _rejected(use, NoForget) == (
        f"plugin {qualname(NoForget)} does not implement the required hook 'forget'"
    )


def test_capability_without_its_hook(use: Callable[[type], str]) -> None:
    assert _rejected(use, PushWithoutNotify) == (
        f"plugin {qualname(PushWithoutNotify)} declares capability 'push' but does not "
        "implement 'notify'"
    )


def test_capability_with_some_of_its_hooks(use: Callable[[type], str]) -> None:
    assert _rejected(use, GroupsHalfDone) == (
        f"plugin {qualname(GroupsHalfDone)} declares capability 'groups' but does not "
        "implement 'save_group', 'forget_group'"
    )


def test_unknown_capability(use: Callable[[type], str]) -> None:
    assert _rejected(use, UnknownCapability) == (
        f"plugin {qualname(UnknownCapability)} declares unknown capability 'teleport' "
        "(known: ttl, push, get_many, groups, cleanup, revoke, async, counter, listing)"
    )


def test_capabilities_must_be_a_collection(use: Callable[[type], str]) -> None:
    assert _rejected(use, CapabilitiesAsString) == (
        f"plugin {qualname(CapabilitiesAsString)}: 'capabilities' must be a set of names, got 'ttl'"
    )


def test_no_expiry_needs_expires_none(use: Callable[[type], str]) -> None:
    assert _rejected(use, NoExpiry) == (
        f"plugin {qualname(NoExpiry)} can neither expire results (ttl) nor clean them up "
        "(cleanup); pass expires=None to keep results until forgotten"
    )
    # The plugin that was started is closed again, not leaked.
    assert [p.closed for p in Good.instances] == [1]
    with Backend(URL, expires=None) as backend:
        assert backend.expires is None
        assert backend.capabilities == frozenset()
        assert backend.mark_as_done("t", "kept") is True
        assert backend.get_result("t") == "kept"


def test_cleanup_alone_is_enough_for_expiry(use: Callable[[type], str]) -> None:
    with Backend(use(CleanupOnly)) as backend:
        assert backend.expires == 86400.0
        assert backend.capabilities == frozenset({Capability.CLEANUP})
        assert backend.cleanup() == 0


def test_subset_of_arguments_is_accepted(use: Callable[[type], str]) -> None:
    with Backend(use(SubsetArguments)) as backend:
        assert backend.mark_as_done("t", [1]) is True
        assert backend.get_result("t") == [1]


# --- a third-party key-value plugin -------------------------------------------------------


class DictKV(KeyValueStore):
    """What a plugin author writes for a key-value engine: three primitives."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"ttl"})  # TTL ignored: expires=None
    instances: ClassVar[list[DictKV]] = []

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.data: dict[str, bytes] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.missed: dict[str, threading.Event] = collections.defaultdict(threading.Event)
        type(self).instances.append(self)

    def kv_get(self, key: str) -> bytes | None:
        self.calls["kv_get"] += 1
        value = self.data.get(key)
        if value is None:
            self.missed[key].set()
        return value

    def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.calls["kv_set"] += 1
        self.data[key] = value

    def kv_delete(self, key: str) -> bool:
        self.calls["kv_delete"] += 1
        return self.data.pop(key, None) is not None


@pytest.fixture
def kv(use: Callable[[type], str]) -> Iterator[tuple[Backend, DictKV]]:
    with Backend(use(DictKV), expires=None) as backend:
        plugin = backend.plugin
        assert isinstance(plugin, DictKV)
        yield backend, plugin
    DictKV.instances.clear()


def test_kv_plugin_store_get_forget(kv: tuple[Backend, DictKV]) -> None:
    backend, plugin = kv
    assert backend.capabilities == frozenset({Capability.TTL})
    assert backend.mark_as_done("a", [1, 2]) is True
    assert list(plugin.data) == ["celery-task-meta-a"]
    wire = json.loads(plugin.data["celery-task-meta-a"])
    assert list(wire) == ["status", "result", "traceback", "children", "date_done", "task_id"]
    assert (wire["status"], wire["result"], wire["traceback"], wire["children"]) == (
        "SUCCESS",
        [1, 2],
        None,
        [],
    )
    assert wire["task_id"] == "a"
    assert backend.get_result("a") == [1, 2]
    assert backend.get_state("a") == SUCCESS
    assert backend.exists("a") is True
    # A late write does not replace the ready state.
    assert backend.mark_as_started("a") is False
    assert backend.get_state("a") == SUCCESS
    assert backend.forget("a") is True
    assert backend.forget("a") is False
    assert backend.exists("a") is False
    assert backend.get_state("a") == "PENDING"
    assert plugin.data == {}


def test_kv_plugin_get_many_falls_back_to_get(kv: tuple[Backend, DictKV]) -> None:
    backend, plugin = kv
    backend.mark_as_done("a", 1)
    backend.mark_as_done("b", 2)
    plugin.calls.clear()
    metas = backend.get_many(["a", "b", "c", "a"])
    assert list(metas) == ["a", "b", "c"]
    assert [(m.task_id, m.status, m.result) for m in metas.values()] == [
        ("a", "SUCCESS", 1),
        ("b", "SUCCESS", 2),
        ("c", "PENDING", None),
    ]
    # Without the get_many capability the core asks once per id.
    assert plugin.calls == {"kv_get": 3}


def test_kv_plugin_wait_by_polling(kv: tuple[Backend, DictKV]) -> None:
    backend, plugin = kv
    key = plugin.task_key("slow")
    errors: list[BaseException] = []

    def provider() -> None:
        try:
            # Store only once the waiter has read the id and found nothing.
            assert plugin.missed[key].wait(timeout=10)
            backend.mark_as_done("slow", {"answer": 42})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=provider)
    thread.start()
    try:
        assert AsyncResult("slow", backend).get(timeout=5) == {"answer": 42}
    finally:
        thread.join(timeout=10)
    assert errors == []
    assert not thread.is_alive()
    assert plugin.calls["kv_get"] >= 2  # at least one miss, then the hit
    assert backend.waiting_ids() == frozenset()


# --- wrappers and observers -------------------------------------------------------------


class Counter:
    """A metrics wrapper: counts calls and measures time around two storage hooks."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.seconds: dict[str, float] = collections.defaultdict(float)

    @hookimpl(wrapper=True)
    def store_result(self, meta: TaskMeta) -> Generator[None, Any, Any]:
        self.calls["store_result"] += 1
        start = time.perf_counter()
        try:
            return (yield)
        finally:
            self.seconds["store_result"] += time.perf_counter() - start

    @hookimpl(wrapper=True)
    def get(self, task_id: str) -> Generator[None, Any, Any]:
        self.calls["get"] += 1
        start = time.perf_counter()
        try:
            return (yield)
        finally:
            self.seconds["get"] += time.perf_counter() - start


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any, bool]] = []

    @hookimpl
    def result_stored(self, meta: TaskMeta, written: bool) -> None:
        self.seen.append((meta.task_id, meta.status, meta.result, written))


class MisspeltWrapper:
    @hookimpl(wrapper=True)
    def store_reslt(self, meta: TaskMeta) -> Generator[None, Any, Any]:
        return (yield)


class WrapperWithExtraArgument:
    @hookimpl(wrapper=True)
    def get(self, task_id: str, timeout: float) -> Generator[None, Any, Any]:
        return (yield)


class WrapperThatIsNotAGenerator:
    @hookimpl(wrapper=True)
    def get(self, task_id: str) -> None:
        return None


class ObserverWithPlainClose:
    @hookimpl
    def result_stored(self, meta: TaskMeta, written: bool) -> None:
        pass

    def close(self) -> None:
        pass


def test_counting_wrapper(store_url: str) -> None:
    counter = Counter()
    with Backend(store_url, plugins=[counter]) as backend:
        assert [backend.mark_as_done(f"t{i}", {"n": i}) for i in range(3)] == [True] * 3
        assert backend.get_result("t0") == {"n": 0}
        assert backend.get_result("t2") == {"n": 2}
    assert counter.calls == {"store_result": 3, "get": 2}
    assert sorted(counter.seconds) == ["get", "store_result"]
    assert all(seconds > 0.0 for seconds in counter.seconds.values())


def test_wrapper_added_later_sees_only_later_calls(backend: Backend) -> None:
    backend.mark_as_done("before", 1)
    counter = Counter()
    backend.add_plugin(counter)
    assert backend.get_result("before") == 1
    assert backend.mark_as_done("after", 2) is True
    assert counter.calls == {"get": 1, "store_result": 1}


def test_observer_sees_every_store(backend: Backend) -> None:
    observer = Observer()
    backend.add_plugin(observer)
    assert backend.mark_as_done("t", 5) is True
    assert backend.mark_as_started("t") is False
    assert observer.seen == [("t", "SUCCESS", 5, True), ("t", "STARTED", {}, False)]
    assert backend.get_state("t") == SUCCESS
    assert backend.get_result("t") == 5


def test_observer_given_at_construction(store_url: str) -> None:
    observer = Observer()
    with Backend(store_url, plugins=[observer]) as backend:
        backend.mark_as_started("t", {"progress": 1})
        backend.store_result("t", "again", SUCCESS)
        backend.store_result("t", "forced", SUCCESS, overwrite=True)
        backend.store_result("t", "late", SUCCESS)
    assert observer.seen == [
        ("t", "STARTED", {"progress": 1}, True),
        ("t", "SUCCESS", "again", True),
        ("t", "SUCCESS", "forced", True),
        ("t", "SUCCESS", "late", False),
    ]


def test_misspelt_hook_in_a_wrapper(backend: Backend) -> None:
    with pytest.raises(PluginValidationError) as info:
        backend.add_plugin(MisspeltWrapper())
    assert str(info.value) == (
        f"plugin {qualname(MisspeltWrapper)}: unknown hook 'store_reslt'; "
        "did you mean 'store_result'?"
    )
    assert backend.mark_as_done("t", 1) is True  # the backend is still usable


def test_wrapper_with_an_unknown_argument(backend: Backend) -> None:
    with pytest.raises(PluginValidationError) as info:
        backend.add_plugin(WrapperWithExtraArgument())
    assert str(info.value) == (
        f"plugin {qualname(WrapperWithExtraArgument)}: hook 'get' takes (task_id, timeout) but "
        "the spec is get(task_id); unknown argument(s): timeout"
    )


def test_wrapper_that_is_not_a_generator(backend: Backend) -> None:
    wrapper = WrapperThatIsNotAGenerator()
    with pytest.raises(PluginValidationError) as info:
        backend.add_plugin(wrapper)
    assert str(info.value) == (
        f"plugin {qualname(WrapperThatIsNotAGenerator)}: Plugin '{id(wrapper)}' for hook 'get'\n"
        f"hookimpl definition: get{inspect.signature(wrapper.get)}\n"
        "Declared as wrapper=True or hookwrapper=True but function is not a generator function"
    )
    assert info.value.__cause__ is None
    assert backend.get_result("missing") is None


def test_observer_with_an_undecorated_hook_name(backend: Backend) -> None:
    with pytest.raises(PluginValidationError) as info:
        backend.add_plugin(ObserverWithPlainClose())
    assert str(info.value) == (
        f"plugin {qualname(ObserverWithPlainClose)}: method 'close' has the name of a hook but "
        "is not decorated with @resultstore.hookimpl"
    )


def test_bad_wrapper_at_construction_closes_the_storage_plugin(
    use: Callable[[type], str],
) -> None:
    with pytest.raises(PluginValidationError) as info:
        Backend(use(Good), plugins=[Counter(), MisspeltWrapper()])
    assert str(info.value) == (
        f"plugin {qualname(MisspeltWrapper)}: unknown hook 'store_reslt'; "
        "did you mean 'store_result'?"
    )
    assert [p.closed for p in Good.instances] == [1]


def test_the_same_wrapper_twice_is_a_validation_error(backend: Backend) -> None:
    counter = Counter()
    backend.add_plugin(counter)
    with pytest.raises(PluginValidationError) as info:
        backend.add_plugin(counter)
    assert str(info.value).startswith(f"plugin {__name__}.Counter: Plugin name already registered")


def test_a_wrapper_added_later_sees_the_hot_calls(store_url: str) -> None:
    """Reads and stores skip pluggy while nothing wraps them; add_plugin must end that."""
    with Backend(store_url) as backend:
        backend.mark_as_done("t0", 0)
        counter = Counter()
        backend.add_plugin(counter)
        backend.mark_as_done("t1", 1)
        assert backend.get_result("t1") == 1
        assert counter.calls == {"store_result": 1, "get": 1}


class KeepsEverything(DictPlugin):
    """A storage plugin whose store_result leaves out arguments it does not use."""

    @hookimpl
    def store_result(self, meta: TaskMeta) -> bool:  # type: ignore[override]
        self.data[meta.task_id] = meta
        return True


def test_a_hook_taking_fewer_arguments_is_still_called() -> None:
    resultstore.register_backend("keeps-everything", KeepsEverything)
    try:
        with Backend("keeps-everything://") as backend:
            assert backend.mark_as_done("t", 5) is True
            assert backend.get_result("t") == 5
    finally:
        resultstore.unregister_backend("keeps-everything")
