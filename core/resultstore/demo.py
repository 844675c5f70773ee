"""A tour of the whole lifecycle: ``python -m resultstore.demo [URL]`` or ``resultstore demo``.

A client submits a group of tasks with ``.delay()`` to worker processes (the
small :class:`resultstore.Executor`), watches their progress, joins them, sees
a failure re-raised with its remote traceback, and forgets the results. The
workers and the client meet only in the backend: by default an SQLite file in
a temporary directory (``db+sqlite://``); ``memory://`` URLs run the workers
as threads.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from pathlib import Path

from . import (
    Backend,
    Capability,
    Executor,
    RemoteTraceback,
    TaskMeta,
    current_run,
)
from ._executor import Pool


def square(n: int) -> int:
    """Three steps of work, each reported as PROGRESS."""
    run = current_run()
    for step in range(1, 4):
        time.sleep(0.05 * n)
        if run is not None:
            run.update_state("PROGRESS", {"step": step, "of": 3})
    return n * n


def divide(n: int) -> float:
    time.sleep(0.1)
    return n / 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resultstore.demo", description=__doc__)
    parser.add_argument("url", nargs="?", help="backend URL (default: a temporary SQLite file)")
    url = parser.parse_args(argv).url
    with tempfile.TemporaryDirectory(prefix="resultstore-demo-") as tmp:
        return tour(url or f"db+sqlite:///{Path(tmp) / 'results.sqlite'}")


def tour(url: str) -> int:
    with Backend(url, extended=True) as backend:
        pool: Pool = "thread" if backend.process_local else "process"
        print(f"backend: {backend.url.masked}  (workers: {pool} pool)")
        with Executor(backend, pool=pool, max_workers=3) as executor:
            square_task = executor.task(square, name="demo.square")
            divide_task = executor.task(divide, name="demo.divide")

            one = square_task.delay(3)
            print(f"square.delay(3) -> {one.id}")
            print(f"  get(timeout=30) -> {one.get(timeout=30)}  (state {one.state})")
            call = ", ".join(map(repr, one.args or ()))
            print(f"  ran as {one.name}({call}) on worker {one.worker}")

            group = executor.group([square_task.s(n) for n in range(1, 5)] + [divide_task.s(7)])
            print(f"submitted group {group.id} of {len(group)} tasks; watching:")

            def progress(meta: TaskMeta) -> None:
                if meta.status == "PROGRESS":
                    step = meta.result
                    print(f"  {meta.task_id[:8]}  PROGRESS {step['step']}/{step['of']}")

            for done in group.as_completed(timeout=30, on_message=progress):
                meta = backend.get_task_meta(done.id)
                print(f"  {done.id[:8]}  {meta.status}: {backend.result_value(meta)!r}")

            print(f"completed: {group.completed_count()} of {len(group)} succeeded")
            print(f"join(propagate=False) -> {group.join(timeout=30, propagate=False)}")
            try:
                group.join(timeout=30)
            except ZeroDivisionError as exc:
                print(f"join() re-raised the failure: {type(exc).__name__}: {exc}")
                if isinstance(exc.__cause__, RemoteTraceback):
                    print(textwrap.indent(exc.__cause__.traceback.rstrip(), "  | "))

            everything = [one, *group]
            for result in everything:
                result.forget()
            if Capability.GROUPS in backend.capabilities:
                group.delete()
            left = [r.id for r in everything if backend.exists(r.id)]
            print(f"forgot {len(everything)} results and the group; left: {left or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
