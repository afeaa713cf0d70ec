"""What every fn-core HTTP node serves, a runner's HTTP port included: `/` (ping), `/version`, `/metrics`.

As Fn's admin routes: its pure runner serves them on ``FN_PORT`` beside its gRPC port, and so does
`fn-core runner` (`admin_app`). `/metrics` is the node's own figures (each a `MetricsSource`), then
Prometheus' process figures of the node and of the commands of ``FN_PROCESS_COLLECTOR_LIST``
(`fn_core.process_metrics`), read in a thread: `/proc` reads stay off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from aiohttp import web

from fn_core import __version__
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
        return web.Response(text="".join(parts), content_type="text/plain", charset="utf-8")

    app.router.add_get("/", ping)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics)


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
