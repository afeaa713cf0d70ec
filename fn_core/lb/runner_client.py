"""The LB's client of one runner: a long-lived grpc.aio channel and the Engage exchange.

`RunnerClient.try_exec` is Fn's ``TryExec``: it returns None when the call was *not placed*
(NACK: a 503 `finished` before any `result_start`, or the runner could not be reached before it
took the TryCall), so the placer may try another runner; otherwise the call is committed and
an `ExecResult` comes back, success or error, and must never be re-sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import attrs
import grpc
from google.protobuf import empty_pb2

from fn_core.errors import APIError
from fn_core.proto import runner_pb2 as pb
from fn_core.proto.runner_pb2_grpc import RunnerProtocolStub
from fn_core.records import RunnerStatus
from fn_core.wire import MAX_DATA_CHUNK, REQUEST_ID_METADATA, CallOffer, is_nack, status_from_proto

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    # a killed runner should be re-dialled soon after it comes back, not after minutes of backoff
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]

# gRPC's UNAVAILABLE texts that mean "never connected", as opposed to "connection lost mid-call".
_NEVER_CONNECTED = ("failed to connect", "connection refused", "dns resolution failed", "name resolution")


@attrs.define
class ExecResult:
    """A committed call's result as the runner reported it (or the error that ended it)."""

    status: int = 0
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    chunks: list[bytes] = attrs.field(factory=list)
    error: APIError | None = None
    finished: pb.CallFinished | None = None


class ReplyReader:
    """The LB's reading of a runner's reply messages, for every kind of runner handle.

    `feed` each `RunnerMsg` in order until it returns True; `outcome` is then the
    `ExecResult`, or None for the NACK (a 503 ``finished`` before any ``result_start``).
    """

    __slots__ = ("on_start", "result", "started", "nacked", "done")

    def __init__(self, on_start: Callable[[ExecResult], None] | None = None) -> None:
        self.on_start = on_start
        self.result = ExecResult()
        self.started = False
        self.nacked = False
        self.done = False

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
        self.started = True
        self.result.status, self.result.headers = status, headers
        if self.on_start is not None:
            self.on_start(self.result)

    def data(self, chunk: bytes) -> None:
        self.result.chunks.append(chunk)

    def finished(self, finished: pb.CallFinished) -> None:
        self.done = True
        if is_nack(finished, self.started):
            self.nacked = True
            return
        self.result.finished = finished
        if not finished.success:
            self.result.error = APIError(
                finished.errorStr or "internal server error",
                status=finished.errorCode or 500,
                user_error=finished.errorUser,
            )

    def outcome(self) -> ExecResult | None:
        return None if self.nacked else self.result

    def ended_early(self, runner: str) -> ExecResult:
        """The runner ended the call without a ``finished``: committed, and an error."""
        self.result.error = APIError(f"runner {runner} ended the call without a result")
        return self.result


def channel_credentials(config) -> grpc.ChannelCredentials | None:
    """TLS when a CA is configured; mTLS when this node also has a certificate and key."""
    if not config.node_cert_authority:
        return None

    def read(path: str) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(config.node_cert_authority),
        private_key=read(config.node_cert_key),
        certificate_chain=read(config.node_cert),
    )


class RunnerClient:
    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.address = address
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
        self.stub = RunnerProtocolStub(self.channel)
        # Streams whose `finished` came but whose status has not yet: held until it comes, because
        # dropping or cancelling an unfinished call resets the stream, which costs both sides CPU and
        # left the runner's gRPC core ~20 bytes per call it never gave back (runner RSS +3 MB per 100k calls).
        self._finishing: set[grpc.aio.StreamStreamCall] = set()
        self.closed = False  # left the pool (or the LB is stopping): calls go elsewhere

    async def close(self, grace_s: float | None = None) -> None:
        """No new call starts here; with ``grace_s`` the calls on the channel may end first (up to that long)."""
        self.closed = True
        await self.channel.close(grace_s)

    async def status(self, timeout_s: float = 2.0) -> RunnerStatus:
        return status_from_proto(await self.stub.Status(empty_pb2.Empty(), timeout=timeout_s))

    async def try_exec(
        self,
        offer: CallOffer,
        body: bytes,
        on_start: Callable[[ExecResult], None] | None = None,
    ) -> ExecResult | None:
        """Run the call on this runner. None = not placed (try the next one).

        ``on_start`` is called once with the result when `result_start` arrives (detached calls
        answer the client there and let the rest of the stream run on).
        """
        if self.closed:
            return None
        stream = self.stub.Engage(metadata=((REQUEST_ID_METADATA, offer.call.id),))
        sender: asyncio.Task | None = None
        received = False
        reply = ReplyReader(on_start)
        try:
            await stream.write(offer.try_message())
            if len(body) <= MAX_DATA_CHUNK:
                await _write_quietly(stream, pb.ClientMsg(data=pb.DataFrame(data=body, eof=True)))
            else:  # concurrently with the reads, so neither side can stall the other on flow control
                sender = asyncio.create_task(_send_body(stream, body))
            while True:
                msg = await stream.read()
                if msg is grpc.aio.EOF:
                    return reply.ended_early(self.address)
                received = True
                if reply.feed(msg):
                    return reply.outcome()
        except grpc.aio.AioRpcError as exc:
            if _not_placed(exc, received):
                log.debug("runner %s unreachable: %s", self.address, exc.details())
                return None
            # committed: the runner (or the link to it) was lost mid-call; never re-sent
            result = reply.result
            result.error = APIError(f"runner {self.address} was lost during the call: {exc.code().name}", status=500)
            return result
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            if not stream.done():
                if reply.done:
                    self._finishing.add(stream)  # the status is on its way: let the call end normally
                    stream.add_done_callback(self._finishing.discard)
                else:
                    stream.cancel()  # client gone or we stopped early: the runner is told


def _not_placed(exc: grpc.aio.AioRpcError, received: bool) -> bool:
    """Only a runner we never reached is "not placed": a link lost after the TryCall went out may have started it."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE or received:
        return False
    details = (exc.details() or "").lower()
    return any(text in details for text in _NEVER_CONNECTED)


async def _write_quietly(stream: grpc.aio.StreamStreamCall, msg: pb.ClientMsg) -> None:
    """A body write fails when the runner already ended the call (e.g. an early NACK); the reads say why."""
    try:
        await stream.write(msg)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
        log.debug("body frame not sent: %s", exc)


async def _send_body(stream: grpc.aio.StreamStreamCall, body: bytes) -> None:
    view = memoryview(body)
    size = len(body)
    for offset in range(0, size, MAX_DATA_CHUNK):
        end = offset + MAX_DATA_CHUNK
        frame = pb.DataFrame(data=bytes(view[offset:end]), eof=end >= size)
        try:
            await stream.write(pb.ClientMsg(data=frame))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return
