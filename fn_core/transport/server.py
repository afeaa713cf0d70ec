"""The answering end: a `GrpcServer` runs one handler task per incoming stream.

A handler is ``async def handler(stream: ServerStream) -> None``: it reads the request messages,
sends response messages and may `ServerStream.end` with a status; raising `RpcError` ends the
call with that status, any other exception with UNKNOWN, and returning with OK. A call the peer
cancels (RST_STREAM, or the connection dropped) has its task cancelled, as grpc.aio does.

A client that vanished without closing its connection (its host powered off or cut from the network, its
process frozen) sends nothing more, and its kernel may still take our bytes: a connection whose peer has been
silent for ``keepalive_s`` (`KEEPALIVE_S` by default) gets a PING, and one that leaves it unanswered for
`PING_TIMEOUT_S` (or ``keepalive_s``, when shorter) is dropped, its calls cancelled as if the peer had reset them. So a runner neither keeps such connections for good nor
holds a call (its container, its memory) whose answer waits for a window the LB will never grant. (Fn's
grpc-go runner pings only after two hours of silence; clients never count a server's PINGs against it.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from fn_core.listen import BACKLOG, bound_port, close_all, listen_sockets
from fn_core.transport import h2
from fn_core.transport.errors import RpcError, Status, classify_tls_refusal
from fn_core.transport.hpack_codec import HPACK_CONTENT_TYPE_GRPC, hpack_literal

log = logging.getLogger(__name__)

#: a peer silent this long (no frame at all, calls open or not) is asked for a PING's answer
KEEPALIVE_S = 60.0
#: a PING unanswered this long means the peer is gone (grpc-go's default keepalive timeout)
PING_TIMEOUT_S = 20.0
#: a client has this long from its connection to its preface and first SETTINGS (no longer than a silent client past
#: them has to answer a PING): one that sent part of them and then nothing would hold its connection (a file
#: descriptor) for good, as PINGs go only to a client past its handshake
HANDSHAKE_TIMEOUT_S = 10.0
#: refusal reasons remembered per client host (`GrpcServer.refused`)
MAX_REASONS_PER_HOST = 16

Handler = Callable[["ServerStream"], Awaitable[None]]

_RESPONSE_HEAD = b"\x88" + HPACK_CONTENT_TYPE_GRPC  # :status 200, content-type
_TRAILERS_OK = hpack_literal(b"grpc-status", b"0")
#: how a TLS client's first bytes begin: a handshake record, TLS 1.x
TLS_HANDSHAKE = b"\x16\x03"


class ServerStream(h2.H2Stream):
    """One incoming call: its request ``headers``, `read_message` until None, `send`, `end`."""

    __slots__ = ("headers", "task", "_head_sent", "closed")

    def __init__(self, conn: ServerConnection, stream_id: int, headers: dict[bytes, bytes]) -> None:
        super().__init__(conn, stream_id)
        self.headers = headers
        self.task: asyncio.Task[None] | None = None
        self._head_sent = False
        self.closed = False  # we sent the status

    def metadata(self, key: str) -> str | None:
        value = self.headers.get(key.encode())
        return None if value is None else value.decode("utf-8", "replace")

    async def send(self, message: bytes) -> None:
        if self.closed:
            raise RpcError(Status.INTERNAL, "the call already ended")
        if self.error is not None and self.error.code == Status.CANCELLED:
            raise self.error
        if not self._head_sent:
            self._head_sent = True
            self.conn.write_headers(self.id, _RESPONSE_HEAD)
        await self.send_message(message)

    def end(self, code: int = Status.OK, message: str = "") -> None:
        """The status, in trailers: the call is over for both sides."""
        if self.closed:
            return
        self.closed = True
        conn = self.conn
        if self.has_partial_message:  # trailers after a message broken off would be a corrupt message to the peer
            if conn.streams.pop(self.id, None) is not None and conn.lost is None:
                conn.reset_stream(self.id, h2.CANCEL)
            self.ended = True
            return
        block = _TRAILERS_OK if code == Status.OK else hpack_literal(b"grpc-status", str(int(code)).encode())
        if message:
            block += hpack_literal(b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode())
        if not self._head_sent:  # "trailers-only": one header block carries status and trailers
            block = _RESPONSE_HEAD + block
        conn.write_headers(self.id, block, end_stream=True)
        if conn.streams.pop(self.id, None) is not None and not self.ended and conn.lost is None:
            conn.reset_stream(self.id, h2.NO_ERROR)  # "stop sending": we will not read the rest
        self.ended = True
        if not conn.streams:
            # the only call on the connection: nothing will join its last frames this turn, so they go now
            # and what the handler does after them is not the peer's wait (with calls in flight, frames of
            # several calls leave in one write at the end of the turn)
            conn.flush()

    def fail_locally(self, code: int, message: str, reset_code: int = h2.PROTOCOL_ERROR) -> None:
        super().fail_locally(code, message, reset_code)
        self.closed = True  # reset: no more frames on the stream (RFC 9113 5.1), neither messages nor `end`'s trailers

    def reset_by_peer(self, code: int) -> None:
        super().reset_by_peer(code)
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()


class ServerConnection(h2.H2Connection):
    def __init__(self, server: GrpcServer) -> None:
        super().__init__()
        self.server = server
        self.draining = False
        self._preface_seen = False
        self.ping_out: float | None = None  # loop time the PING not yet answered went out
        self._handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.server.connections.add(self)
        timeout_s = HANDSHAKE_TIMEOUT_S
        if self.server.keepalive_s:
            timeout_s = min(timeout_s, self.server.keepalive_s + self.server.ping_timeout_s)
        self._handshake_timer = self.loop.call_later(timeout_s, self._handshake_timed_out, timeout_s)
        self.write(
            h2.settings_frame({h2.SETTINGS_INITIAL_WINDOW_SIZE: h2.RECEIVE_WINDOW})
            + h2.window_update(0, h2.RECEIVE_WINDOW - h2.DEFAULT_WINDOW)
        )

    def data_received(self, data: bytes) -> None:
        if not self._preface_seen:
            self._buffer += data
            if len(self._buffer) < len(h2.PREFACE):
                return
            host = self.peer_host()
            if not self._buffer.startswith(h2.PREFACE):
                if self._buffer.startswith(TLS_HANDSHAKE) and self.server.ssl_context is None:
                    why = "not an HTTP/2 client: it began a TLS handshake, and this server does not serve TLS"
                else:
                    why = "not an HTTP/2 client (no connection preface)"
                self.server.refused(host, why, f"connection from {host} refused: {why}")
                self.close(h2.PROTOCOL_ERROR, why)
                return
            self._preface_seen = True
            self.server.accepted(host)
            data = bytes(self._buffer[len(h2.PREFACE) :])
            self._buffer.clear()
        super().data_received(data)

    def _on_headers(self, stream_id: int, headers: dict[bytes, bytes], end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:  # the client's trailers: its side is over
            stream.end_of_input()
            return
        if stream_id <= self.last_stream_id:
            return  # not a new client stream: one we already ended (`_on_frame` took even ids for the errors they are)
        self.last_stream_id = stream_id
        if self.draining:
            self.reset_stream(stream_id, h2.REFUSED_STREAM)
            return
        stream = ServerStream(self, stream_id, headers)
        self.streams[stream_id] = stream
        if end_stream:
            stream.end_of_input()
        handler = self.server.handlers.get(headers.get(b":path", b"").decode("ascii", "replace"))
        if handler is None or headers.get(b":method") != b"POST":
            stream.end(Status.UNIMPLEMENTED, f"unknown method {headers.get(b':path', b'').decode(errors='replace')}")
            return
        stream.task = task = self.loop.create_task(self.server.run(handler, stream))
        # counted from now, not from its first step: a stop that runs in between gives this call its grace
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def _never_opened(self, stream_id: int) -> bool:
        return stream_id % 2 == 0 or stream_id > self.last_stream_id  # we open none; the client's go up (RFC 9113 5.1.1)

    def _handshake_timed_out(self, timeout_s: float) -> None:
        self._handshake_timer = None
        if self.peer_settings_seen or self.transport is None:
            return
        host = self.peer_host()
        why = f"no HTTP/2 preface and SETTINGS within {timeout_s:g} s"
        self.server.refused(host, why, f"connection from {host} refused: {why}")
        self.closing_reason = why
        transport = self.transport
        self.write(h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", 0, h2.PROTOCOL_ERROR) + why.encode()))
        self.flush()
        transport.abort()  # not close(): a peer that reads nothing would hold a close() on its unsent bytes for good

    def check_peer(self, now: float, silence_s: float, timeout_s: float) -> None:
        """PING a peer silent for ``silence_s``; drop one that left the PING unanswered for ``timeout_s``. Any frame
        counts as an answer: a live peer's kernel and process both took part in it."""
        if self.transport is None or not self._preface_seen:
            return
        if self.ping_out is not None and self.last_received >= self.ping_out:
            self.ping_out = None
        if self.ping_out is None:
            if now - self.last_received >= silence_s:
                self.ping_out = now
                self.write(h2.frame(h2.PING, 0, 0, bytes(8)))
                self.flush()
            return
        if now - self.ping_out < timeout_s:
            return
        calls = sum(isinstance(stream, ServerStream) for stream in self.streams.values())
        log.warning("the client at %s sent nothing for %.0f s and left a PING unanswered for %.0f s: it is gone "
                    "(host down, network cut, process frozen); its connection is dropped and its %d call(s) cancelled",
                    self.peer_host(), now - self.last_received, timeout_s, calls)
        self.closing_reason = "the client answered no PING"
        transport = self.transport
        self.write(h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", self.last_stream_id, h2.NO_ERROR)))
        self.flush()
        transport.abort()  # not close(): a peer that reads nothing would hold a close() on its unsent bytes for good

    def peer_host(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if peer else "?"

    def goaway(self) -> None:
        """No new calls here; those already started run on."""
        self.draining = True
        self.write(h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", self.last_stream_id, h2.NO_ERROR)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        super().connection_lost(exc)

    def _connection_ended(self, error: RpcError) -> None:
        for stream in list(self.streams.values()):
            if isinstance(stream, ServerStream):
                stream.reset_by_peer(h2.CANCEL)
        self.streams.clear()


class GrpcServer:
    """Serves ``handlers`` (``{"/Service/Method": handler}``) on one address.

    A client refused (no HTTP/2 preface; over TLS, ``ssl_context``, a failed handshake) is logged once per client
    host and reason until one of its connections succeeds, not at each of its retries; a TLS refusal with
    ``tls_hints[reason]`` (``reason``: a ``CLIENT_*`` value of `fn_core.transport.errors`) when given.
    ``keepalive_s``: a client silent this long is PINGed (module docstring); 0 = never."""

    def __init__(
        self, handlers: dict[str, Handler], ssl_context: ssl.SSLContext | None = None, tls_hints: dict[str, str] | None = None,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.handlers = handlers
        self.ssl_context = ssl_context
        self.tls_hints = tls_hints or {}
        self.connections: set[ServerConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.handshakes: set[asyncio.Task[None]] = set()
        self._refused: dict[str, set[str]] = {}  # client host -> the reasons logged (until a connection succeeds)
        self._servers: list[asyncio.Server] = []
        self._listeners: list[socket.socket] = []  # over TLS: the listening sockets, and the tasks accepting on them
        self._accepting: list[asyncio.Task[None]] = []
        self.keepalive_s = keepalive_s
        self.ping_timeout_s = min(PING_TIMEOUT_S, keepalive_s)
        self._watching: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (``port`` 0 = any free one). `OSError` when it cannot bind."""
        return await self.serve(listen_sockets(host, port))

    async def serve(self, listeners: list[socket.socket]) -> int:
        """Serve on sockets already listening (`fn_core.listen.listen_sockets`), which it then owns; the port."""
        loop = asyncio.get_running_loop()
        if self._watching is None and self.keepalive_s:
            self._watching = loop.create_task(self._watch_peers(), name="grpc-peer-watch")
        for listener in listeners:
            if self.ssl_context is None:
                self._servers.append(await loop.create_server(lambda: ServerConnection(self), sock=listener, backlog=BACKLOG))
                continue
            # over TLS, connections are accepted here and handed to the loop with their handshake still to do: a
            # ``create_server(ssl=...)`` does it out of our sight, and a client refused (an LB without a certificate,
            # or speaking plaintext) would leave the runner's operator nothing to read
            self._listeners.append(listener)
            self._accepting.append(loop.create_task(self._accept_tls(listener), name=f"grpc-accept-{bound_port([listener])}"))
        return bound_port(listeners)

    async def _watch_peers(self) -> None:
        """`ServerConnection.check_peer` on every connection, a few times per the shorter of the two periods."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_timeout_s / 4)
            now = loop.time()
            for conn in list(self.connections):
                conn.check_peer(now, self.keepalive_s, self.ping_timeout_s)

    async def _accept_tls(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, address = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, ...: the clients wait in the backlog meanwhile
                log.warning("gRPC server: accepting a connection failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as create_server's connections have it
            task = loop.create_task(self._handshake(client, str(address[0])))
            self.handshakes.add(task)
            task.add_done_callback(self.handshakes.discard)

    async def _handshake(self, client: socket.socket, host: str) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: ServerConnection(self), client, ssl=self.ssl_context)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError; the loop closed the connection
            self._tls_refused(host, exc)

    def _tls_refused(self, host: str, exc: BaseException) -> None:
        reason = classify_tls_refusal(exc)
        if not reason and (not isinstance(exc, ssl.SSLError) or isinstance(exc, ssl.SSLEOFError)):
            # a TCP probe (a health check, a port scan) that hangs up, a reset, a timeout: no TLS setting is why
            log.debug("TLS handshake from %s did not complete: %r", host, exc)
            return
        hint = self.tls_hints.get(reason, "")
        self.refused(host, reason or f"{type(exc).__name__}: {exc}",
                     f"TLS handshake from {host} failed: {type(exc).__name__}: {exc}{f': {hint}' if hint else ''}")

    def refused(self, host: str, reason: str, message: str) -> None:
        """Log a refused client, unless that host was refused for this reason already: a misconfigured LB retries
        every few seconds, and LBs on one host, each misconfigured its own way, take turns."""
        said = self._refused.setdefault(host, set())
        if reason in said:
            return
        if len(said) >= MAX_REASONS_PER_HOST:  # a reason with the error's own words in it: bounded, said afresh
            said.clear()
        said.add(reason)
        log.warning("%s (not said again for that host and reason until a connection from it gets through)", message)

    def accepted(self, host: str) -> None:
        """A connection from ``host`` got through: its next refusal is news."""
        self._refused.pop(host, None)

    async def run(self, handler: Handler, stream: ServerStream) -> None:
        try:
            await handler(stream)
        except RpcError as exc:
            stream.end(exc.code, exc.message)
        except asyncio.CancelledError:
            pass  # the peer reset the call (nothing more to send) or we are stopping (reset below)
        except Exception as exc:
            log.exception("gRPC handler for %s failed", stream.metadata(":path"))
            stream.end(Status.UNKNOWN, f"Unexpected {type(exc).__name__}: {exc}")
        else:
            stream.end()
        finally:
            if not stream.closed:
                stream.conn.reset_stream(stream.id, h2.CANCEL)

    async def stop(self, grace_s: float | None) -> None:
        """Stop listening, refuse new calls, give those running ``grace_s`` seconds, then cancel them."""
        try:
            for server in self._servers:
                server.close()
            for task in self._accepting:
                task.cancel()
            await asyncio.gather(*self._accepting, return_exceptions=True)
            self._accepting.clear()
            close_all(self._listeners)
            handshakes = list(self.handshakes)
            for task in handshakes:  # a connection still shaking hands has no call yet
                task.cancel()
            await asyncio.gather(*handshakes, return_exceptions=True)
            for conn in list(self.connections):
                conn.goaway()
            if self.tasks and grace_s:
                await asyncio.wait(set(self.tasks), timeout=grace_s)
            for task in list(self.tasks):
                task.cancel()
            if self.tasks:
                await asyncio.wait(set(self.tasks), timeout=1.0)
            for conn in list(self.connections):
                conn.close()
            for server in self._servers:
                await server.wait_closed()
        finally:  # the watch went on through the grace: a vanished LB's calls would hold it
            if self._watching is not None:
                self._watching.cancel()
                self._watching = None


def unary(fn: Callable[[bytes], Awaitable[bytes]]) -> Handler:
    """A handler for a method with one request and one response message."""

    async def handle(stream: ServerStream) -> None:
        request = await stream.read_message()
        if request is None:
            raise RpcError(Status.INTERNAL, "no request message")
        await stream.send(await fn(request))

    return handle
