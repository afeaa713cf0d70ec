"""The v2 API's Prometheus metrics: requests by method, route and status, and their latency by route.

Counted by wrapping each v2 route's handler (`ApiMetrics.counted`), so invoke and trigger calls,
which have their own metrics on the LB, pay nothing for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from fn_core.errors import APIError, ClientCancelled
from fn_core.metrics import Histogram, label_value

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiMetrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.durations: dict[str, Histogram] = {}

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.durations.get(route)
        if histogram is None:
            histogram = self.durations[route] = Histogram()
        histogram.observe(duration_s)

    def counted(self, route: str, handler: Handler) -> Handler:
        """``handler`` counted under ``route`` (its path template, e.g. ``/v2/apps/{app_id}``)."""

        async def wrapper(request: web.Request) -> web.StreamResponse:
            started = time.monotonic()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except (APIError, web.HTTPException) as exc:  # answered by the error middleware, with this status
                status = exc.status
                raise
            except asyncio.CancelledError:
                status = ClientCancelled.status
                raise
            finally:
                self.observe(request.method, route, status, time.monotonic() - started)

        return wrapper

    def render(self) -> str:
        lines = [
            "# HELP fn_api_requests_total Requests to the v2 API, by method, route and HTTP status.",
            "# TYPE fn_api_requests_total counter",
        ]
        lines += [
            f'fn_api_requests_total{{method="{label_value(method)}",route="{label_value(route)}",status="{status}"}} {count}'
            for (method, route, status), count in sorted(self.requests.items())
        ]
        lines += [
            "# HELP fn_api_request_duration_seconds Time to answer v2 API requests, by route.",
            "# TYPE fn_api_request_duration_seconds histogram",
        ]
        for route, histogram in sorted(self.durations.items()):
            lines += histogram.samples("fn_api_request_duration_seconds", f'route="{label_value(route)}"')
        return "\n".join(lines) + "\n"
