"""Reading a request body within ``FN_REQUEST_BODY_READ_TIMEOUT`` (Go's ReadTimeout, for the body).

A client that does not send its whole body in time gets 408 (`RequestBodyTimeout`) before anything
is created or run; the `errors` middleware (`fn_core.api.server`) then closes the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from fn_core.errors import RequestBodyTimeout

BodyReader = Callable[[web.BaseRequest], Awaitable[bytes]]


def body_reader(timeout_s: float) -> BodyReader:
    """``read(request) -> body``: aiohttp's ``request.read`` itself when ``timeout_s`` is 0 (no limit: nothing
    added to the hot path), else the same bounded by ``timeout_s`` seconds."""
    if not timeout_s:
        return web.BaseRequest.read

    async def read(request: web.BaseRequest) -> bytes:
        try:
            async with asyncio.timeout(timeout_s):
                return await request.read()
        except TimeoutError:
            raise RequestBodyTimeout(f"Timed out reading the request body: not all of it came within {timeout_s:g} s") from None

    return read
