"""From a URL scheme to a plugin: registrations, entry points, errors, laziness."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import resultstore
from resultstore import (
    AmbiguousBackend,
    Backend,
    BackendLoadError,
    BackendNotFound,
    _registry,
    register_backend,
    resolve,
    unregister_backend,
)

from ..doubles import DictPlugin

# --- test plugins ---------------------------------------------------------------------


class OtherPlugin(DictPlugin):
    pass


def _explicit(scheme: str, cls: type) -> str:
    return f"register_backend({scheme!r}, '{cls.__module__}:{cls.__qualname__}')"


@pytest.fixture
def clean_cache() -> Iterator[None]:
    _registry._cache.clear()
    importlib.invalidate_caches()
    yield
    _registry._cache.clear()
    importlib.invalidate_caches()


@pytest.fixture
def register(clean_cache: None) -> Iterator[Callable[[str, object], None]]:
    """``register(scheme, target)``, undone at teardown."""
    schemes: list[str] = []

    def _register(scheme: str, target: object) -> None:
        register_backend(scheme, target)  # type: ignore[arg-type]
        schemes.append(scheme)

    yield _register
    for scheme in schemes:
        unregister_backend(scheme)


# --- fake installed distributions -------------------------------------------------------

PLUGIN_MODULE = textwrap.dedent(
    """
    from resultstore import hookimpl

    class Plugin:
        capabilities = frozenset({"ttl"})

        def __init__(self, config):
            self.config = config
            self.data = {}

        @hookimpl
        def store_result(self, meta, ttl, overwrite):
            self.data[meta.task_id] = meta
            return True

        @hookimpl
        def get(self, task_id):
            return self.data.get(task_id)

        @hookimpl
        def forget(self, task_id):
            return self.data.pop(task_id, None) is not None

    NOT_A_CLASS = 42
    """
)


def write_dist(
    root: Path, name: str, version: str, schemes: dict[str, str], modules: dict[str, str]
) -> None:
    """Write ``<name>-<version>.dist-info`` (and modules) into ``root``, as pip would."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{scheme} = {value}\n" for scheme, value in schemes.items())
    (info / "entry_points.txt").write_text(f"[resultstore.backends]\n{lines}")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)


class Site:
    """Directories of fake distributions put on ``sys.path`` for one test."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self._tmp = tmp_path
        self._mp = monkeypatch
        self.modules: list[str] = []

    def add(
        self,
        directory: str,
        name: str,
        version: str,
        schemes: dict[str, str],
        modules: dict[str, str] | None = None,
    ) -> None:
        root = self._tmp / directory
        write_dist(root, name, version, schemes, modules or {})
        self.modules.extend(modules or {})
        self._mp.syspath_prepend(str(root))  # also invalidates the import caches
        _registry._cache.clear()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_cache: None) -> Iterator[Site]:
    fake = Site(tmp_path, monkeypatch)
    yield fake
    for module in fake.modules:
        sys.modules.pop(module, None)


# --- resolving the installed memory plugin -------------------------------------------------


def test_memory_resolves_through_its_entry_point(clean_cache: None) -> None:
    from resultstore_memory import MemoryBackend

    found = resolve("memory://")
    assert found.scheme == "memory"
    assert found.factory is MemoryBackend
    assert found.source == "resultstore-memory 0.1.0"
    assert found.inner_url is None


def test_installed_schemes_lists_memory() -> None:
    schemes = resultstore.installed_schemes()
    assert schemes["memory"] == "resultstore-memory 0.1.0"
    assert list(schemes) == sorted(schemes)


def test_installed_schemes_lists_registrations(register: Callable[[str, object], None]) -> None:
    register("zzz-test", DictPlugin)
    register("zzz-lazy", "no_such_module_for_resultstore.sub:Obj")
    schemes = resultstore.installed_schemes()
    assert schemes["zzz-test"] == _explicit("zzz-test", DictPlugin)
    assert (
        schemes["zzz-lazy"]
        == "register_backend('zzz-lazy', 'no_such_module_for_resultstore.sub:Obj')"
    )
    unregister_backend("zzz-test")
    assert "zzz-test" not in resultstore.installed_schemes()


def test_resolution_is_cached_per_scheme(
    clean_cache: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real = _registry._load_entry_point

    def counting(ep: EntryPoint) -> _registry.PluginFactory:
        loads.append(ep.name)
        return real(ep)

    monkeypatch.setattr(_registry, "_load_entry_point", counting)
    first = resolve("memory://a")
    second = resolve("memory://b")
    assert first.factory is second.factory
    assert loads == ["memory"]


# --- explicit registrations -----------------------------------------------------------


def test_registered_class(register: Callable[[str, object], None]) -> None:
    register("plain", DictPlugin)
    found = resolve("plain://h/0")
    assert (found.scheme, found.factory, found.source, found.inner_url) == (
        "plain",
        DictPlugin,
        _explicit("plain", DictPlugin),
        None,
    )
    with Backend("plain://h/0") as backend:
        assert type(backend.plugin) is DictPlugin
        assert backend.mark_as_done("t1", 7) is True
        assert backend.get_result("t1") == 7


def test_registration_overrides_an_entry_point(register: Callable[[str, object], None]) -> None:
    register("memory", DictPlugin)
    assert resolve("memory://").factory is DictPlugin
    unregister_backend("memory")
    from resultstore_memory import MemoryBackend

    found = resolve("memory://")
    assert found.factory is MemoryBackend
    assert found.source == "resultstore-memory 0.1.0"


def test_re_registering_replaces_the_cached_plugin(
    register: Callable[[str, object], None],
) -> None:
    register("swap", DictPlugin)
    assert resolve("swap://").factory is DictPlugin
    register("swap", OtherPlugin)
    assert resolve("swap://").factory is OtherPlugin


def test_prefix_rule_hands_the_inner_url(register: Callable[[str, object], None]) -> None:
    register("foo", DictPlugin)
    found = resolve("foo+inner://user:pw@host:5/x?q=1")
    assert found.scheme == "foo"
    assert found.factory is DictPlugin
    assert found.source == _explicit("foo", DictPlugin)
    assert found.inner_url is not None
    assert found.inner_url.scheme == "inner"
    assert found.inner_url.raw == "inner://user:pw@host:5/x?q=1"
    assert str(found.inner_url) == "inner://user:****@host:5/x?q=1"
    with Backend("foo+inner://user:pw@host:5/x?q=1") as backend:
        assert backend.config.inner_url == found.inner_url
        assert backend.config.url.scheme == "foo+inner"


def test_prefix_rule_splits_at_the_first_plus(register: Callable[[str, object], None]) -> None:
    register("foo", DictPlugin)
    found = resolve("FOO+Bar+Baz://h")
    assert found.scheme == "foo"
    assert found.inner_url is not None
    assert found.inner_url.raw == "bar+baz://h"


def test_exact_scheme_beats_prefix_rule(register: Callable[[str, object], None]) -> None:
    register("foo", DictPlugin)
    register("foo+inner", OtherPlugin)
    found = resolve("foo+inner://host/x")
    assert (found.scheme, found.factory, found.inner_url) == ("foo+inner", OtherPlugin, None)
    assert found.source == _explicit("foo+inner", OtherPlugin)
    other = resolve("foo+other://host/x")
    assert (other.scheme, other.factory) == ("foo", DictPlugin)


def test_trailing_plus_is_not_a_prefix(register: Callable[[str, object], None]) -> None:
    register("foo", DictPlugin)
    with pytest.raises(
        BackendNotFound, match=re.escape("no resultstore backend for scheme 'foo+'")
    ):
        resolve("foo+://h")


def test_dotted_target_is_imported_lazily(register: Callable[[str, object], None]) -> None:
    target = "resultstore_no_such_pkg.mod:Obj"
    register("lazy", target)  # nothing is imported here
    assert "resultstore_no_such_pkg" not in sys.modules
    with pytest.raises(BackendLoadError) as info:
        resolve("lazy://")
    assert str(info.value) == (
        f"the plugin registered for scheme 'lazy' ({target}) failed to import: "
        "ModuleNotFoundError: No module named 'resultstore_no_such_pkg'"
    )
    assert type(info.value.__cause__) is ModuleNotFoundError
    assert info.value.__cause__.name == "resultstore_no_such_pkg"
    # A failure is not cached: the next resolve tries again, and fails the same way.
    with pytest.raises(BackendLoadError, match=re.escape(f"({target}) failed to import")):
        Backend("lazy://")


def test_dotted_target_is_loaded(register: Callable[[str, object], None]) -> None:
    target = f"{__name__}:DictPlugin"
    register("dotted", target)
    found = resolve("dotted://")
    assert found.factory is DictPlugin
    assert found.source == f"register_backend('dotted', {target!r})"


def test_dotted_target_with_a_missing_attribute(register: Callable[[str, object], None]) -> None:
    register("noattr", "resultstore:NoSuchPlugin")
    with pytest.raises(BackendLoadError) as info:
        resolve("noattr://")
    assert str(info.value) == (
        "the plugin registered for scheme 'noattr' (resultstore:NoSuchPlugin) failed to import: "
        "AttributeError: module 'resultstore' has no attribute 'NoSuchPlugin'"
    )
    assert type(info.value.__cause__) is AttributeError


def test_dotted_target_that_is_not_callable(register: Callable[[str, object], None]) -> None:
    register("notcallable", "resultstore:__version__")
    with pytest.raises(BackendLoadError) as info:
        resolve("notcallable://")
    assert str(info.value) == ("resultstore:__version__ does not name a plugin class (got '0.1.0')")


@pytest.mark.parametrize("scheme", ["Bad", "9x", "", "with space", "a_b", "ré"])
def test_register_rejects_bad_schemes(scheme: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"got {scheme!r}")) as info:
        register_backend(scheme, DictPlugin)
    assert str(info.value) == (
        "scheme must be lowercase letters, digits, '+', '-' or '.', starting with a letter; "
        f"got {scheme!r}"
    )
    assert scheme not in resultstore.installed_schemes()


def test_register_rejects_a_non_str_scheme() -> None:
    with pytest.raises(ValueError, match=re.escape("starting with a letter; got 5")):
        register_backend(5, DictPlugin)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target", ["nocolon", "pkg.mod:", ":Obj", "a b:c", "pkg.mod:Obj:x", "1pkg:Obj"]
)
def test_register_rejects_bad_target_strings(target: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"got {target!r}")) as info:
        register_backend("badtarget", target)
    assert str(info.value) == f"target must look like 'package.module:Object', got {target!r}"
    assert "badtarget" not in resultstore.installed_schemes()


@pytest.mark.parametrize("target", [42, None, object()])
def test_register_rejects_non_callables(target: object) -> None:
    with pytest.raises(TypeError) as info:
        register_backend("badtarget", target)  # type: ignore[arg-type]
    assert str(info.value) == (
        f"target must be a 'package.module:Object' string or a class, got {target!r}"
    )
    assert "badtarget" not in resultstore.installed_schemes()


def test_unregistering_an_unknown_scheme_is_a_no_op() -> None:
    before = resultstore.installed_schemes()
    unregister_backend("never-registered")
    assert resultstore.installed_schemes() == before


# --- unknown schemes ------------------------------------------------------------------


def _installed() -> str:
    return ", ".join(resultstore.installed_schemes())


@pytest.mark.parametrize(
    ("url", "dist"),
    [
        ("redis://", "resultstore-redis"),
        ("rediss://h:6380/0", "resultstore-redis"),
        ("redis+sentinel://h", "resultstore-redis"),
        ("db+postgresql://", '"resultstore-db[postgresql]"'),
        ("db+postgresql+psycopg://", '"resultstore-db[postgresql]"'),
        ("db+mysql://u@h/db", '"resultstore-db[mysql]"'),
        ("database+mariadb://u@h/db", '"resultstore-db[mysql]"'),
        ("db+sqlite:///x.db", "resultstore-db"),
        ("database://", "resultstore-db"),
    ],
)
def test_unknown_first_party_scheme_names_the_distribution(
    first_party_hidden: None, url: str, dist: str
) -> None:
    scheme = resultstore.URL.parse(url).scheme
    with pytest.raises(BackendNotFound) as info:
        resolve(url)
    assert str(info.value) == (
        f"no resultstore backend for scheme {scheme!r} in {url!r}; "
        f"install it with: pip install {dist}; installed schemes: {_installed()}"
    )
    assert "memory" in _installed().split(", ")
    assert isinstance(info.value, LookupError)


@pytest.mark.parametrize(
    ("url", "suggested"),
    [
        ("postgresql://u:secret@h/db", "db+postgresql://u:****@h/db"),
        ("postgresql+psycopg://h/db", "db+postgresql+psycopg://h/db"),
        ("mysql://root@h/db", "db+mysql://root@h/db"),
        ("sqlite:///x.db", "db+sqlite:///x.db"),
    ],
)
def test_a_sql_url_without_db_prefix_gets_it_suggested(
    clean_cache: None, url: str, suggested: str
) -> None:
    scheme = resultstore.URL.parse(url).scheme
    masked = resultstore.URL.parse(url).masked
    with pytest.raises(BackendNotFound) as info:
        resolve(url)
    assert str(info.value) == (
        f"no resultstore backend for scheme {scheme!r} in {masked!r}; "
        f"did you mean {suggested!r}? (SQL URLs take the db+ prefix); "
        f"installed schemes: {_installed()}"
    )


def test_a_sql_url_without_db_prefix_names_the_install_when_the_plugin_is_missing(
    first_party_hidden: None,
) -> None:
    with pytest.raises(BackendNotFound) as info:
        resolve("mariadb://root@h/db")
    assert str(info.value) == (
        "no resultstore backend for scheme 'mariadb' in 'mariadb://root@h/db'; "
        "did you mean 'db+mariadb://root@h/db'? (SQL URLs take the db+ prefix); "
        f'install it with: pip install "resultstore-db[mysql]"; installed schemes: {_installed()}'
    )


def test_misspelt_scheme_suggests_the_close_one(clean_cache: None) -> None:
    with pytest.raises(BackendNotFound) as info:
        resolve("memroy://")
    assert str(info.value) == (
        "no resultstore backend for scheme 'memroy' in 'memroy://'; "
        f"did you mean 'memory'?; installed schemes: {_installed()}"
    )


def test_unknown_scheme_without_a_hint(clean_cache: None) -> None:
    with pytest.raises(BackendNotFound) as info:
        Backend("zqxj://h")
    assert str(info.value) == (
        f"no resultstore backend for scheme 'zqxj' in 'zqxj://h'; installed schemes: {_installed()}"
    )


# --- fake distributions on disk ----------------------------------------------------------


def test_an_installed_third_party_distribution(site: Site) -> None:
    site.add(
        "a",
        "fake-ok",
        "0.5",
        {"fakeok": "fake_ok_plugin:Plugin"},
        {"fake_ok_plugin": PLUGIN_MODULE},
    )
    assert resultstore.installed_schemes()["fakeok"] == "fake-ok 0.5"
    assert "fake_ok_plugin" not in sys.modules  # listing schemes imports nothing
    found = resolve("fakeok://h")
    assert found.source == "fake-ok 0.5"
    assert found.factory.__module__ == "fake_ok_plugin"
    with Backend("fakeok://h") as backend:
        assert backend.mark_as_done("t", {"v": 1}) is True
        assert backend.get_result("t") == {"v": 1}


def test_two_distributions_publishing_one_scheme_are_ambiguous(site: Site) -> None:
    site.add("b", "fake-b", "2.0", {"twin": "fake_twin_b:Plugin"}, {"fake_twin_b": PLUGIN_MODULE})
    site.add("a", "fake-a", "1.0", {"twin": "fake_twin_a:Plugin"}, {"fake_twin_a": PLUGIN_MODULE})
    message = (
        "scheme 'twin' is published by both fake-a 1.0 and fake-b 2.0; uninstall one, or "
        "choose with resultstore.register_backend('twin', 'package.module:Object')"
    )
    with pytest.raises(AmbiguousBackend) as info:
        resolve("twin://")
    assert str(info.value) == message
    assert isinstance(info.value, LookupError)
    with pytest.raises(AmbiguousBackend, match=re.escape(message)):
        Backend("twin://")
    # Never a silent first-wins: neither module was imported.
    assert "fake_twin_a" not in sys.modules
    assert "fake_twin_b" not in sys.modules
    # The prefix rule reports the ambiguity too.
    with pytest.raises(AmbiguousBackend, match=re.escape(message)):
        resolve("twin+inner://h")


def test_an_explicit_registration_settles_an_ambiguity(
    site: Site, register: Callable[[str, object], None]
) -> None:
    site.add("b", "fake-b", "2.0", {"twin": "fake_twin_b:Plugin"}, {"fake_twin_b": PLUGIN_MODULE})
    site.add("a", "fake-a", "1.0", {"twin": "fake_twin_a:Plugin"}, {"fake_twin_a": PLUGIN_MODULE})
    register("twin", "fake_twin_b:Plugin")
    found = resolve("twin://")
    assert found.source == "register_backend('twin', 'fake_twin_b:Plugin')"
    assert found.factory.__module__ == "fake_twin_b"
    assert "fake_twin_a" not in sys.modules


def test_one_distribution_seen_twice_is_not_ambiguous(site: Site) -> None:
    for directory in ("copy1", "copy2"):
        site.add(
            directory,
            "fake-dup",
            "1.0",
            {"dup": "fake_dup_plugin:Plugin"},
            {"fake_dup_plugin": PLUGIN_MODULE},
        )
    found = resolve("dup://")
    assert found.source == "fake-dup 1.0"
    assert found.factory.__name__ == "Plugin"


def test_a_plugin_that_fails_to_import(site: Site) -> None:
    site.add(
        "a",
        "broken-plugin",
        "3.1",
        {"broken": "broken_plugin_mod:Plugin"},
        {"broken_plugin_mod": 'raise ImportError("boom")\n'},
    )
    message = (
        "the plugin for scheme 'broken' from broken-plugin 3.1 failed to import "
        "(broken_plugin_mod:Plugin): ImportError: boom"
    )
    with pytest.raises(BackendLoadError) as info:
        resolve("broken://")
    assert str(info.value) == message
    assert isinstance(info.value, ImportError)
    cause = info.value.__cause__
    assert type(cause) is ImportError
    assert str(cause) == "boom"
    with pytest.raises(BackendLoadError, match=re.escape(message)):
        Backend("broken://")
    assert resultstore.installed_schemes()["broken"] == "broken-plugin 3.1"


def test_an_entry_point_naming_a_missing_attribute(site: Site) -> None:
    site.add(
        "a",
        "fake-noattr",
        "1.2",
        {"noattr": "fake_noattr_plugin:Missing"},
        {"fake_noattr_plugin": PLUGIN_MODULE},
    )
    with pytest.raises(BackendLoadError) as info:
        resolve("noattr://")
    assert str(info.value) == (
        "the plugin for scheme 'noattr' from fake-noattr 1.2 failed to import "
        "(fake_noattr_plugin:Missing): AttributeError: "
        "module 'fake_noattr_plugin' has no attribute 'Missing'"
    )
    assert type(info.value.__cause__) is AttributeError


def test_an_entry_point_naming_a_non_callable(site: Site) -> None:
    site.add(
        "a",
        "fake-value",
        "0.1",
        {"value": "fake_value_plugin:NOT_A_CLASS"},
        {"fake_value_plugin": PLUGIN_MODULE},
    )
    with pytest.raises(BackendLoadError) as info:
        resolve("value://")
    assert str(info.value) == "fake-value 0.1 does not name a plugin class (got 42)"


# --- laziness, in a fresh interpreter --------------------------------------------------------

LAZY_SNIPPET = textwrap.dedent(
    """
    import sys

    import resultstore

    backend = resultstore.Backend("memory://lazy")
    assert backend.mark_as_done("t1", {"x": 1}) is True
    assert backend.get_result("t1") == {"x": 1}
    assert resultstore.AsyncResult("t1", backend).get(timeout=5) == {"x": 1}
    assert "decoy" in resultstore.installed_schemes(), resultstore.installed_schemes()
    heavy = {"redis", "sqlalchemy", "psycopg", "psycopg2", "pymysql", "decoy_plugin_mod"}
    print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
    print("resultstore_memory" in sys.modules)
    """
)


def test_memory_imports_only_its_own_entry_point(tmp_path: Path) -> None:
    write_dist(
        tmp_path,
        "decoy-plugin",
        "1.0",
        {"decoy": "decoy_plugin_mod:Plugin", "redis": "decoy_plugin_mod:Plugin"},
        {"decoy_plugin_mod": "import redis\nimport sqlalchemy\nPlugin = object\n"},
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", LAZY_SNIPPET],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stdout == "[]\nTrue\n", proc.stderr
