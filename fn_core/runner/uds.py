"""The hot container protocol ("http-stream"): readiness of the socket, then POST /call over it.

One keep-alive connection per container, one request at a time, no reconnect per call
(`HotConnection`). Everything here is on the event loop; nothing blocks.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import attrs
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import _EXC_SENTINEL
from aiohttp.http import HttpProcessingError, RawResponseMessage

from fn_core.errors import (
    APIError,
    BadRequest,
    CallTimeout,
    ContainerInitFail,
    ContainerInitTimeout,
    FunctionFailed,
    FunctionInvalidResponse,
    FunctionResponseHeaderTooBig,
    FunctionResponseTooBig,
)
from fn_core.http_heads import NOT_IN_VALUE, TOKEN, head_too_large, headers_size
from fn_core.models import Call, utc_seconds
from fn_core.runner.dirwatch import DirWatch
from fn_core.runner.shortage import runner_out_of

SOCKET_NAME = "lsnr.sock"
LISTENER_ENV = "unix:/tmp/iofs/lsnr.sock"

# Hop-by-hop headers never cross the runner (Fn strips them both ways).
HOP_HEADERS = frozenset(
    h.lower()
    for h in ("Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
              "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length", "Host")
)

#: request headers the runner sets itself: a caller's own (a client's, through /invoke) must not reach the
#: function beside them, as Fn's Header.Set replaces them
SET_BY_RUNNER = frozenset(("fn-call-id", "fn-deadline"))
_NOT_PASSED_ON = HOP_HEADERS | SET_BY_RUNNER

#: what no response header value may hold: a control character but HTAB (aiohttp will not write one to the client),
#: or a byte that is not UTF-8 (aiohttp's surrogateescape; protobuf strings, on to the LB, must be UTF-8)
_UNSENDABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f\udc80-\udcff]")
READ_BUFSIZE = 64 * 1024
WATCHED_RECHECK_S = 0.1  # a watched dir is looked at this often even without an event: readiness never rests on it alone
COALESCE_BYTES = 64 * 1024  # bodies up to this go out in the same write as the head
#: a 502/504's body is read and dropped (its container stays) up to this; a longer one is not read at all, the
#: connection is dropped instead: a function's error answer must never be held whole in the runner
DRAIN_LIMIT = 64 * 1024
#: the statuses whose container stays hot (Fn: 502 function failed, 504 timed out); any other non-200 retires it
KEPT_STATUSES = (502, 504)

#: FN_MAX_HDR_RESPONSE_SIZE=0: the bytes a function's response head (status line, headers, blank line) may have.
#: Fn's 0 is Go's http.Transport default, 10 MiB (``MaxResponseHeaderBytes``: "If zero, a default is used", 10 << 20);
#: ours is 1 MiB, Go's server-side default (``DefaultMaxHeaderBytes``) and our FN_MAX_REQUEST_HEADER_SIZE's. It admits
#: every real head (a 9 KB token, 4 KB cookies by the dozen, a CSP of tens of KB; 64 times the 16 KB Node.js takes by
#: default), while the runner holds a head whole and parses it on its event loop, which every other call on the
#: runner waits on: 1 MiB of ``a:`` lines is ~260,000 headers, ~50 MiB and ~0.15 s of the loop; 10 MiB is ~2.6 million,
#: ~500 MiB and ~3 s, per call (measured on the dev VM). FN_MAX_HDR_RESPONSE_SIZE=10485760 gives Fn's exact bound.
DEFAULT_MAX_RESPONSE_HEAD = 1 << 20
#: the fewest bytes a header line can have ("a:" and CRLF): a head of N bytes has at most N // 4 headers
MIN_HEADER_LINE = 4


def _head_bytes(limits: ResponseLimits) -> int:
    return limits.headers or DEFAULT_MAX_RESPONSE_HEAD


def _parser_limits(limits: ResponseLimits) -> dict[str, Any]:
    """aiohttp's per-line and per-count bounds, none tighter than the head's: whatever fits in the head passes them
    (the status line and each header are at most the head; so many headers as the head has room for)."""
    head = limits.head_bytes
    return {"max_line_size": head, "max_field_size": head, "max_headers": max(head // MIN_HEADER_LINE, 1)}


@attrs.frozen
class ResponseLimits:
    """What a function's response may be: body bytes (FN_MAX_RESPONSE_SIZE, 0 = no limit) and head bytes
    (FN_MAX_HDR_RESPONSE_SIZE: status line, headers and blank line together; 0 = `DEFAULT_MAX_RESPONSE_HEAD`).

    aiohttp's parser bounds only each line and the count of headers, and only once it has them: `ContainerProtocol`
    counts a head's bytes as they come, so a head over the bound is refused once that many bytes came, never held
    whole (a head of many lines each under the bound could otherwise be the bound times the count)."""

    body: int = 0
    headers: int = 0
    #: the bound in force (``headers``, or the default for 0); worked out once, as the parser's bounds
    head_bytes: int = attrs.field(init=False, default=attrs.Factory(_head_bytes, takes_self=True))
    #: for aiohttp's response parser (a parser is made per connection)
    parser: dict[str, Any] = attrs.field(init=False, default=attrs.Factory(_parser_limits, takes_self=True))


def _head_size(message: RawResponseMessage) -> int:
    """A parsed head's bytes as a well-formed one has them: ``HTTP/1.1 200 OK`` CRLF, ``Name: value`` CRLF each, CRLF."""
    return 15 + len(message.reason) + headers_size(message.raw_headers) + 2


_feed = ResponseHandler.data_received  # aiohttp's own (called directly: the hot path of every call)


class ContainerProtocol(ResponseHandler):
    """aiohttp's client protocol, with a bound on the bytes of a response head as they come.

    ``head_limit``: a head still unfinished after more bytes than this is refused (`FunctionResponseHeaderTooBig`,
    the connection closed). A head that ended in the read that passed the bound may be over it or not (the read
    holds some of the body too): ``head_over`` says so, and the caller measures that head itself.
    A body's bytes pass straight through: the count is only of what comes between two responses' bodies.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.head_limit = DEFAULT_MAX_RESPONSE_HEAD
        self.head_over = False  # the last head's read passed ``head_limit``: measure the head
        self._head_seen = 0  # bytes of the head being read
        self._refused = False

    def data_received(self, data: bytes) -> None:
        payload = self._payload
        if (payload is not None and not payload.is_eof()) or self._parser is None:  # a body, or kept for the parser
            _feed(self, data)
            return
        if self._refused:
            return
        self._head_seen += len(data)
        queued = len(self._buffer)  # the heads parsed and not yet read
        _feed(self, data)
        if len(self._buffer) != queued:  # the head is whole: the count starts again for the next one
            self.head_over = self._head_seen > self.head_limit
            self._head_seen = 0
        elif self._head_seen > self.head_limit and not self.is_eof():
            self._refused = True  # nothing more is parsed, nor held
            if self.transport is not None:
                self.transport.close()
            self.set_exception(_retire(FunctionResponseHeaderTooBig()))

    def set_exception(self, exc: BaseException, exc_cause: BaseException = _EXC_SENTINEL) -> None:
        # aiohttp fails only the next response with a parse error (a bad chunk's framing) or a lost connection: a body
        # being read when the bytes broke off would wait for more until the call's timeout
        payload = self._payload
        if payload is not None and not payload.is_eof():
            payload.set_exception(exc)
        super().set_exception(exc, exc_cause)


OnStart = Callable[[int, list[tuple[str, str]]], Awaitable[None]]
OnData = Callable[[bytes], Awaitable[None]]


class ContainerBroken(Exception):
    """The connection to the container failed: it has most likely died (the agent asks the driver how).

    ``spoke_bad_http``: the container answered, but not in HTTP (a bad status line, bad chunking, a header value
    with a control character): it is alive, so there is no exit to wait for.
    """

    def __init__(self, detail: str, spoke_bad_http: bool = False) -> None:
        super().__init__(detail)
        self.spoke_bad_http = spoke_bad_http


class SocketOutsideDir(ContainerBroken):
    """``lsnr.sock`` names no socket of the container's own dir: the runner, root, never connects there."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, spoke_bad_http=True)  # it is alive: there is no exit to wait for


def open_listener(socket_path: str) -> int:
    """An ``O_PATH`` fd of the socket that ``socket_path`` (``lsnr.sock``) is, or links to by a bare name; the caller
    closes it. Connecting to ``/proc/self/fd/<fd>`` reaches that very inode, however the container relinks or
    renames its files meanwhile.

    The dir is the container's, so whatever a link in it says is the function's: a link with a slash, or to another
    link (``lsnr.sock -> x -> /var/run/docker.sock``), could lead the runner to any socket of the host. Those, and
    anything but a socket, raise `SocketOutsideDir`; OSError (FileNotFoundError) when there is nothing to open.
    """
    directory, name = os.path.split(socket_path)
    dir_fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        target = name
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: no link, the socket itself
                raise
        if "/" in target or target in (".", ".."):
            raise SocketOutsideDir(f"the socket link {name} -> {target!r:.200} points outside its directory")
        # the bare name is opened in the dir itself, not followed: a link there is opened as the link
        fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    mode = os.fstat(fd).st_mode
    if stat.S_ISSOCK(mode):
        return fd
    os.close(fd)
    if stat.S_ISLNK(mode):
        raise SocketOutsideDir(f"the socket link {name} -> {target!r:.200} points outside its directory, "
                               "through another link")
    raise SocketOutsideDir(f"{name} is no socket" if target == name else f"the socket link {name} -> {target!r:.200} "
                           "points to no socket")


async def wait_ready(iofs_dir: str, timeout_s: float, watch: DirWatch | None = None, poll_s: float = 0.001) -> None:
    """Wait for fdk's ``lsnr.sock`` symlink; it appears only once the phony socket listens and is 0666.

    With a ``watch`` of the dir (set up before the container started, so that nothing is missed) the wait
    wakes when something is created there, and looks anyway every `WATCHED_RECHECK_S`; else it polls
    every ``poll_s``.
    """
    path = os.path.join(iofs_dir, SOCKET_NAME)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.lstat(path)
        except FileNotFoundError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ContainerInitTimeout() from None
            if watch is not None and watch.watched:
                await watch.changed(min(left, WATCHED_RECHECK_S))
            else:
                await asyncio.sleep(poll_s)
            continue
        break
    try:
        os.close(open_listener(path))  # each connect checks again: the link may change after this
    except SocketOutsideDir as exc:
        raise ContainerInitFail(f"{ContainerInitFail.message}: {exc}") from None
    except FileNotFoundError:  # a link to nothing
        raise ContainerInitFail() from None


class HotConnection:
    """The keep-alive HTTP/1.1 connection to one hot container's socket.

    The runner is the container's only client and sends it one request at a time, so a client
    session (pool, cookies, redirects, URL building, per-request objects) has nothing to do here:
    the request is written to the socket in one piece and the response is read by aiohttp's own
    client protocol (its llhttp parser, flow control and payload stream). That is ~110 us less
    CPU per call than a ``ClientSession`` on a 2-core VM, most of the runner's own share of a
    warm call. A connection the container closed is opened again on the next call.
    """

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._protocol: ContainerProtocol | None = None
        self._limits: ResponseLimits | None = None  # what the connection's response parser was made for

    async def close(self) -> None:
        self._drop()

    @property
    def open(self) -> bool:
        """The keep-alive connection is up: what a warm call checks, with no await."""
        protocol = self._protocol
        return protocol is not None and protocol.is_connected() and not protocol.should_close

    async def reopen(self) -> bool:
        """Connect again (fdk closes a connection idle for 75 s). False: the socket refuses, the container has died.
        `RunnerOutOfResources` when the runner could not open its end (the container may be fine)."""
        try:
            await self._connection()
        except SocketOutsideDir:
            return True  # alive, but linked elsewhere: its call's connect refuses it again, a 502 that retires it
        except OSError:
            return False
        return True

    def _drop(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
            self._limits = None

    async def _connection(self) -> ContainerProtocol:
        protocol = self._protocol
        if protocol is not None and self.open:
            return protocol
        self._drop()  # closed by the container, or left with unread bytes: start clean
        loop = asyncio.get_running_loop()
        try:
            listener = open_listener(self.socket_path)
            try:  # to the inode checked, by its fd: a link swapped since cannot send the connect elsewhere
                _, protocol = await loop.create_unix_connection(lambda: ContainerProtocol(loop), f"/proc/self/fd/{listener}")
            finally:
                os.close(listener)
        except OSError as exc:
            shortage = runner_out_of(exc, "connect to a container")  # the runner's want: nothing reached the container
            if shortage is not None:
                raise shortage from None
            raise
        self._protocol = protocol
        return protocol

    async def call(self, call: Call, body: bytes, on_start: OnStart, on_data: OnData, limits: ResponseLimits) -> None:
        """POST /call; stream a 200 to ``on_start``/``on_data``; map other statuses to Fn's errors.

        Raises `ContainerBroken` on transport errors and `APIError` subclasses for function outcomes.
        `FunctionInvalidResponse`, `FunctionResponseTooBig` and `FunctionResponseHeaderTooBig` leave
        the connection unusable: the caller must retire the container (``error.retire`` is set).
        """
        head = request_head(call, len(body))  # a bad header is refused before anything is sent
        clean = False
        try:
            protocol = await self._connection()
            if limits is not self._limits:  # one parser reads every response of a keep-alive connection
                # read_until_eof: a body with neither a length nor chunks ends with the connection (RFC 9112 6.3)
                protocol.set_response_params(
                    read_bufsize=READ_BUFSIZE, auto_decompress=False, read_until_eof=True, **limits.parser
                )
                protocol.head_limit = limits.head_bytes
                self._limits = limits
            transport = protocol.transport
            assert transport is not None
            if len(body) <= COALESCE_BYTES:
                transport.write(head + body)  # one send for a small call
            else:
                transport.write(head)
                transport.write(body)  # no copy of a big body
            message, payload = await protocol.read()
            if protocol.head_over and _head_size(message) > limits.head_bytes:
                raise _retire(FunctionResponseHeaderTooBig())
            reusable = True
            if message.code == 200:
                await self._stream(message, payload, on_start, on_data, limits.body)
            elif message.code in KEPT_STATUSES:
                reusable = await _drain(payload, DRAIN_LIMIT)  # so the keep-alive connection stays usable
            else:
                reusable = False  # its container is retired: the body is never read
            clean = reusable and not protocol.should_close
        except HttpProcessingError as exc:
            if head_too_large(exc.__cause__):  # aiohttp re-raises the parser's error as a plain HttpProcessingError
                raise _retire(FunctionResponseHeaderTooBig()) from None
            raise ContainerBroken(f"{type(exc).__name__}: {exc}", spoke_bad_http=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ContainerBroken(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if not clean:
                self._drop()  # a half-read response (error, timeout, cancel) must not meet the next call
        if message.code == 200:
            return
        if message.code == 502:
            raise FunctionFailed()
        if message.code == 504:
            raise CallTimeout()
        raise _retire(FunctionInvalidResponse())

    @staticmethod
    async def _stream(
        message: RawResponseMessage, payload: aiohttp.StreamReader, on_start: OnStart, on_data: OnData, limit: int
    ) -> None:
        length = message.headers.get("Content-Length")
        if limit and length is not None and int(length) > limit:
            raise _retire(FunctionResponseTooBig())  # known before anything was sent: a clean 502
        out_headers = [(k, v) for k, v in message.headers.items() if k.lower() not in HOP_HEADERS]
        if _UNSENDABLE.search("".join([v for _, v in out_headers])):  # one search; names are tokens (the parser's)
            name = next(k for k, v in out_headers if _UNSENDABLE.search(v))
            raise ContainerBroken(f"response header {name} has a control character or is not UTF-8", spoke_bad_http=True)
        await on_start(message.code, out_headers)
        sent = 0
        while True:
            chunk = await payload.readany()
            if not chunk:
                return
            sent += len(chunk)
            if limit and sent > limit:
                raise _retire(FunctionResponseTooBig())
            await on_data(chunk)


async def _drain(payload: aiohttp.StreamReader, limit: int) -> bool:
    """Read and drop a body of up to ``limit`` bytes; False when it is longer (left unread: drop the connection)."""
    seen = 0
    while chunk := await payload.readany():
        seen += len(chunk)
        if seen > limit:
            return False
    return True


def request_head(call: Call, length: int) -> bytes:
    """The request line and headers of POST /call: the call's headers (less hop-by-hop ones and Fn's two) + Fn's two.

    Values come from the LB (over gRPC: from any LB), so a value that is no string or holds a control character (a
    CR or LF would let it add headers or a second request) is refused with a 400, before anything is sent.
    """
    lines = [f"POST /call HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n"]
    values_sent: list[str] = []
    for name, values in call.headers.items():
        if name.lower() in _NOT_PASSED_ON:
            continue
        if not TOKEN.fullmatch(name):
            raise BadRequest(f"invalid header name {name!r}")
        for value in values:
            if value.__class__ is not str:
                raise BadRequest(f"invalid value for header {name!r}: {type(value).__name__}, not a string")
            values_sent.append(value)
            lines.append(f"{name}: {value}\r\n")
    values_sent.append(call.id)
    if NOT_IN_VALUE.search("".join(values_sent)):  # one search for all
        if NOT_IN_VALUE.search(call.id):
            raise BadRequest("invalid call id")
        name = next(k for k, vs in call.headers.items() for v in vs if k.lower() not in _NOT_PASSED_ON and NOT_IN_VALUE.search(v))
        raise BadRequest(f"invalid value for header {name!r}")
    deadline = utc_seconds(int(time.time()) + call.timeout)
    lines.append(f"Fn-Call-Id: {call.id}\r\nFn-Deadline: {deadline}Z\r\n\r\n")
    try:
        return "".join(lines).encode("utf-8", "surrogateescape")  # as aiohttp decoded them on the LB
    except UnicodeEncodeError:  # a lone surrogate that was never a byte (the runner's Call.from_json refuses it)
        raise BadRequest("invalid header value or call id: not text") from None


def _retire(error: APIError) -> APIError:
    error.retire = True  # type: ignore[attr-defined]
    return error
