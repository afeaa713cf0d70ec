"""The HTTP/1.1 connections of the LB and API nodes: aiohttp's, with the bounds Go's server has and aiohttp's lacks.

- ``FN_MAX_REQUEST_HEADER_SIZE`` (Go's MaxHeaderBytes; default, as Fn's, 1 MiB) bounds the whole request head,
  request line and headers together, not each line: over it, 431 and the connection is closed. A head still
  coming is refused as soon as its bytes pass the bound; one that came with its body in one read is measured
  itself. aiohttp's per-line checks, set to the same size (and at most `MAX_REQUEST_HEADERS` headers), answer
  431 too.
- ``FN_REQUEST_HEADER_READ_TIMEOUT`` (Go's ReadHeaderTimeout): a request head must come whole within this
  long, counted from the connection's start for its first request and from the first byte of each later
  one (the wait before that byte is ``FN_HTTP_IDLE_TIMEOUT``'s). Unset, ``FN_REQUEST_BODY_READ_TIMEOUT``
  applies, as Go falls back to its ReadTimeout. A head begun and not finished in time gets 408 and the
  connection is closed; a new connection that sent nothing at all is closed unanswered, as Go does.
- ``FN_RESPONSE_WRITE_TIMEOUT`` (Go's WriteTimeout): a response must be written within this long of the end
  of its request's head, the handler's time included. Then the connection is cut unanswered, as Go's
  failed write leaves it; on the LB that ends the call like a client that went away.
- A transfer coding other than ``chunked`` alone is 501 and the connection is closed, as Go's server has it
  (aiohttp would take ``gzip, chunked`` as chunked; one that does not end in ``chunked`` its parser refuses, 400).
- aiohttp's own refusals (a malformed request, a handler's unexpected exception) are Fn's
  ``{"message": ...}`` JSON, not aiohttp's plain text. A refusal is logged as one logfmt line (the parser's
  message quotes the client's bytes over several lines), once per client host and reason in `REFUSAL_QUIET_S`:
  a client that keeps sending the same bad request is one line, not one per request.

With both timeouts off (the default) a request costs one byte count more than aiohttp's own handling.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from http import HTTPStatus
from typing import Any

import attrs
from aiohttp import hdrs, web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from fn_core import logfmt
from fn_core.errors import APIError, RequestHeadTimeout, RequestHeadTooLarge
from fn_core.http_heads import headers_size, too_many_headers
from fn_core.listen import BACKLOG, bound_port, close_all

log = logging.getLogger(__name__)

#: Go's http.DefaultMaxHeaderBytes: Fn's default for FN_MAX_REQUEST_HEADER_SIZE
DEFAULT_MAX_HEAD_BYTES = 1 << 20
#: aiohttp's parser also counts headers (Go does not): a bound no real client meets, answered with 431 too
MAX_REQUEST_HEADERS = 1000
REFUSAL_QUIET_S = 600.0  # a client's refusal for the same reason is logged again only after this long
MAX_REFUSAL_CLIENTS = 1000  # client hosts remembered (a scan from many hosts costs no more); beyond, the oldest is forgotten
MAX_LOGGED_ERROR = 300  # characters of the refusal's message logged: the parser's quotes the client's bytes


class RefusalLog:
    """Logs a refused request once per client host and reason (as the runner's gRPC server logs a refused LB), and
    again after `REFUSAL_QUIET_S` with the count of those not logged meanwhile."""

    def __init__(self) -> None:
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}  # (host, reason) -> (when logged, refusals since)

    def refused(self, host: str, reason: str, status: int, message: str) -> None:
        key, now = (host, reason), time.monotonic()
        logged = self._logged.pop(key, None)
        if logged is not None and now - logged[0] < REFUSAL_QUIET_S:
            self._logged[key] = (logged[0], logged[1] + 1)
            return
        while len(self._logged) >= MAX_REFUSAL_CLIENTS:
            del self._logged[next(iter(self._logged))]  # the oldest: insertion order, each re-inserted when it repeats
        self._logged[key] = (now, 0)
        if len(message) > MAX_LOGGED_ERROR:
            message = message[:MAX_LOGGED_ERROR] + "..."
        fields: dict[str, object] = {"client": host, "status": status, "error": message}
        if logged is not None and logged[1]:
            fields["not_logged"] = logged[1]  # the same refusals of this client since its last line
        logfmt.log(log, logging.INFO, f"refused a request (logged once per client and reason in {REFUSAL_QUIET_S:g} s):", fields)


@attrs.frozen
class ConnectionLimits:
    """What a client connection may take: head bytes, and seconds for the head and for the response (0 = none)."""

    head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    head_timeout_s: float = 0.0
    write_timeout_s: float = 0.0

    @classmethod
    def from_config(cls, config: Any) -> ConnectionLimits:
        return cls(
            head_bytes=config.max_request_header_size or DEFAULT_MAX_HEAD_BYTES,
            # Go: "If ReadHeaderTimeout is zero, the value of ReadTimeout is used" (Fn's FN_REQUEST_BODY_READ_TIMEOUT)
            head_timeout_s=config.request_header_read_timeout_s or config.request_body_read_timeout_s,
            write_timeout_s=config.response_write_timeout_s,
        )

    def parser_limits(self) -> dict[str, Any]:
        """aiohttp's per-line and per-count bounds, no tighter than the whole head's."""
        return {"max_line_size": self.head_bytes, "max_field_size": self.head_bytes, "max_headers": MAX_REQUEST_HEADERS}


class FnConnection(RequestHandler):
    """One client connection: aiohttp's request handling, plus the head and write bounds of `ConnectionLimits`."""

    __slots__ = ("_limits", "_refusals", "_head_bytes", "_body", "_head_timer", "_write_timer", "_refused")

    def __init__(self, manager: web.Server, limits: ConnectionLimits, refusals: RefusalLog, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._refusals = refusals
        self._head_bytes = 0  # bytes of the request head being read (0: none begun)
        self._body: StreamReader | None = None  # the last request's body: bytes go there until its end
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._refused = False  # an error answer is queued; nothing more is read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._limits.head_timeout_s:  # Go counts the first head from the accept
            self._head_timer = self._loop.call_later(self._limits.head_timeout_s, self._head_too_slow)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        body = self._body
        in_head = body is None or body.is_eof()
        if in_head and data:  # aiohttp itself feeds b"" to parse what it held back
            if self._head_timer is None and self._limits.head_timeout_s:
                self._head_timer = self._loop.call_later(self._limits.head_timeout_s, self._head_too_slow)
            self._head_bytes += len(data)
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:  # a head is complete (or refused by the parser)
            if self._refused_head(self._request_count - requests):
                return
            self._head_bytes = 0
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self._body = self._messages[-1][1] if self._messages else None
            if self._limits.write_timeout_s and self._write_timer is None:
                self._arm_write_timer()
        elif in_head and self._head_bytes > self._limits.head_bytes:
            self._refuse(self._head_too_large())

    def _refused_head(self, new: int) -> bool:
        """The first of the ``new`` heads that is refused is answered in its request's place; it and what follows it
        are never handled. Refused: a head over the limit (431; the bytes counted include a body that came in the
        same read, so only then is each head measured itself), and a transfer coding other than chunked alone
        (501, as Go's server: aiohttp dechunks "gzip, chunked" and drops the gzip, so the function would get
        another body than the one sent, and a proxy in front that reads the coding as Go does another next request)."""
        messages = self._messages
        measure = self._head_bytes > self._limits.head_bytes
        for index in range(len(messages) - new, len(messages)):
            message = messages[index][0]
            if not isinstance(message, RawRequestMessage):
                continue
            if measure and _head_size(message) > self._limits.head_bytes:
                err: APIError = self._head_too_large()
            else:
                coding = message.headers.get(hdrs.TRANSFER_ENCODING)
                if coding is None or coding.lower() == "chunked":
                    continue
                err = APIError(f"Unsupported transfer encoding: {coding}", status=501)
            while len(messages) > index:
                messages.pop()
            self._refuse(err)
            return True
        return False

    def _head_too_large(self) -> RequestHeadTooLarge:
        return RequestHeadTooLarge(f"Request Header Fields Too Large: the head is over {self._limits.head_bytes} bytes")

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """Fn's JSON for every refusal aiohttp itself makes and for ours (an `APIError`); the connection is closed after it."""
        if request.writer.output_size > 0:  # as aiohttp: a response begun cannot become an error answer
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        if isinstance(exc, APIError):
            err = exc
        elif status == 500:  # a handler's bug: aiohttp's log line and traceback, Fn's answer
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            err = APIError("internal server error")
        elif isinstance(exc, LineTooLong):
            err = RequestHeadTooLarge(f"Request Header Fields Too Large: a line of the head is over {self._limits.head_bytes} bytes")
        elif too_many_headers(exc):
            err = RequestHeadTooLarge(f"Request Header Fields Too Large: more than {MAX_REQUEST_HEADERS} headers")
        else:  # a malformed request: say what the parser found
            phrase = HTTPStatus(status).phrase
            err = APIError(f"{phrase}: {message}" if message else phrase, status=status)
        if status != 500:  # the client's fault: one line, not aiohttp's traceback
            self._refusals.refused(request.remote or "?", f"{err.status} {type(exc).__name__}", err.status, err.message)
        response = web.json_response({"message": err.message}, status=err.status, headers=err.headers)
        response.force_close()
        return response

    def _refuse(self, err: APIError) -> None:
        """Answer ``err`` after any request still in progress here, then close; read nothing more."""
        self._refused = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._messages.append((_ErrInfo(status=err.status, exc=err, message=err.message), EMPTY_PAYLOAD))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._refused or self.transport is None:
            return
        if not self._head_bytes:  # a connection that never sent a byte: closed unanswered
            log.debug("closed a connection that sent no request within %g s", self._limits.head_timeout_s)
            self.force_close()
            return
        timeout = self._limits.head_timeout_s
        self._refuse(RequestHeadTimeout(f"Timed out reading the request head: not all of it came within {timeout:g} s"))

    def _arm_write_timer(self) -> None:
        self._write_timer = self._loop.call_later(self._limits.write_timeout_s, self._write_too_slow)

    def _write_too_slow(self) -> None:
        self._write_timer = None
        transport = self.transport
        if transport is not None:
            log.info("cut a connection: its response was not written within %g s (FN_RESPONSE_WRITE_TIMEOUT)",
                     self._limits.write_timeout_s)
            transport.abort()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._write_timer = None


class WriteBoundedConnection(FnConnection):
    """A connection under FN_RESPONSE_WRITE_TIMEOUT: the clock a head's end starts stops when its response is written
    (a class of its own, so that without the timeout a response takes no extra step)."""

    __slots__ = ()

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None) -> Any:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None
                if self._messages:  # a pipelined request waited: its clock starts now (Go reads it only now)
                    self._arm_write_timer()


def _head_size(message: RawRequestMessage) -> int:
    """Bytes of the request line, headers and blank line as sent (a separator of one space assumed)."""
    return len(message.method) + 1 + len(message.path) + len(" HTTP/1.1\r\n") + headers_size(message.raw_headers) + 2


class FnServer(web.Server):
    """aiohttp's low-level server making `FnConnection`s: built from the one an `aiohttp.web.AppRunner` makes."""

    def __init__(self, made: web.Server, limits: ConnectionLimits) -> None:
        # a Server keeps its connection arguments to itself; a subclass may read them
        super().__init__(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
        self.limits = limits
        self.refusals = RefusalLog()

    def __call__(self) -> FnConnection:
        kind = WriteBoundedConnection if self.limits.write_timeout_s else FnConnection
        return kind(self, self.limits, self.refusals, loop=self._loop, **self._kwargs)


class FnAppRunner(web.AppRunner):
    """An `aiohttp.web.AppRunner` whose connections are `FnConnection`s with ``limits``."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs, **limits.parser_limits())
        self.limits = limits

    async def _make_server(self) -> web.Server:
        return FnServer(await super()._make_server(), self.limits)


AIOHTTP_LINGERING_S = 10.0  # aiohttp's default lingering_time
#: FN_HTTP_IDLE_TIMEOUT=0: what aiohttp's keep-alive timeout was (75 s) before 3.14 made it an hour, given explicitly
DEFAULT_KEEPALIVE_S = 75.0


def http_timeouts(config: Any) -> dict[str, Any]:
    """FN_HTTP_IDLE_TIMEOUT as aiohttp's keep-alive timeout (0: 75 s). FN_REQUEST_BODY_READ_TIMEOUT
    also bounds aiohttp's lingering read of a body a handler left unread (after a 408, a 413, ...) before it
    closes the connection: reading the request takes no longer than that, as in Go."""
    out: dict[str, Any] = {"keepalive_timeout": config.http_idle_timeout_s or DEFAULT_KEEPALIVE_S}
    if config.request_body_read_timeout_s:
        out["lingering_time"] = min(config.request_body_read_timeout_s, AIOHTTP_LINGERING_S)
    return out


def app_runner(app: web.Application, config: Any, **kwargs: Any) -> FnAppRunner:
    """The runner of a node's HTTP server, with the connection bounds and timeouts its config sets."""
    # auto_decompress off: a gzip body goes to the function as sent, with its Content-Encoding, as Fn passes it
    return FnAppRunner(
        app, ConnectionLimits.from_config(config), access_log=None, auto_decompress=False, **http_timeouts(config), **kwargs
    )


async def serve_app(runner: FnAppRunner, listeners: list[socket.socket]) -> int:
    """Set up ``runner`` and serve on ``listeners`` (`fn_core.listen.listen_sockets`), which it then owns; the
    bound port. On failure the runner is cleaned up and the sockets closed."""
    try:
        await runner.setup()
        for listener in listeners:
            await web.SockSite(runner, listener, backlog=BACKLOG).start()
    except BaseException:
        await runner.cleanup()
        close_all(listeners)
        raise
    return bound_port(listeners)
