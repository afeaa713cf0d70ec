"""What every fn-core HTTP node serves, a runner's HTTP port included: `/` (ping), `/version`, `/metrics`,
`/debug/stacks`.

As Fn's admin routes: its pure runner serves them on ``FN_PORT`` beside its gRPC port, and so does
`fn-core runner` (`admin_app`). `/metrics` is the node's own figures (each a `MetricsSource`), then
Prometheus' process figures of the node and of the commands of ``FN_PROCESS_COLLECTOR_LIST``
(`fn_core.process_metrics`), read in a thread: `/proc` reads stay off the event loop. It is sent as
Prometheus' text format says, ``text/plain; version=0.0.4; charset=utf-8``, as Fn's promhttp sends it.

`/debug/stacks` is what Fn's ``/debug/pprof/goroutine?debug=2`` is to a Go node: where every thread and
every asyncio task of the process is waiting, as text, to see what a node that hangs or lags is stuck on.
It shows code locations only, never values.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

from aiohttp import hdrs, web

from fn_core import __version__
from fn_core.api.body import defer_continue
from fn_core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fn_core.process_metrics import ProcessMetrics

#: A node's own part of `/metrics`, in the text exposition format.
MetricsSource = Callable[[], str]

HTTP_MESSAGES = {404: "Path not found", 405: "Method not allowed"}


def add_admin_routes(app: web.Application, config, sources: Sequence[MetricsSource]) -> None:
    process_metrics = ProcessMetrics.from_config(config)

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"goto": "https://github.com/fnproject/fn", "hello": "world!"})

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": __version__})

    async def metrics(request: web.Request) -> web.Response:
        parts = [source() for source in sources]
        parts.append(await asyncio.to_thread(process_metrics.render))
        return web.Response(body="".join(parts).encode("utf-8"), headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})

    async def stacks(request: web.Request) -> web.Response:
        return web.Response(text=render_stacks(), content_type="text/plain", charset="utf-8")

    for path, handler in (("/", ping), ("/version", version), ("/metrics", metrics), ("/debug/stacks", stacks)):
        app.router.add_get(path, handler, expect_handler=defer_continue)


def render_stacks() -> str:
    """Every thread's stack, then every asyncio task's await chain (outermost call first, as a traceback)."""
    out = io.StringIO()
    frames = sys._current_frames()
    threads = threading.enumerate()
    out.write(f"{len(threads)} threads\n")
    for thread in threads:
        out.write(f"\nthread {thread.name!r}{' (daemon)' if thread.daemon else ''}:\n")
        frame = frames.get(thread.ident) if thread.ident is not None else None
        out.writelines(traceback.format_stack(frame) if frame is not None else ["  (no frame)\n"])
    this = asyncio.current_task()
    tasks = sorted((task for task in asyncio.all_tasks() if task is not this), key=lambda task: task.get_name())
    out.write(f"\n{len(tasks)} asyncio tasks (besides this request's)\n")
    for task in tasks:
        out.write(f"\ntask {task.get_name()!r}:\n")
        chain = traceback.StackSummary.extract((frame, frame.f_lineno) for frame in _await_chain(task.get_coro()))
        out.writelines(chain.format())
    return out.getvalue()


def _await_chain(coro: object):
    """The frames of a suspended coroutine and of what it awaits, down to the innermost (a task's
    own `get_stack` shows only the outermost)."""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            yield frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)


@web.middleware
async def _json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"message": HTTP_MESSAGES.get(exc.status, exc.reason)}, status=exc.status)


def admin_app(config, sources: Sequence[MetricsSource]) -> web.Application:
    """The whole HTTP application of a node that has nothing else to serve (`fn-core runner`)."""
    app = web.Application(middlewares=[_json_errors])
    add_admin_routes(app, config, sources)
    return app
