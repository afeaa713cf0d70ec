"""Reading a request body within ``FN_REQUEST_BODY_READ_TIMEOUT`` (Go's ReadTimeout, for the body), and
answering ``Expect: 100-continue`` only for a body that ``FN_MAX_REQUEST_SIZE`` lets in; on the invoke and trigger
routes only once the handler reads it (`defer_continue`), after the fn is looked up, as Go does.

A client that does not send its whole body in time gets 408 (`RequestBodyTimeout`) before anything
is created or run; the `errors` middleware (`fn_core.api.server`) then closes the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion11, hdrs, web

from fn_core.errors import RequestBodyTimeout

BodyReader = Callable[[web.BaseRequest], Awaitable[bytes]]
ExpectHandler = Callable[[web.Request], Awaitable[None]]


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


def expect_handler(max_size: int) -> ExpectHandler | None:
    """aiohttp's answer to ``Expect: 100-continue`` (None: aiohttp's own, when there is no ``max_size``), except for
    a Content-Length over ``max_size``: no "100 Continue" goes out, so the client gets the 413 the `errors`
    middleware then answers and never sends the body (aiohttp's own invites the body it will refuse)."""
    if not max_size:
        return None

    async def expect(request: web.Request) -> None:
        if request.content_length is not None and request.content_length > max_size:
            return
        if request.version != HttpVersion11:  # as aiohttp: HTTP/1.0 has no interim answers
            return
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {request.headers.get('Expect')}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not begun

    return expect


async def defer_continue(request: web.Request) -> None:
    """The Expect handler of routes that may refuse a request before they read its body (invoke, triggers: an
    unknown fn is 404): it sends no "100 Continue", `send_continue` does as the body is read, so a client is not
    invited to send a body that is then refused (Go's net/http sends it at the body's first read). A Content-Length
    over FN_MAX_REQUEST_SIZE is refused by the `errors` middleware before the handler runs."""
    if request.version == HttpVersion11 and request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {request.headers.get(hdrs.EXPECT)}")


async def send_continue(request: web.BaseRequest) -> None:
    """The "100 Continue" `defer_continue` held back; for a request with an Expect header, before its body is read."""
    if request.version == HttpVersion11:  # as aiohttp: HTTP/1.0 has no interim answers
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not begun
