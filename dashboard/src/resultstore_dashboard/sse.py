"""The task page's live part: Server-Sent Events fed by ``Backend.watch``.

``GET /api/events?id=<task id>`` streams ``event: state`` messages, each a JSON
snapshot of the task (state, progress, summary; see ``present.snapshot``), whenever
the store reports a change of that id: by the plugin's push channel (Redis pub/sub,
PostgreSQL NOTIFY, memory://) or, for plugins without push, the core's one shared
poller. The browser never polls. The stream ends after the snapshot of a finished
(or forgotten) task, and its watch is closed when the browser goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from resultstore import Backend, ResultStoreError, TaskMeta

from . import present
from .app import checked_id, dashboard, read_task
from .query import BadQuery
from .security import Receive, Scope, Send

log = logging.getLogger("resultstore_dashboard")

# A comment line this often keeps proxies from closing an idle stream and lets the
# server notice a browser that went away without closing the connection.
HEARTBEAT = 15.0
# Where the store cannot answer, the stream waits this long before reading again.
RETRY_AFTER = 2.0


async def events(request: Request) -> Response:
    try:
        task_id = checked_id(request.query_params.get("id", ""))
    except BadQuery as exc:
        return PlainTextResponse(str(exc), status_code=400)
    return EventStream(dashboard(request).backend, task_id)


class EventStream(Response):
    """An ASGI response that owns its watch from the first byte to the disconnect."""

    def __init__(self, backend: Backend, task_id: str) -> None:
        super().__init__(media_type="text/event-stream")
        self.backend = backend
        self.task_id = task_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def on_change(task_id: str, meta: TaskMeta | None) -> None:
            # On the channel's thread: hand over to the loop, never block it.
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(changed.set)

        watch = self.backend.watch(on_change)
        try:
            # Subscribing may be I/O (Redis, PostgreSQL): off the loop. Added before the
            # first read, so no store between the read and the subscription is missed.
            await run_in_threadpool(watch.add, [self.task_id])
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-store"),
                        (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
                    ],
                }
            )
            pump = asyncio.ensure_future(self._pump(send, changed))
            gone = asyncio.ensure_future(_disconnected(receive))
            done, pending = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                error = task.exception()
                if error is not None and not isinstance(error, OSError):
                    raise error
        finally:
            watch.close()

    async def _pump(self, send: Send, changed: asyncio.Event) -> None:
        async def emit(text: str, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": more})

        await emit("retry: 2000\n\n")  # the browser's reconnect delay after a cut
        last: dict[str, Any] | None = None
        while True:
            changed.clear()  # before the read: a change during it sets it again
            try:
                meta = await read_task(self.backend, self.task_id)
            except (ResultStoreError, ValueError) as exc:
                log.warning("event stream of %r: %s", self.task_id, exc)
                await emit(": the store did not answer; trying again\n\n")
                await asyncio.sleep(RETRY_AFTER)
                continue
            snap = present.snapshot(meta)
            if snap != last:
                await emit(f"event: state\ndata: {json.dumps(snap, default=repr)}\n\n")
                last = snap
            if snap["ready"]:
                await emit("", more=False)
                return
            try:
                await asyncio.wait_for(changed.wait(), HEARTBEAT)
            except asyncio.TimeoutError:
                await emit(": keep-alive\n\n")


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
