"""Packaging: the core and memory wheels work in a fresh venv, and every distribution
(core, plugins, example, integrations, dashboard) is fit to publish: license, README,
URLs, types."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300

SNIPPET = textwrap.dedent(
    """
    import importlib.metadata as md
    import importlib.resources
    import sys
    from pathlib import Path

    points = md.entry_points(group="resultstore.backends", name="memory")
    assert len(points) == 1, list(points)
    (ep,) = points
    assert ep.value == "resultstore_memory:MemoryBackend", ep.value
    assert ep.dist is not None
    assert (ep.dist.name, ep.dist.version) == ("resultstore-memory", "0.1.0"), ep.dist

    (script,) = md.entry_points(group="console_scripts", name="resultstore")
    assert script.value == "resultstore.cli:main", script.value

    import resultstore

    here = Path(resultstore.__file__).resolve()
    assert here.is_relative_to(Path(sys.prefix).resolve()), here

    found = resultstore.resolve("memory://")
    assert found.source == "resultstore-memory 0.1.0", found.source
    assert found.factory.__module__ == "resultstore_memory", found.factory
    with resultstore.Backend("memory://") as backend:
        assert backend.mark_as_done("t1", {"ok": [1, 2]}) is True
        assert backend.get_result("t1") == {"ok": [1, 2]}
        assert resultstore.AsyncResult("t1", backend).get(timeout=5) == {"ok": [1, 2]}

    files = sorted(str(f) for f in md.files("resultstore"))
    assert "resultstore/py.typed" in files, files
    assert importlib.resources.files("resultstore").joinpath("py.typed").is_file()

    requires = md.requires("resultstore") or []
    assert "pluggy>=1.5" in requires, requires
    assert "kombu>=5.3" in requires, requires
    for heavy in ("redis", "sqlalchemy"):
        try:
            md.distribution(heavy)
        except md.PackageNotFoundError:
            pass
        else:
            raise AssertionError(heavy + " was installed with the core")
    print("OK")
    """
)


def run(*args: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, args))} exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc.stdout


def install_wheels(tmp_path: Path, *projects: str) -> tuple[Path, list[str]]:
    """Build the core's and ``projects``' wheels and pip-install them (their dependencies
    from the index) into a fresh venv: its python, and the wheels' names."""
    wheels = tmp_path / "wheels"
    build = ("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", wheels)
    for project in (ROOT, *(ROOT / p for p in projects)):
        run(sys.executable, *build, project, cwd=tmp_path)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", *sorted(wheels.iterdir()), cwd=tmp_path)
    return python, sorted(p.name for p in wheels.iterdir())


@pytest.mark.slow
@pytest.mark.timeout(4 * TIMEOUT)
def test_wheels_install_and_work_in_a_fresh_venv(tmp_path: Path) -> None:
    python, built = install_wheels(tmp_path, "plugins/memory_backend")
    assert built == [
        "resultstore-0.1.0-py3-none-any.whl",
        "resultstore_memory-0.1.0-py3-none-any.whl",
    ]
    venv = python.parents[1]
    assert run(python, "-c", SNIPPET, cwd=tmp_path) == "OK\n"

    # The console script, with only the core and memory:// installed.
    command = venv / "bin" / "resultstore"
    assert run(command, "--version", cwd=tmp_path) == "resultstore 0.1.0\n"
    listing = run(command, "plugins", cwd=tmp_path).splitlines()
    assert listing[0].split() == ["SCHEME", "DISTRIBUTION", "VERSION", "CAPABILITIES", "STATUS"]
    assert listing[1].split() == [
        "memory",
        "resultstore-memory",
        "0.1.0",
        "async,cleanup,counter,get_many,groups,listing,push,revoke,ttl",
        "ok",
    ]
    demo = run(command, "demo", "memory://demo", cwd=tmp_path)
    assert "join() re-raised the failure: ZeroDivisionError: division by zero" in demo
    assert demo.endswith("forgot 6 results and the group; left: none\n")


# The bridges, as a user installs them: each wheel with its task system as a dependency.
TASKIQ_SNIPPET = textwrap.dedent(
    """
    import asyncio
    import importlib.metadata as md

    assert md.version("taskiq-resultstore") == "0.1.0"
    requires = md.requires("taskiq-resultstore") or []
    assert "resultstore>=0.1.0" in requires, requires
    assert "taskiq>=0.11" in requires, requires
    files = sorted(str(f) for f in md.files("taskiq-resultstore"))
    assert "taskiq_resultstore/py.typed" in files, files
    md.version("taskiq")  # installed as its dependency

    from taskiq import TaskiqResult
    from taskiq_resultstore import ResultStoreBackend

    async def main():
        backend = ResultStoreBackend("memory://packaged")
        await backend.set_result(
            "t1",
            TaskiqResult(is_err=False, return_value=[1], execution_time=0.5, labels={"a": "b"}),
        )
        result = await backend.wait_result("t1", timeout=5)
        assert (result.return_value, result.execution_time, result.labels) == (
            [1], 0.5, {"a": "b"}
        ), result
        await backend.shutdown()

    asyncio.run(main())
    """
)
DRAMATIQ_SNIPPET = textwrap.dedent(
    """
    import importlib.metadata as md

    assert md.version("dramatiq-resultstore") == "0.1.0"
    requires = md.requires("dramatiq-resultstore") or []
    assert "resultstore>=0.1.0" in requires, requires
    assert "dramatiq>=1.15" in requires, requires
    files = sorted(str(f) for f in md.files("dramatiq-resultstore"))
    assert "dramatiq_resultstore/py.typed" in files, files
    md.version("dramatiq")  # installed as its dependency

    from dramatiq import Message
    from dramatiq.rate_limits import Barrier
    from dramatiq_resultstore import CounterBarrierBackend, ResultStoreBackend

    results = ResultStoreBackend("memory://packaged")
    message = Message("default", "add", (1, 2), {}, {})
    results.store_result(message, 3, 60_000)
    assert results.get_result(message, block=True, timeout=5_000) == 3
    barrier = Barrier(CounterBarrierBackend(results.backend), "b1", ttl=60_000)
    assert barrier.create(2) is True
    assert [barrier.wait(block=False), barrier.wait(block=False)] == [False, True]
    results.close()
    """
)


@pytest.mark.slow
@pytest.mark.timeout(4 * TIMEOUT)
def test_the_bridges_install_with_their_task_systems_and_work(tmp_path: Path) -> None:
    # One venv for both: the index is asked once (it dominates the test's time).
    python, _ = install_wheels(
        tmp_path, "plugins/memory_backend", "integrations/taskiq", "integrations/dramatiq"
    )
    assert run(python, "-c", TASKIQ_SNIPPET + 'print("OK")', cwd=tmp_path) == "OK\n"
    assert run(python, "-c", DRAMATIQ_SNIPPET + 'print("OK")', cwd=tmp_path) == "OK\n"


# --- every distribution is fit to publish --------------------------------------------------

DISTRIBUTIONS = sorted(
    [
        ROOT,
        ROOT / "dashboard",
        *(
            p.parent
            for d in ("plugins", "examples", "integrations")
            for p in ROOT.glob(f"{d}/*/pyproject.toml")
        ),
    ]
)
# Never a user's dependency, not even in an extra (a bridge's `test` extra names its
# brokers and pytest for the tests of this repository).
DEV_TOOLS = ("mypy", "ruff", "hatchling")


def _build(project: Path, out: Path) -> tuple[Path, Path]:
    run(
        sys.executable,
        "-m",
        "hatchling",
        "build",
        "-t",
        "wheel",
        "-t",
        "sdist",
        "-d",
        out,
        cwd=project,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


@pytest.mark.slow
@pytest.mark.parametrize(
    "project", DISTRIBUTIONS, ids=lambda p: p.relative_to(ROOT).as_posix() or "core"
)
def test_each_distribution_carries_its_license_readme_urls_and_types(
    project: Path, tmp_path: Path
) -> None:
    wheel, sdist = _build(project, tmp_path)
    license_text = (ROOT / "LICENSE").read_text()
    assert (project / "LICENSE").read_text() == license_text, "a LICENSE differs from the root's"

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(f"{dist_info}/METADATA"))
        assert archive.read(f"{dist_info}/licenses/LICENSE").decode() == license_text
    packages = {n.split("/")[0] for n in names if not n.startswith(dist_info)}
    assert all(f"{package}/py.typed" in names for package in packages), (packages, names)

    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata["Description-Content-Type"] == "text/markdown"
    readme = metadata.get_payload()
    assert isinstance(readme, str)
    assert readme.startswith("# "), readme[:80]
    assert len(readme) > 300, "the long description is a stub"
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert set(urls) >= {"Homepage", "Source", "Issues"}, urls
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.10" in classifiers
    requires = metadata.get_all("Requires-Dist") or []
    leaked = [r for r in requires if r.startswith(DEV_TOOLS)]
    leaked += [r for r in requires if r.startswith("pytest") and "extra ==" not in r]
    assert leaked == [], f"development tools published as dependencies: {leaked}"

    with tarfile.open(sdist) as archive:
        top = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in archive.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= top, sorted(top)
