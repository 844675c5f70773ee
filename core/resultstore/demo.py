"""A tour of the whole lifecycle: ``python -m resultstore.demo [URL]``.

Worker threads play the provider (started, progress, done or failed); the main
thread plays the client (waits, joins a group, sees a failure re-raised with
its remote traceback, forgets). The URL defaults to the embedded ``memory://demo``.
"""

from __future__ import annotations

import argparse
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from . import (
    AsyncResult,
    Backend,
    GroupResult,
    RemoteTraceback,
    TaskInfo,
    TaskMeta,
    running_task,
)


def provide(
    backend: Backend, task_id: str, group_id: str, fn: Callable[..., Any], *args: Any
) -> None:
    """What a worker does around one task run."""
    info = TaskInfo(name=fn.__name__, args=args, group_id=group_id, worker="demo-worker")
    backend.mark_as_started(task_id, {"thread": threading.current_thread().name}, request=info)
    with running_task(task_id):
        try:
            value = fn(backend, task_id, *args)
        except Exception as exc:
            backend.mark_as_failure(task_id, exc, request=info)
        else:
            backend.mark_as_done(task_id, value, request=info)


def square(backend: Backend, task_id: str, n: int) -> int:
    for step in range(1, 4):
        time.sleep(0.02 * n)
        backend.store_result(task_id, {"step": step, "of": 3}, "PROGRESS")
    return n * n


def divide(backend: Backend, task_id: str, n: int) -> float:
    time.sleep(0.05)
    return n / 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resultstore.demo", description=__doc__)
    parser.add_argument("url", nargs="?", default="memory://demo", help="backend URL")
    url = parser.parse_args(argv).url

    with Backend(url) as backend:
        print(f"backend: {backend!r}")
        group_id = f"group-{uuid.uuid4().hex[:8]}"
        jobs: list[tuple[Callable[..., Any], int]] = [(square, n) for n in range(1, 6)]
        jobs.append((divide, 7))
        results = [AsyncResult(f"task-{uuid.uuid4().hex[:8]}", backend) for _ in jobs]
        group = GroupResult(group_id, results, backend).save()
        print(f"submitted group {group_id} of {len(results)} tasks")

        workers = [
            threading.Thread(
                target=provide, args=(backend, r.id, group_id, fn, n), name=f"worker-{i}"
            )
            for i, (r, (fn, n)) in enumerate(zip(results, jobs, strict=True))
        ]
        for worker in workers:
            worker.start()

        first = results[0]
        print(f"waiting for {first.id} ...")
        print(f"  {first.id} -> {first.get(timeout=10)} (state {first.state})")

        def progress(meta: TaskMeta) -> None:
            if meta.status == "PROGRESS":
                print(f"  {meta.task_id} progress {meta.result['step']}/{meta.result['of']}")

        restored = GroupResult.restore(group_id, backend)
        if restored != group:
            raise SystemExit(f"group {group_id} did not restore: {restored!r}")
        print(f"restored group {group_id}; watching tasks complete:")
        for done in restored.as_completed(timeout=10, on_message=progress):
            state = backend.get_state(done.id)
            print(f"  {done.id} {state}: {done.get(propagate=False)!r}")

        print(f"completed: {restored.completed_count()} of {len(restored)} succeeded")
        print(f"join(propagate=False): {restored.join(timeout=10, propagate=False)}")
        try:
            restored.join(timeout=10)
        except ZeroDivisionError as exc:
            print(f"join re-raised the failure: {type(exc).__name__}: {exc}")
            if isinstance(exc.__cause__, RemoteTraceback):
                print(textwrap.indent(exc.__cause__.traceback.rstrip(), "  | "))

        for worker in workers:
            worker.join()
        restored.forget()
        restored.delete()
        gone = [backend.exists(r.id) for r in restored]
        print(f"forgot {len(gone)} results and the group; any left: {any(gone)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
