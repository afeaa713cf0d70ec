"""The calling end: a `Channel` to one address, one HTTP/2 connection, a stream per call.

A channel connects on first use, shares one connection attempt among concurrent callers, and
after a failed attempt fails calls at once for a short, growing backoff (100 ms up to 2 s), as a
grpcio channel does: a dead runner costs a placer nothing. While calls are in flight and the peer
has been silent for `KEEPALIVE_S`, a PING checks the link; a peer that does not answer within
`KEEPALIVE_TIMEOUT_S` is dropped, so no call waits forever on a host that vanished. The interval is
the shortest grpc-go and grpcio servers accept by default (5 min while calls are open): pinging more
often gets a connection with a quiet call on it (a function that thinks long) dropped as "too_many_pings"
after three PINGs, and every call on it with it.

A call's silence is a reason to ask sooner only once the call is overdue: a stream given a `ClientStream.due`
time (the LB: the call's timeout and a margin, past which a live runner has answered, if only with its 504)
that passes while the peer is silent gets a PING then, and again at most every `OVERDUE_PROBE_GAP_S`. A runner
host that froze or vanished without a word (no FIN, no RST) so costs its calls their timeout and some seconds,
not five minutes; a live peer answers the PING, and a quiet call within its timeout is never the reason for one.

A call sent to a host that froze is lost (it was sent: committed), so a connection also checks its peer
while calls come, not only when one is overdue. A call on a connection whose peer has sent nothing for
`QUIET_S` waits for the answer to a PING first (a round trip, on a quiet connection only), and goes
elsewhere, unsent, if none comes within `ANSWER_GRACE_S`; on a busy connection a PING goes beside a call
at most every `PROBE_EVERY_S`, and once it is `ANSWER_GRACE_S` unanswered new calls go elsewhere. A frozen
runner so loses the calls of about two seconds, not those of its calls' timeout and more. At most
`CHECKS_PER_SILENCE` of these PINGs go between two header blocks of the peer: a grpc-go server (an Fn runner)
counts no strike for the first PING after it sent something, counts one for each further PING within five
minutes, and drops the connection as "too_many_pings" at the third strike; two checks leave one strike for the
overdue calls' PING. So a runner that froze while a long call of its was under way (it has sent nothing since the
check that call made) is found out by the next call, not trusted until that call is overdue.

A peer under suspicion costs new calls nothing: while such a PING is unanswered the connection takes no new
call (`Unreachable`: the LB tries the next runner), and once a connection attempt failed, or a connection was
dropped for an unanswered PING, no call waits for the next attempt: it is made in the background, one at a
time, and calls go elsewhere until it succeeds. A host that accepts TCP but never answers (frozen) or drops
the packets (a partition) would otherwise hold every call sent its way for the connect timeout. A connection
that is lost (the peer died or hung up, or it was dropped) is dialled again in the background at once, calls or
not: a runner that died while no call came is known as unreachable then (`Channel`'s ``on_unreachable``), not
only when the next call finds it so.

A caller that may wait less than a connection attempt or a check takes (an LB's placer timeout) says until
when (`Channel.open`'s ``wait_until``) and gets `OutOfTime` then, nothing sent; the attempt or the check goes
on for the next caller.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Callable, Iterable

from fn_core.transport import h2
from fn_core.transport.errors import (
    PEER_CERTIFICATE_EXPIRED,
    PEER_CERTIFICATE_UNTRUSTED,
    PEER_NOT_TLS,
    PEER_REFUSED_CERTIFICATE,
    PEER_WANTS_TLS,
    OutOfTime,
    RpcError,
    Status,
    StreamRefused,
    Unreachable,
    out_of_date,
)
from fn_core.transport.hpack_codec import HPACK_CONTENT_TYPE_GRPC, HPACK_TABLE_SIZE_ZERO, hpack_literal

log = logging.getLogger(__name__)

KEEPALIVE_S = 300.0
KEEPALIVE_TIMEOUT_S = 10.0
#: how often a connection with calls open looks at how long its peer has been silent
CHECK_EVERY_S = 2.0
#: a connection with an overdue call and a silent peer PINGs at most this often: a grpc-go server with its
#: default policy counts a PING within 5 min of the last as a strike when it sent nothing in between, and
#: drops the connection at the third
OVERDUE_PROBE_GAP_S = 60.0
#: a connection whose peer sent nothing for this long checks it with a PING before a new call goes there
QUIET_S = 1.0
#: on a busy connection, a PING goes beside a new call at most this often
PROBE_EVERY_S = 1.0
#: a PING unanswered for this long makes new calls go elsewhere (a live runner answers within milliseconds)
ANSWER_GRACE_S = 1.0
#: PINGs for checks before calls between two header blocks of the peer (module docstring)
CHECKS_PER_SILENCE = 2
PING_FRAME = h2.frame(h2.PING, 0, 0, bytes(8))
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 2.0
#: the highest grpc-status we read: grpc-go's is an int32, and Fn's runner sends codes past gRPC's 16 (503: its NACK)
MAX_STATUS_CODE = 2**31 - 1
#: a connection opens new streams below this id; past it, the channel dials a fresh one
LAST_STREAM_ID = 2**31 - 1025


class ClientStream(h2.H2Stream):
    """One call as the caller sees it: `send_message`, `read_message` until None, then `close`."""

    __slots__ = ("_response_started", "_half_closed", "due")
    conn: ClientConnection

    def __init__(self, conn: ClientConnection, stream_id: int) -> None:
        super().__init__(conn, stream_id)
        self._response_started = False
        self._half_closed = False
        #: loop time by which a live peer has ended the call; past it, a silent peer is PINGed (module docstring)
        self.due = math.inf

    async def send_message(self, message: bytes, end_stream: bool = False) -> None:
        await super().send_message(message, end_stream)
        if end_stream:
            self._half_closed = True

    def done_writing(self) -> None:
        if not self._half_closed:
            self._half_closed = True
            self.conn.write(h2.frame(h2.DATA, h2.END_STREAM, self.id))

    def response_headers(self, headers: dict[bytes, bytes], end_stream: bool) -> None:
        if not self._response_started:
            self._response_started = True
            status = headers.get(b":status", b"")
            if status != b"200":
                self.fail(RpcError(Status.UNKNOWN, f"HTTP status {status.decode(errors='replace') or 'missing'}"))
                self.close()
                return
            if not end_stream:
                return  # the trailers come later; else this was a "trailers-only" answer
        elif not end_stream:
            self.fail(RpcError(Status.INTERNAL, "a second header block that does not end the stream"))
            self.close()
            return
        self._take_status(headers)

    def _take_status(self, trailers: dict[bytes, bytes]) -> None:
        raw = trailers.get(b"grpc-status")
        # one past what grpc-go reads (an int32: 4294967296, or 5000 digits, past what int() reads) is UNKNOWN
        code = int(raw) if raw is not None and len(raw) <= 10 and raw.isdigit() else Status.UNKNOWN
        if code > MAX_STATUS_CODE:
            code = Status.UNKNOWN
        if code != Status.OK:
            message = h2.percent_decode(trailers.get(b"grpc-message", b"")) if raw is not None else "no grpc-status"
            self.error = RpcError(code, message)
        self.end_of_input()
        self.conn.forget(self.id)

    def data_received(self, payload: bytes, end_stream: bool) -> None:
        super().data_received(payload, False)
        if end_stream:  # gRPC ends a stream with trailers, never with DATA
            self.fail(RpcError(Status.INTERNAL, "stream ended without a status"))
            self.conn.forget(self.id)

    def close(self) -> None:
        """Leave the stream: a call not ended on both sides is reset (the peer stops working on it)."""
        conn = self.conn
        if (self.id in conn.streams or not self._half_closed) and conn.lost is None:
            conn.reset_stream(self.id, h2.CANCEL)
        self._half_closed = True
        conn.forget(self.id)
        if not self.ended or conn._waiters:  # a reader or a writer may still wait; after `finished` (most calls) none
            self.fail(RpcError(Status.CANCELLED, "cancelled by the caller"))


class ClientConnection(h2.H2Connection):
    def __init__(self, authority: str, on_ended: Callable[[ClientConnection], None] | None = None) -> None:
        super().__init__()
        self.authority = authority
        self._on_ended = on_ended  # told once the connection is gone (its channel dials again)
        self.next_stream_id = 1
        self.ready: asyncio.Future[None] = self.loop.create_future()  # the peer's SETTINGS came
        self._first_block = True
        self._keepalive: asyncio.Task[None] | None = None
        #: when the PING not yet answered went out (None: none is out); only one is out at a time
        self.ping_out: float | None = None
        self.ping_why = ""
        #: the PING out was sent for the peer's silence with calls open, or a call waited for its answer in vain: until
        #: it is answered no new call starts here
        self.suspect = False
        #: answered with the PING out, when a call waits for that answer (one sent before a call on a quiet connection)
        self._answered: asyncio.Future[None] | None = None
        self.last_ping = -math.inf
        #: PINGs sent since the peer's last header block (a new connection: none); a grpc-go server counts a strike
        #: for each after the first (module docstring)
        self.pings_since_block = 0
        #: why this connection was dropped for silence ("" if it was not): its channel then dials in the background
        self.dropped_for = ""

    @property
    def usable(self) -> bool:
        transport = self.transport
        return (
            self.lost is None
            and self.goaway_received is None
            and self.next_stream_id < LAST_STREAM_ID
            and transport is not None
            and not transport.is_closing()
        )

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.write(
            h2.PREFACE
            + h2.settings_frame({h2.SETTINGS_ENABLE_PUSH: 0, h2.SETTINGS_INITIAL_WINDOW_SIZE: h2.RECEIVE_WINDOW})
            + h2.window_update(0, h2.RECEIVE_WINDOW - h2.DEFAULT_WINDOW)
        )
        self._keepalive = self.loop.create_task(self._keep_alive())

    def _on_settings(self, payload: bytes) -> None:
        super()._on_settings(payload)
        if not self.ready.done():
            self.ready.set_result(None)

    def open_stream(self, header_block: bytes) -> ClientStream:
        """A new stream; `StreamRefused` if the peer said GOAWAY or has as many streams open as its
        SETTINGS_MAX_CONCURRENT_STREAMS allow (it would refuse one more), `Unreachable` if the connection is
        gone (nothing sent)."""
        if self.goaway_received is not None:
            raise StreamRefused(f"{self.authority} takes no new call on this connection (GOAWAY)")
        if len(self.streams) >= self.peer_max_streams:
            raise StreamRefused(f"{self.authority} takes at most {self.peer_max_streams} calls at a time on a connection"
                                " (its SETTINGS_MAX_CONCURRENT_STREAMS)")
        if not self.usable:
            raise Unreachable(f"the connection to {self.authority} is closed")
        stream_id = self.next_stream_id
        self.next_stream_id += 2
        stream = ClientStream(self, stream_id)
        self.streams[stream_id] = stream
        if self._first_block:
            self._first_block = False
            header_block = HPACK_TABLE_SIZE_ZERO + header_block
        self.write_headers(stream_id, header_block)
        return stream

    def _never_opened(self, stream_id: int) -> bool:
        return stream_id % 2 == 0 or stream_id >= self.next_stream_id  # the peer opens none: push is disabled

    def forget(self, stream_id: int) -> None:
        """The stream is over; a connection that takes no new stream (GOAWAY, or out of ids) closes with its last."""
        self.streams.pop(stream_id, None)
        if not self.streams and self.transport is not None and not self.usable:
            self.close()

    def _on_headers(self, stream_id: int, headers: dict[bytes, bytes], end_stream: bool) -> None:
        self.pings_since_block = 0
        stream = self.streams.get(stream_id)
        if isinstance(stream, ClientStream):
            stream.response_headers(headers, end_stream)

    def _on_goaway(self, last_id: int, code: int, debug: bytes) -> None:
        super()._on_goaway(last_id, code, debug)
        if code != h2.NO_ERROR:
            log.info("runner connection %s: GOAWAY code %#x %s", self.authority, code, debug[:200].decode(errors="replace"))
        for stream_id in [i for i in self.streams if i > last_id]:
            self.streams.pop(stream_id).fail(StreamRefused(f"{self.authority} did not take the call (GOAWAY)"))
        if not self.streams:
            self.close()

    def _connection_ended(self, error: RpcError) -> None:
        super()._connection_ended(error)
        if not self.ready.done():
            self.ready.set_exception(error)
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._answered is not None:  # a call waiting for the PING's answer learns the connection is gone
            self._answered.set_result(None)
            self._answered = None
        if self._on_ended is not None:
            self._on_ended(self)

    def ping(self, now: float, why: str) -> None:
        self.ping_out = self.last_ping = now
        self.ping_why = why
        self.pings_since_block += 1
        self.write(PING_FRAME)

    def _on_ping_answer(self) -> None:
        self.ping_out = None
        self.suspect = False
        if self._answered is not None:
            self._answered.set_result(None)
            self._answered = None

    async def before_call(self, now: float, wait_until: float = math.inf) -> None:
        """Check the peer before a new call goes here (module docstring): returns at once, after the answer to a
        PING, or raises `Unreachable` (nothing was sent) when the peer has not answered one in time, or
        `OutOfTime` when the caller's ``wait_until`` (loop time) comes first."""
        sent_at, answered = self.ping_out, self._answered
        if sent_at is None:
            if self.pings_since_block >= CHECKS_PER_SILENCE:
                return  # one more could be a second strike at a grpc-go runner: after the peer's next header block
            quiet_s = now - self.last_received
            if quiet_s < QUIET_S:
                self.ping(now, "sent beside a call")
                return
            self.ping(now, f"sent before a call, the runner silent for {quiet_s:.0f} s")
            sent_at, answered = now, self.loop.create_future()
            self._answered = answered
        elif self.suspect or now - sent_at >= ANSWER_GRACE_S:
            raise Unreachable(f"{self.authority} has not answered a PING in {now - sent_at:.1f} s")
        elif answered is None:
            return  # a PING beside calls, sent less than ANSWER_GRACE_S ago: not waited for
        grace_ends = sent_at + ANSWER_GRACE_S
        try:
            async with asyncio.timeout_at(min(grace_ends, wait_until)):
                await asyncio.shield(answered)
        except TimeoutError:
            if wait_until < grace_ends:
                raise OutOfTime(f"the caller's time ran out while {self.authority} was asked to answer a PING") from None
            if self.ping_out == sent_at:  # the next call is refused at once, not by reading the clock again: on
                self.suspect = True  # uvloop it is whole milliseconds, and could still read just before grace_ends
            raise Unreachable(f"{self.authority} has not answered a PING in {ANSWER_GRACE_S:.0f} s") from None

    async def _keep_alive(self) -> None:
        loop = self.loop
        last_suspicion = -math.inf
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            now = loop.time()
            if self.ping_out is not None:
                if now - self.ping_out >= KEEPALIVE_TIMEOUT_S and self.transport is not None:
                    self.dropped_for = f"no answer in {KEEPALIVE_TIMEOUT_S:.0f} s to a PING ({self.ping_why})"
                    log.warning("runner connection %s: %s; dropping it and its %d calls", self.authority,
                                self.dropped_for, len(self.streams))
                    self.closing_reason = f"dropped by this end: {self.dropped_for}"
                    self.transport.abort()
                continue
            if not self.streams:
                continue
            silent_s = now - self.last_received
            if silent_s >= KEEPALIVE_S:
                why = f"silent for {silent_s:.0f} s with calls open"
            elif silent_s >= CHECK_EVERY_S and now - last_suspicion >= OVERDUE_PROBE_GAP_S and self._overdue(now):
                why = "a call is past its time and the runner is silent"
            else:
                continue
            last_suspicion = now
            self.ping(now, why)
            self.suspect = True
            log.info("runner connection %s: %s; sent a PING, new calls go elsewhere until it answers", self.authority, why)

    def _overdue(self, now: float) -> bool:
        return any(stream.due <= now for stream in self.streams.values() if isinstance(stream, ClientStream))


class Channel:
    """Calls to one ``host:port``: over TLS when an `ssl.SSLContext` is given (ALPN ``h2``)."""

    def __init__(
        self, address: str, ssl_context: ssl.SSLContext | None = None, connect_timeout_s: float = 5.0,
        on_connected: Callable[[], None] | None = None, on_unreachable: Callable[[Unreachable], None] | None = None,
        server_name: str | None = None,
    ) -> None:
        """``on_connected``: called each time a connection is made (after a failure: the peer answers again).
        ``on_unreachable``: called with the error of each failed connection attempt, a caller's or one made in
        the background (the connection in use was lost: the channel dials again at once, calls or not, so that
        a peer that died while no call came is known, and not only by the next call). ``server_name``: the name the
        peer's certificate must be for (TLS; None: the host of ``address``)."""
        self.address = address
        self._on_connected = on_connected
        self._on_unreachable = on_unreachable
        self._redial: asyncio.TimerHandle | None = None
        host, _, port = address.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self._ssl = ssl_context
        self._server_name = server_name or self._host  # what the peer's certificate must be for (TLS)
        self._connect_timeout_s = connect_timeout_s
        self._conn: ClientConnection | None = None
        self._draining: set[ClientConnection] = set()
        self._connecting: asyncio.Future[ClientConnection] | None = None
        self._retry_at = 0.0
        self._backoff_s = BACKOFF_MIN_S
        self._last_failure = ""
        self._last_mismatch = ""
        scheme = b"\x87" if ssl_context is not None else b"\x86"  # :scheme https / http
        # the pseudo-headers first, :path among them (RFC 9113 8.3): grpc-go resets a stream whose :path comes
        # after a regular field as malformed, where grpcio lets it pass
        self._pseudo = b"\x83" + scheme + hpack_literal(1, address.encode())
        self._regular = HPACK_CONTENT_TYPE_GRPC + hpack_literal(b"te", b"trailers")
        self._blocks: dict[str, bytes] = {}
        self._closed = False

    async def open(self, path: str, metadata: Iterable[tuple[str, str]] = (), wait_until: float = math.inf) -> ClientStream:
        """A new call on ``path`` (``/Service/Method``); `Unreachable` when there is no connection.

        ``wait_until``: the loop time past which the caller does not wait for a connection to be made or its
        peer checked (an LB's placer timeout): then `OutOfTime`, nothing sent."""
        conn = self._conn
        if conn is None or not conn.usable:
            if self._closed:
                raise Unreachable(f"the channel to {self.address} is closed")
            conn = await self._connection(wait_until)
        else:
            now = conn.loop.time()
            if conn.ping_out is not None or now - conn.last_ping >= PROBE_EVERY_S:
                await conn.before_call(now, wait_until)
        # the peer may have hung up or said GOAWAY while this caller was being woken: `open_stream` says so
        # (a stream on a dead connection would wait for ever)
        block = self._blocks.get(path)
        if block is None:
            block = self._blocks[path] = self._pseudo + hpack_literal(4, path.encode()) + self._regular
        if metadata:
            block += b"".join(hpack_literal(k.encode(), v.encode()) for k, v in metadata)
        return conn.open_stream(block)

    async def unary(self, path: str, request: bytes, timeout_s: float) -> bytes:
        """One request message, one response message."""
        try:
            async with asyncio.timeout(timeout_s):
                stream = await self.open(path)
                try:
                    await stream.send_message(request, end_stream=True)
                    response = await stream.read_message()
                    while await stream.read_message() is not None:
                        pass
                finally:
                    stream.close()
        except TimeoutError:
            raise RpcError(Status.DEADLINE_EXCEEDED, f"{path} on {self.address}: no answer in {timeout_s} s") from None
        if response is None:
            raise RpcError(Status.INTERNAL, f"{path} on {self.address}: no response message")
        return response

    async def _connection(self, wait_until: float = math.inf) -> ClientConnection:
        if self._conn is not None:
            old, self._conn = self._conn, None
            if old.lost is None:  # GOAWAY or out of stream ids: its calls finish, new ones go on a new connection
                self._draining.add(old)
            elif old.dropped_for:
                self._last_failure = old.dropped_for
        self._draining = {c for c in self._draining if c.lost is None}
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            raise Unreachable(f"failed to connect to {self.address} (retrying soon): {self._last_failure}", self._last_mismatch)
        if self._connecting is None:
            self._connecting = loop.create_task(self._connect(), name=f"dial-{self.address}")
            self._connecting.add_done_callback(self._dialled)
        if self._last_failure:  # the peer failed us last time: no call waits for this attempt (module docstring)
            raise Unreachable(f"failed to connect to {self.address} (trying again): {self._last_failure}", self._last_mismatch)
        if wait_until == math.inf:
            return await asyncio.shield(self._connecting)
        try:  # the attempt goes on for the callers after this one (and the next call) when this caller stops waiting
            async with asyncio.timeout_at(wait_until):
                return await asyncio.shield(self._connecting)
        except TimeoutError:
            raise OutOfTime(f"the caller's time ran out while connecting to {self.address}") from None

    def _dialled(self, attempt: asyncio.Task[ClientConnection]) -> None:
        if attempt is self._connecting:
            self._connecting = None
        if attempt.cancelled():
            return
        error = attempt.exception()
        if error is None:  # (a background attempt's failure has no awaiter: it is in _last_failure)
            if self._on_connected is not None:
                self._on_connected()
            return
        if self._on_unreachable is not None and isinstance(error, Unreachable) and not self._closed:
            self._on_unreachable(error)
        if not self._closed and self._redial is None:
            # dial again when the backoff is over, calls or not: a peer that is back is known at once (the first
            # call after it needs no attempt of its own; the LB's reachability gauge says so)
            self._redial = asyncio.get_running_loop().call_at(self._retry_at, self._dial_in_background)

    def _conn_ended(self, conn: ClientConnection) -> None:
        """The connection in use is gone (the peer died, hung up, or was dropped for silence): dial again."""
        if conn is self._conn and not self._closed and self._redial is None and self._connecting is None:
            self._redial = asyncio.get_running_loop().call_later(BACKOFF_MIN_S, self._dial_in_background)

    def _dial_in_background(self) -> None:
        self._redial = None
        if self._closed or self._connecting is not None or (self._conn is not None and self._conn.usable):
            return
        self._connecting = asyncio.get_running_loop().create_task(self._connect(), name=f"dial-{self.address}")
        self._connecting.add_done_callback(self._dialled)

    async def _connect(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        conn: ClientConnection | None = None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: ClientConnection(self.address, self._conn_ended),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._server_name if self._ssl is not None else None,
                )
                await conn.ready
        except asyncio.CancelledError:  # the loop is ending (a background dial has no caller to cancel it)
            if conn is not None:
                conn.close()
            raise
        except (OSError, TimeoutError, RpcError) as exc:
            if conn is not None and conn.transport is not None:
                conn.transport.abort()
            self._last_failure, self._last_mismatch = self._why(exc, conn)
            self._retry_at = loop.time() + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, BACKOFF_MAX_S)
            raise Unreachable(f"failed to connect to {self.address}: {self._last_failure}", self._last_mismatch) from None
        if self._closed:  # closed while we were dialling: nobody will close this connection later
            conn.close()
            raise Unreachable(f"the channel to {self.address} is closed")
        self._backoff_s = BACKOFF_MIN_S
        self._retry_at = 0.0
        self._last_failure = self._last_mismatch = ""
        self._conn = conn
        return conn

    def _why(self, exc: BaseException, conn: ClientConnection | None) -> tuple[str, str]:
        """A failed connection attempt in words, and the `Unreachable.tls_mismatch` it suggests.

        A TLS server that refuses the client's certificate (TLS 1.3 checks it after the client's side of the
        handshake is done) or that gets plaintext hangs up without a word: its alert is not sent. Either is told
        apart from a peer that is down by when it hung up: connected, and before the peer's first byte, where
        an HTTP/2 server sends its SETTINGS at once."""
        if isinstance(exc, RpcError) and conn is not None and conn.last_received == 0.0:
            if self._ssl is not None:
                return "the peer closed the connection right after the TLS handshake, before any HTTP/2 frame", PEER_REFUSED_CERTIFICATE
            return "the peer closed the connection before any HTTP/2 frame", PEER_WANTS_TLS
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, ssl.SSLCertVerificationError):
            return what, PEER_CERTIFICATE_EXPIRED if out_of_date(exc) else PEER_CERTIFICATE_UNTRUSTED
        if isinstance(exc, ssl.SSLError) and exc.reason == "WRONG_VERSION_NUMBER":
            return what, PEER_NOT_TLS
        return what, ""

    async def close(self, grace_s: float | None = None) -> None:
        """Close the connections; with ``grace_s``, the calls on them may end first (up to that long).

        A close that is cancelled during the grace (the LB stopping a retiring runner's wait) still closes
        them, and a later close finds them too: they are forgotten only once closed."""
        self._closed = True  # a dial under way closes what it gets (`_connect`)
        if self._redial is not None:
            self._redial.cancel()
            self._redial = None
        conns = [c for c in (self._conn, *self._draining) if c is not None]
        try:
            if grace_s:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + grace_s
                while any(c.streams and c.lost is None for c in conns) and loop.time() < deadline:
                    await asyncio.sleep(0.05)
        finally:
            for conn in conns:
                conn.close()
            self._conn = None
            self._draining.difference_update(conns)
