"""Reading a request body within ``FN_REQUEST_BODY_READ_TIMEOUT`` (Go's ReadTimeout, for the body), and
answering ``Expect: 100-continue`` only once the handler reads the body (`defer_continue`), as Go does: after the
plugins' `check_request`, the ``FN_MAX_REQUEST_SIZE`` check and, on the invoke and trigger routes, the fn's lookup,
so a client is never invited to send a body that is then refused.

A client that does not send its whole body in time gets 408 (`RequestBodyTimeout`) before anything
is created or run; the `errors` middleware (`fn_core.api.server`) then closes the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion11, hdrs, web

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


async def defer_continue(request: web.Request) -> web.StreamResponse | None:
    """The Expect handler of every route: it sends no "100 Continue", `send_continue` does as the body is read (Go's
    net/http sends it at the body's first read). A Content-Length over FN_MAX_REQUEST_SIZE is refused by the
    `errors` middleware before the handler runs. Any other expectation is answered 417 here, before the plugins
    and the handler (as Go's server answers it, whatever the HTTP version), in Fn's JSON, and the connection closed:
    the body is never read."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() == "100-continue":
        return None
    message = f"Expectation Failed: unsupported Expect {expect!r}; only 100-continue is supported"
    response = web.json_response({"message": message}, status=417)
    response.force_close()
    return response


async def send_continue(request: web.BaseRequest) -> None:
    """The "100 Continue" `defer_continue` held back; for a request with an Expect header, before its body is read."""
    if request.version == HttpVersion11:  # as aiohttp: HTTP/1.0 has no interim answers
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not begun
