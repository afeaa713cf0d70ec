"""CORS: Fn's ``FN_API_CORS_ORIGINS`` and ``FN_API_CORS_HEADERS`` (gin-contrib/cors in Fn, on its whole router).

Every route of the node gets it, as in Fn: the v2 API, and invoke and triggers (a web page calling a
function). A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an
allowed origin is answered here with 204, before the router would call it a 405 (or a trigger's
function would get it). Every other answer to an allowed origin, errors and streamed answers included,
gets ``Access-Control-Allow-Origin``: it is set in ``on_response_prepare``, which every response passes
before its head goes out (a big invoke answer is streamed by its handler, past any middleware). A request
from an origin that is not allowed runs as usual and gets no CORS headers: the browser blocks it.

With no origins configured `install_cors` installs nothing: CORS off costs a request nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler

ALLOW_METHODS = "GET, POST, PUT, HEAD, DELETE"  # Fn's list
DEFAULT_HEADERS = ("Origin", "Content-Length", "Content-Type")  # gin-contrib/cors' defaults
MAX_AGE_S = 12 * 3600  # gin-contrib/cors' default: how long a browser may reuse a preflight answer


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return list(seen.values())


def install_cors(app: web.Application, origins: list[str], extra_headers: list[str], expose_headers: list[str]) -> bool:
    """Give ``app`` CORS for the configured origins (``*`` = any); nothing when there are none (CORS off): False.

    ``expose_headers``: response headers a browser script may read (e.g. the request id header).
    Its middleware must come before the one that turns errors into answers (`fn_core.api.server`).
    """
    if not origins:
        return False
    any_origin = "*" in origins
    allowed = frozenset(origin.lower() for origin in origins)  # scheme and host are case-insensitive
    allow_headers = ", ".join(_unique([*DEFAULT_HEADERS, *extra_headers]))
    expose = ", ".join(_unique(expose_headers))
    preflight_headers = {
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": allow_headers,
        "Access-Control-Max-Age": str(MAX_AGE_S),
    }

    def allow_origin(request: web.BaseRequest) -> str | None:
        origin = request.headers.get("Origin")
        if not origin:  # not a cross-origin browser request
            return None
        if any_origin:
            return "*"
        return origin if origin.lower() in allowed else None

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers and allow_origin(request):
            return web.Response(status=204, headers=preflight_headers)
        return await handler(request)

    async def on_prepare(request: web.BaseRequest, response: web.StreamResponse) -> None:
        origin = allow_origin(request)
        if origin is None:
            return
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = origin
        if origin != "*":
            headers.add("Vary", "Origin")  # the answer depends on Origin: caches must keep one per origin
        if expose:
            headers["Access-Control-Expose-Headers"] = expose

    app.middlewares.append(preflight)
    app.on_response_prepare.append(on_prepare)
    return True
