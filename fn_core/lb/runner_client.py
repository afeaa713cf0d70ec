"""The LB's client of one runner: a long-lived channel (`fn_core.transport`) and the Engage exchange.

`RunnerClient.try_exec` is Fn's ``TryExec``: it returns None when the call was *not placed*
(NACK: a 503 `finished`, or a gRPC status 503, before any `result_start`; no connection to the
runner; or the runner refused the stream unprocessed), so the placer may try another runner; otherwise the call is
committed and an `ExecResult` comes back, success or error, and must never be re-sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Callable
from typing import Protocol

import attrs
from google.protobuf.message import DecodeError

from fn_core import logfmt
from fn_core.errors import APIError, ConfigError
from fn_core.http_heads import NOT_IN_VALUE, TOKEN
from fn_core.lb.metrics import RunnerCounts
from fn_core.proto import runner_pb2 as pb
from fn_core.records import RunnerStatus
from fn_core.transport import Channel, ClientStream, OutOfTime, RpcError, StreamRefused, Unreachable, tls
from fn_core.transport import errors as transport_errors
from fn_core.wire import ENGAGE, MAX_DATA_CHUNK, REQUEST_ID_METADATA, STATUS, CallOffer, is_nack, status_from_proto

log = logging.getLogger(__name__)

#: A sync call's answer bigger than this leaves the LB as it comes (chunked), not whole at its end: the LB
#: holds at most about this much of it, and the client's first byte does not wait for the last
STREAM_AFTER_BYTES = 64 * 1024
#: what an LB's operator is told to check when a runner's connection failed as a TLS mismatch does
TLS_MISMATCH_HINTS = {
    transport_errors.PEER_REFUSED_CERTIFICATE: "the runner refused this LB's client certificate (FN_NODE_CERT: not set, "
    "expired, or not signed by the CA of the runner's FN_NODE_CERT_AUTHORITY)",
    transport_errors.PEER_CERTIFICATE_EXPIRED: "the runner's certificate (its FN_NODE_CERT) has expired or is not valid yet: "
    "renew it",
    transport_errors.PEER_CERTIFICATE_UNTRUSTED: "the runner's certificate is not one this LB's FN_NODE_CERT_AUTHORITY signed for "
    "that address (or for FN_NODE_CERT_SERVER_NAME, when set; an Fn runner's is made for 127.0.0.1)",
    transport_errors.PEER_NOT_TLS: "the runner does not serve TLS (no FN_NODE_CERT there) and this LB speaks only TLS to runners "
    "(FN_NODE_CERT_AUTHORITY is set)",
    transport_errors.PEER_WANTS_TLS: "the runner may serve TLS only (FN_NODE_CERT set there) and this LB speaks plaintext to runners "
    "(FN_NODE_CERT_AUTHORITY not set), or the runner was stopping or killed as it took the connection",
}
#: past a call's timeout a live runner has ended it (its 504 at the latest); this much later, for a cold start's
#: tail, a silent runner is asked whether it is still there (`fn_core.transport.client`)
OVERDUE_MARGIN_S = 5.0
#: a gRPC status with this (non-standard) code is Fn's other NACK (pure_runner.go getTryMsg; runner_client.go isTooBusy)
NACK_STATUS = 503
#: calls lost on one runner for the same reason within this long are one break of the link: warned about once
SAME_BREAK_S = 10.0


def _unsendable(status: int, headers: list[tuple[str, str]]) -> str | None:
    """Why a runner's ``result_start`` cannot become the client's answer (None: it can). aiohttp writes a header name
    as given (``Fn-Call-Id:x`` would pass for another header) and refuses a bad value only as it writes the head,
    when the call has ended as a success."""
    if status and not 200 <= status <= 599:  # 0: unset, the function's 200; a 1xx would be an interim answer
        return f"status {status} is not a final HTTP status"
    if not headers:
        return None
    if not TOKEN.fullmatch("".join([k for k, _ in headers])) or not all(k for k, _ in headers):  # one match for all
        return "a header name that is not an HTTP token"
    if NOT_IN_VALUE.search("".join([v for _, v in headers])):
        return "a header value with a control character"
    return None


@attrs.define
class ExecResult:
    """A committed call's result as the runner reported it (or the error that ended it).

    ``chunks`` is the body still held (what went to an `AnswerSink` already is not).
    """

    status: int = 0
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    chunks: list[bytes] = attrs.field(factory=list)
    error: APIError | None = None
    finished: pb.CallFinished | None = None


class AnswerSink(Protocol):
    """Where a big answer goes as it comes (the client's response): `begin` once, then `write` each part."""

    async def begin(self, result: ExecResult) -> None: ...

    async def write(self, chunk: bytes) -> None: ...


class ReplyReader:
    """The LB's reading of a runner's reply messages, for every kind of runner handle.

    `feed` each `RunnerMsg` in order until it returns True; `outcome` is then the
    `ExecResult`, or None for the NACK (a 503 ``finished`` before any ``result_start``).
    With a ``sink``, once the body held passes `STREAM_AFTER_BYTES`, ``spill`` says so after a
    message, and the caller awaits `spill_to_sink` before it reads the next one.
    """

    __slots__ = ("on_start", "sink", "result", "started", "nacked", "done", "held", "spill", "streaming", "broken")

    def __init__(self, on_start: Callable[[ExecResult], None] | None = None, sink: AnswerSink | None = None) -> None:
        self.on_start = on_start
        self.sink = sink
        self.result = ExecResult()
        self.started = False
        self.nacked = False
        self.done = False
        self.held = 0  # bytes of body in result.chunks (counted only with a sink)
        self.spill = False
        self.streaming = False  # the sink began: every chunk now goes on as it comes
        self.broken: str | None = None  # how the runner broke Fn's protocol: the call is committed, and fails

    def feed(self, msg: pb.RunnerMsg) -> bool:
        """Take one message; True once the reply is complete (``finished`` came)."""
        kind = msg.WhichOneof("body")
        if kind == "data":
            self.data(msg.data.data)
        elif kind == "result_start":
            meta = msg.result_start.http
            self.result_start(meta.status_code, [(h.key, h.value) for h in meta.headers])
        elif kind == "finished":
            self.finished(msg.finished)
            return True
        return False

    # one method per kind of message: an in-process runner calls them directly
    def result_start(self, status: int, headers: list[tuple[str, str]]) -> None:
        if self.started:
            self._break("a second result_start")
            return
        self.started = True
        why = _unsendable(status, headers)
        if why is not None:
            self._break(f"result_start with {why}")
            return
        self.result.status, self.result.headers = status, headers
        if self.on_start is not None:
            self.on_start(self.result)

    def data(self, chunk: bytes) -> None:
        if not self.started:
            self._break("an answer's data before its result_start")  # committed: it may have run
        if self.broken is not None:
            return  # nothing of a broken answer reaches the client
        self.result.chunks.append(chunk)
        if self.sink is not None:
            self.held += len(chunk)
            if self.streaming or self.held > STREAM_AFTER_BYTES:
                self.spill = True

    async def spill_to_sink(self) -> None:
        """Hand what is held to the sink (beginning the answer the first time); the runner's stream waits meanwhile."""
        assert self.sink is not None
        result = self.result
        self.spill = False
        if not self.streaming:
            self.streaming = True
            await self.sink.begin(result)
        chunks, result.chunks, self.held = result.chunks, [], 0
        for chunk in chunks:
            await self.sink.write(chunk)

    def _break(self, why: str) -> None:
        """The runner broke Fn's protocol: the call counts as committed (never a NACK: it may have run) and fails."""
        self.started = True
        if self.broken is None:
            self.broken = why

    def finished(self, finished: pb.CallFinished) -> None:
        self.done = True
        if is_nack(finished, self.started):
            self.nacked = True
            return
        self.result.finished = finished
        if self.broken is not None:
            self.result.chunks = []
            self.result.error = APIError(f"the runner sent an invalid answer: {self.broken}", status=502)
        elif not finished.success:
            code = finished.errorCode
            self.result.error = APIError(
                finished.errorStr or "internal server error",
                status=code if 400 <= code <= 599 else 500,  # the client's status: an error's, and one a client reads
                user_error=finished.errorUser,
            )

    def outcome(self) -> ExecResult | None:
        return None if self.nacked else self.result

    def ended_early(self) -> ExecResult:
        """The runner ended the call without a ``finished``: committed, and an error."""
        self.result.error = APIError("the runner ended the call without a result")
        return self.result


def client_ssl_context(config) -> ssl.SSLContext | None:
    """TLS when a CA is configured (the runners' certificates must be signed by it); mTLS when this node also has a
    certificate, as fn-core's and Fn's runners with TLS require. A certificate without the CA stops start-up: the
    channels would be plaintext though the operator meant TLS."""
    if not config.node_cert_authority:
        if config.node_cert_server_name:
            raise ConfigError("TLS for the runner channels: FN_NODE_CERT_SERVER_NAME is set, but FN_NODE_CERT_AUTHORITY is "
                              "not: without the CA the channels are plaintext, and no certificate is checked")
        if config.node_cert or config.node_cert_key:
            raise ConfigError(
                "TLS for the runner channels: FN_NODE_CERT_AUTHORITY not set; with FN_NODE_CERT the LB also needs the "
                "CA that signed the runners' certificates, or set none of them for plaintext"
            )
        return None
    if config.node_cert_key and not config.node_cert:
        raise ConfigError("TLS for the runner channels: FN_NODE_CERT not set, but FN_NODE_CERT_KEY is: give the certificate of that key")
    chain = (("FN_NODE_CERT", config.node_cert), ("FN_NODE_CERT_KEY", config.node_cert_key)) if config.node_cert else None
    try:
        context = tls.client_context(("FN_NODE_CERT_AUTHORITY", config.node_cert_authority), chain)
    except tls.TLSFilesError as exc:
        raise ConfigError(f"TLS for the runner channels: {exc}") from None
    if chain is None:
        log.warning("runner channels use TLS without a client certificate (FN_NODE_CERT not set): runners that "
                    "require one, as fn-core's and Fn's with TLS do, refuse this LB")
    return context


class RunnerClient:
    """One runner's channel. ``lost_calls``: where the calls lost on it are counted per address, for the LB's lifetime
    (`fn_core.lb.metrics.LBMetrics.lost_calls`, shared by every channel the pool makes): a channel made anew for the
    same runner goes on from its count."""

    def __init__(self, address: str, ssl_context: ssl.SSLContext | None = None, lost_calls: RunnerCounts | None = None,
                 server_name: str | None = None) -> None:
        """``server_name``: the name the runner's certificate must be for (FN_NODE_CERT_SERVER_NAME; None: its host)."""
        self.address = address
        self.channel = Channel(address, ssl_context, on_connected=self._reached, on_unreachable=self._unreached,
                               server_name=server_name)
        self.closed = False  # left the pool (or the LB is stopping): calls go elsewhere
        # since a call could not reach it, until a connection is made again (the channel keeps dialling):
        # said once per outage, and its end
        self.unreachable = False
        self._lost = RunnerCounts("lost calls") if lost_calls is None else lost_calls
        self._lost.track(address)
        self._tracked = True
        self._last_break = ("", -math.inf)  # (why, when) of the last call lost here

    def _log(self, level: int, message: str, **fields: object) -> None:
        logfmt.log(log, level, message, {"runner": self.address, **fields})

    def _reached(self) -> None:
        if self.unreachable:
            self.unreachable = False
            self._log(logging.INFO, "runner reachable again")  # the outage's end: news, not a problem

    def _unreached(self, exc: Unreachable) -> None:
        """A connection attempt failed, a call's or the channel's own after its connection was lost."""
        if not self.unreachable:  # a runner down, a TLS mismatch: the operator hears it, not only a 503 later
            self.unreachable = True
            hint = TLS_MISMATCH_HINTS.get(exc.tls_mismatch)
            # said once per outage; "runner reachable again" ends it
            self._log(logging.WARNING, "runner unreachable, skipped until it answers", reason=f"{exc}: {hint}" if hint else str(exc))

    async def close(self, grace_s: float | None = None) -> None:
        """No new call starts here; with ``grace_s`` the calls on the channel may end first (up to that long)."""
        self.closed = True
        try:
            await self.channel.close(grace_s)
        finally:
            if self._tracked:  # once, though a retiring channel is closed again at the LB's stop
                self._tracked = False
                self._lost.untrack(self.address)

    async def status(self, timeout_s: float = 2.0) -> RunnerStatus:
        answer = await self.channel.unary(STATUS, b"", timeout_s)
        return status_from_proto(pb.RunnerStatus.FromString(answer))

    async def try_exec(
        self,
        offer: CallOffer,
        body: bytes,
        on_start: Callable[[ExecResult], None] | None = None,
        sink: AnswerSink | None = None,
        wait_until: float = math.inf,
    ) -> ExecResult | None:
        """Run the call on this runner. None = not placed (try the next one).

        ``on_start`` is called once with the result when `result_start` arrives (detached calls
        answer the client there and let the rest of the stream run on). A big answer goes to
        ``sink`` as it comes (`ReplyReader`). ``wait_until`` (loop time, the placer's deadline) bounds
        the wait for a connection to this runner or for its answer to a check (None at that time).
        """
        if self.closed:
            return None
        try:
            stream = await self.channel.open(ENGAGE, ((REQUEST_ID_METADATA, offer.call.id),), wait_until)
        except OutOfTime as exc:  # the search is over: the runner may be fine, so it is not called unreachable
            self._log(logging.DEBUG, "runner not tried", call_id=offer.call.id, reason=str(exc))
            return None
        except StreamRefused as exc:
            # a runner that began to stop as our new connection was accepted said GOAWAY before its first stream:
            # nothing was sent, so the call is not placed (it goes to the next runner), as for a refused stream below
            self._log(logging.DEBUG, "runner did not take the call", call_id=offer.call.id, reason=str(exc))
            return None
        except Unreachable as exc:  # no connection, or one whose peer does not answer a PING
            self._unreached(exc)
            return None
        if self.unreachable:  # reached on a connection made before the outage was seen
            self._reached()
        stream.due = stream.conn.loop.time() + offer.call.timeout + OVERDUE_MARGIN_S
        sender: asyncio.Task | None = None
        reply = ReplyReader(on_start, sink)
        try:
            await stream.send_message(offer.try_bytes())
            if len(body) <= MAX_DATA_CHUNK:
                await stream.send_message(_data_frame(body, True), end_stream=True)
            else:  # concurrently with the reads, so neither side can stall the other on flow control
                sender = asyncio.create_task(_send_body(stream, body))
            while True:
                raw = await stream.read_message()
                if raw is None:
                    self._log(logging.WARNING, "runner ended call without a result", call_id=offer.call.id)
                    return reply.ended_early()
                if reply.feed(pb.RunnerMsg.FromString(raw)):
                    return reply.outcome()
                if reply.spill:
                    await reply.spill_to_sink()
        except StreamRefused as exc:
            self._log(logging.DEBUG, "runner did not take the call", call_id=offer.call.id, reason=str(exc))
            return None  # the runner says it never processed the stream: not placed
        except DecodeError as exc:  # committed (the call may have run), and its answer cannot be read: the stream is reset
            self._log(logging.WARNING, "runner sent a message that is no RunnerMsg", call_id=offer.call.id, reason=str(exc))
            result = reply.result
            result.chunks, result.error = [], APIError("the runner sent an invalid answer: an unreadable message", status=502)
            return result
        except RpcError as exc:
            if exc.code == NACK_STATUS and not reply.started:
                # Fn's second NACK form: a pure runner whose stream ended before it took the TryCall
                self._log(logging.DEBUG, "runner did not take the call", call_id=offer.call.id, reason=str(exc))
                return None
            # committed: the runner (or the link to it) was lost mid-call; never re-sent. Its address is the
            # operator's to read (here and in the call's line), not the client's
            # one warning per break of the link, not one per call on it: the other calls lost with it are at debug
            # here, and each one's own call line says it was lost
            now, why = asyncio.get_running_loop().time(), str(exc)
            repeated = why == self._last_break[0] and now - self._last_break[1] < SAME_BREAK_S
            self._last_break = (why, now)
            self._log(logging.DEBUG if repeated else logging.WARNING, "runner was lost during call", call_id=offer.call.id,
                      reason=why)
            self._lost.add(self.address)
            result = reply.result
            result.error = APIError("the runner was lost during the call", status=500)
            return result
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            stream.close()  # after `finished` a no-op; before it (client gone, we stopped) the runner is told


def _data_frame(chunk: bytes, eof: bool) -> bytes:
    return pb.ClientMsg(data=pb.DataFrame(data=chunk, eof=eof)).SerializeToString()


async def _send_body(stream: ClientStream, body: bytes) -> None:
    view = memoryview(body)
    size = len(body)
    try:
        for offset in range(0, size, MAX_DATA_CHUNK):
            end = offset + MAX_DATA_CHUNK
            await stream.send_message(_data_frame(bytes(view[offset:end]), end >= size), end_stream=end >= size)
    except RpcError as exc:  # the runner already ended the call (e.g. an early NACK); the reads say why
        log.debug("body frame not sent: %s", exc)
