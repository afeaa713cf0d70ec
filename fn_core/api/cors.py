"""CORS on the v2 API: Fn's ``FN_API_CORS_ORIGINS`` and ``FN_API_CORS_HEADERS`` (gin-contrib/cors in Fn).

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an allowed
origin is answered here with 204, before the router would call it a 405. Every other /v2 answer
to an allowed origin, errors included, gets ``Access-Control-Allow-Origin``. A request from an
origin that is not allowed runs as usual and gets no CORS headers: the browser blocks it.

With no origins configured `cors_middleware` returns None and the app gets no middleware at all:
CORS off costs a request nothing. When on, a non-/v2 request (invoke, triggers) pays one prefix test.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

API_PREFIX = "/v2"
ALLOW_METHODS = "GET, POST, PUT, HEAD, DELETE"  # Fn's list: the v2 API's methods
DEFAULT_HEADERS = ("Origin", "Content-Length", "Content-Type")  # gin-contrib/cors' defaults
MAX_AGE_S = 12 * 3600  # gin-contrib/cors' default: how long a browser may reuse a preflight answer


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return list(seen.values())


def cors_middleware(origins: list[str], extra_headers: list[str], expose_headers: list[str]) -> Middleware | None:
    """The CORS middleware for the configured origins (``*`` = any); None when there are none (CORS off).

    ``expose_headers``: response headers a browser script may read (e.g. the request id header).
    """
    if not origins:
        return None
    any_origin = "*" in origins
    allowed = frozenset(origin.lower() for origin in origins)  # scheme and host are case-insensitive
    allow_headers = ", ".join(_unique([*DEFAULT_HEADERS, *extra_headers]))
    expose = ", ".join(_unique(expose_headers))
    preflight_headers = {
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": allow_headers,
        "Access-Control-Max-Age": str(MAX_AGE_S),
    }

    def add(headers: CIMultiDict[str], allow_origin: str) -> None:
        headers["Access-Control-Allow-Origin"] = allow_origin
        if allow_origin != "*":
            headers.add("Vary", "Origin")  # the answer depends on Origin: caches must keep one per origin
        if expose:
            headers["Access-Control-Expose-Headers"] = expose

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not path.startswith(API_PREFIX) or (len(path) > len(API_PREFIX) and path[len(API_PREFIX)] != "/"):
            return await handler(request)
        origin = request.headers.get("Origin")
        if not origin:  # not a cross-origin browser request
            return await handler(request)
        if any_origin:
            allow_origin = "*"
        elif origin.lower() in allowed:
            allow_origin = origin
        else:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            headers = CIMultiDict(preflight_headers)
            add(headers, allow_origin)
            return web.Response(status=204, headers=headers)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # the errors middleware lets redirects (< 400) through
            add(exc.headers, allow_origin)
            raise
        if not response.prepared:  # v2 answers are built whole, never streamed; the check costs nothing
            add(response.headers, allow_origin)
        return response

    return cors
