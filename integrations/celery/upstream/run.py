#!/usr/bin/env python3
"""Celery's own integration tests against Celery's Redis backend and against the bridge.

Fetches the celery sdist (its ``t/integration`` suite ships in it), runs the
chosen test files once per backend, each run with a broker and a database of
its own, and compares the outcomes: every test that passes with Celery's own
Redis backend must pass through the bridge too.

    python integrations/celery/upstream/run.py                  # the full files, every backend
    python integrations/celery/upstream/run.py --slice smoke    # a few minutes' worth
    python integrations/celery/upstream/run.py --backends celery-redis,resultstore-redis
    UPSTREAM_REDIS_DB=14 python integrations/celery/upstream/run.py --backends ...  # alongside
    python integrations/celery/upstream/run.py --tests t/integration/test_canvas.py::test_chord

``make celery-upstream`` runs the full comparison in the project's venv (the
bridge's ``test`` extra installs what the suite imports); ``make test`` runs the
smoke slice through the bridge. Results (JUnit XML and a
Markdown report) go to ``.upstream-celery/results/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

CELERY_VERSION = "5.7.0"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
WORKDIR = ROOT / ".upstream-celery"
REDIS = "redis://127.0.0.1:6379"
# A Redis database of its own for the broker and for Celery's Redis backend: the suite's
# queue is always "celery", and other test sessions use database 0.
REDIS_DB = int(os.environ.get("UPSTREAM_REDIS_DB", "13"))  # another one runs a second harness
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"

FILES = (
    "t/integration/test_tasks.py",
    "t/integration/test_canvas.py",
    "t/integration/test_backend.py",
)
SMOKE = (
    "t/integration/test_tasks.py::test_tasks::test_basic_task",
    "t/integration/test_tasks.py::test_tasks::test_fail",
    "t/integration/test_tasks.py::test_tasks::test_revoked",
    "t/integration/test_tasks.py::test_tasks::test_ignore_result",
    "t/integration/test_tasks.py::test_tasks::test_reject_without_requeue_stores_failure",
    "t/integration/test_canvas.py::test_chain::test_simple_chain",
    "t/integration/test_canvas.py::test_group::test_parent_ids",
    "t/integration/test_canvas.py::test_chain::test_chain_of_task_a_group_and_a_chord",
    "t/integration/test_canvas.py::test_chord::test_chord_order",
    "t/integration/test_canvas.py::test_chord::test_nested_chord",
    "t/integration/test_canvas.py::test_chord::test_error_propagates_to_chord_from_simple",
)
# xfail only when TEST_BACKEND starts with "redis://" (celery issue #6437): under any other
# URL the test waits 60 s for a result Celery itself never delivers, then fails.
XFAIL_ON_REDIS_URL = "t/integration/test_canvas.py::test_chord::test_error_propagates_from_chord"


@dataclass(frozen=True)
class Run:
    name: str
    backend: str  # TEST_BACKEND; "{db}" is replaced by a fresh PostgreSQL database
    bridge_as_redis: bool = False  # the bridge under Celery's "redis" name (its module doc)


BACKENDS = {
    "celery-redis": Run("celery-redis", f"{REDIS}/{REDIS_DB}"),
    # A redis:// URL served by the bridge: the suite's Redis-only tests run too.
    "resultstore-redis": Run("resultstore-redis", f"{REDIS}/{REDIS_DB}", bridge_as_redis=True),
    "resultstore-postgresql": Run(
        "resultstore-postgresql", "resultstore+db+postgresql://postgres@127.0.0.1:5432/{db}"
    ),
}


def fetch_suite(python: str) -> Path:
    """The extracted sdist (downloaded once into the work dir)."""
    sdist = WORKDIR / "sdist"
    tree = sdist / f"celery-{CELERY_VERSION}"
    if not (tree / "t" / "integration").is_dir():
        sdist.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [python, "-m", "pip", "download", "--quiet", f"celery=={CELERY_VERSION}",
             "--no-binary", ":all:", "--no-deps", "-d", str(sdist)],
            check=True,
        )  # fmt: skip
        with tarfile.open(sdist / f"celery-{CELERY_VERSION}.tar.gz") as archive:
            archive.extractall(sdist, filter="data")
    return tree


def fresh_database() -> str:
    import psycopg

    name = f"rs_upstream_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flush_redis_db() -> None:
    import redis

    redis.Redis.from_url(f"{REDIS}/{REDIS_DB}").flushdb()


def run_suite(python: str, tree: Path, run: Run, tests: list[str], results: Path) -> Path:
    database = fresh_database() if "{db}" in run.backend else None
    backend = run.backend.format(db=database)
    junit = results / f"{run.name}.xml"
    args = [
        python, "-m", "pytest", "-p", "celery.contrib.pytest", "-p", "no:cacheprovider",
        "-rfExXs", "-q", f"--junitxml={junit}", *tests,
    ]  # fmt: skip
    if not backend.startswith("redis://"):
        args += ["--deselect", XFAIL_ON_REDIS_URL]
    env = {**os.environ, "TEST_BROKER": f"{REDIS}/{REDIS_DB}", "TEST_BACKEND": backend}
    if run.bridge_as_redis:
        args[3:3] = ["-p", "bridge_as_redis"]  # after "python -m pytest"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    flush_redis_db()
    began = time.monotonic()
    served = " (served by the bridge)" if run.bridge_as_redis else ""
    print(f"== {run.name}: TEST_BACKEND={run.backend}{served}", flush=True)
    try:
        subprocess.run(args, cwd=tree, env=env, check=False)
    finally:
        if database is not None:
            drop_database(database)
    print(f"== {run.name}: {time.monotonic() - began:.0f} s", flush=True)
    return junit


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed / failed / error / skipped / xfailed / xpassed."""
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
            elif child.tag == "skipped":
                kind = child.get("type", "")
                outcome = "xfailed" if kind == "pytest.xfail" else "skipped"
        found[test] = outcome
    return found


OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed")
REFERENCE = "celery-redis"


def regressions(runs: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """Per bridge run: the tests that passed with Celery's own Redis backend and not here."""
    reference = runs.get(REFERENCE)
    if reference is None:
        return {}
    passed = [t for t, v in reference.items() if v == "passed"]
    return {
        name: sorted(t for t in passed if found.get(t) != "passed")
        for name, found in runs.items()
        if name != REFERENCE
    }


def report(runs: dict[str, dict[str, str]]) -> str:
    lines = ["| backend | " + " | ".join(OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 1) + "|"]
    for name, found in runs.items():
        counts = [sum(1 for v in found.values() if v == kind) for kind in OUTCOMES]
        lines.append(f"| {name} | " + " | ".join(map(str, counts)) + " |")
    for name, worse in regressions(runs).items():
        lines += ["", f"Passed with {REFERENCE}, not with {name}: {len(worse)}"]
        lines += [f"- {t}: {runs[name].get(t, 'not run')}" for t in worse]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--slice", choices=("full", "smoke"), default="full")
    parser.add_argument(
        "--tests",
        nargs="+",
        metavar="NODE_ID",
        help="run these pytest node ids of the suite (as 't/integration/...') instead of a slice",
    )
    parser.add_argument("--python", default=sys.executable, help="the interpreter to test with")
    args = parser.parse_args(argv)
    chosen = [BACKENDS[name] for name in args.backends.split(",")]
    tests = args.tests or list(SMOKE if args.slice == "smoke" else FILES)
    tree = fetch_suite(args.python)
    results = WORKDIR / "results"
    results.mkdir(parents=True, exist_ok=True)
    runs = {run.name: outcomes(run_suite(args.python, tree, run, tests, results)) for run in chosen}
    text = report(runs)
    (results / "report.md").write_text(text)
    print(text)
    if REFERENCE in runs:
        return 1 if any(regressions(runs).values()) else 0
    failed = any(v in ("failed", "error") for found in runs.values() for v in found.values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
