"""Fn's RunnerProtocol service: Engage (one call per stream), Status and Status2, as `fn_core.transport` handlers.

The call's semantics (try, body, result_start, data, finished, the NACK) are `RunnerCore`'s;
this is only the stream they travel on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError

from fn_core.errors import BadRequest, RequestTooLarge
from fn_core.proto import runner_pb2 as pb
from fn_core.runner.agent import Agent
from fn_core.runner.core import RunnerCore
from fn_core.runner.status_image import payload_of_struct
from fn_core.transport import RpcError, ServerStream
from fn_core.transport.errors import Status
from fn_core.transport.server import Handler, unary
from fn_core.wire import CONFIGURE_RUNNER, ENGAGE, MAX_DATA_CHUNK, STATUS, STATUS2, STREAM_LOGS, CallOffer, status_to_proto

log = logging.getLogger(__name__)

#: how long `finished` may wait for the LB to take the rest of an answer: an LB relaying it takes it at once; one
#: that took nothing for this long has a client that stopped reading, and the call is over for the runner
FINISH_GRACE_S = 5.0


def _client_msg(raw: bytes) -> pb.ClientMsg:
    try:
        return pb.ClientMsg.FromString(raw)
    except DecodeError:  # a 400 `finished`, as any bad try: the LB hears why, and the stream ends cleanly
        raise BadRequest("invalid message: not a ClientMsg") from None


class _StreamIO:
    """`CallIO` over one Engage stream; ``max_body``: the most body bytes it takes (0: no limit)."""

    __slots__ = ("stream", "max_body")

    def __init__(self, stream: ServerStream, max_body: int = 0) -> None:
        self.stream = stream
        self.max_body = max_body

    async def read_offer(self) -> CallOffer | None:
        raw = await self.stream.read_message()
        return None if raw is None else CallOffer.from_message(_client_msg(raw))

    async def read_body(self) -> bytes | None:
        parts: list[bytes] = []
        size, limit = 0, self.max_body
        while True:
            raw = await self.stream.read_message()
            if raw is None:
                return b"".join(parts)  # a closed send side also ends the body (Fn: any read error = EOF)
            msg = _client_msg(raw)
            if msg.WhichOneof("body") != "data":
                continue
            data = msg.data.data
            if limit:  # whoever reaches the gRPC port could otherwise fill the runner's memory with one body
                size += len(data)
                if size > limit:
                    raise RequestTooLarge(f"request body too large for this runner (over {limit} bytes)")
            if msg.data.eof and not parts:
                return data  # the usual small body: one frame, no join
            parts.append(data)
            if msg.data.eof:
                return b"".join(parts)

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        meta = pb.HttpRespMeta(status_code=status, headers=[pb.HttpHeader(key=k, value=v) for k, v in headers])
        await self.stream.send(pb.RunnerMsg(result_start=pb.CallResultStart(http=meta)).SerializeToString())

    async def data(self, chunk: bytes) -> None:
        if len(chunk) <= MAX_DATA_CHUNK:
            await self.stream.send(pb.RunnerMsg(data=pb.DataFrame(data=chunk)).SerializeToString())
            return
        view = memoryview(chunk)
        for i in range(0, len(chunk), MAX_DATA_CHUNK):
            frame = pb.DataFrame(data=bytes(view[i : i + MAX_DATA_CHUNK]))
            await self.stream.send(pb.RunnerMsg(data=frame).SerializeToString())

    async def finish(self, done: pb.CallFinished) -> None:
        message = pb.RunnerMsg(finished=done).SerializeToString()
        stream = self.stream
        if stream.has_room_for(len(message)):
            await stream.send(message)  # the usual case: it goes at once, no timer
        else:  # the LB has not taken all of the answer (its client reads slowly, or not at all)
            try:
                async with asyncio.timeout(FINISH_GRACE_S):
                    await stream.send(message)
            except TimeoutError:
                log.info("the LB took no more of the answer to call %s in %g s after it ended; its stream is ended",
                         done.details or "?", FINISH_GRACE_S)
                # a status in trailers, or a reset if a message was broken off: never held on the LB's reading
                stream.end(Status.DEADLINE_EXCEEDED, "the call's result was not taken in time")
                return
        stream.end()  # `finished` is the last word: the status goes in the same send


class RunnerServicer:
    def __init__(
        self, agent: Agent, hook: Any, core: RunnerCore | None = None, status_image: str = "", max_body: int = 0
    ) -> None:
        self.core = core or RunnerCore(agent, hook, status_image)
        self.agent = agent
        self.max_body = max_body  # FN_MAX_REQUEST_SIZE: a body over it is refused with 413 (0: no limit)

    # the runner's counters, as tests and plugins have always read them here
    @property
    def active(self) -> int:
        return self.core.active

    @property
    def requests_received(self) -> int:
        return self.core.requests_received

    @property
    def requests_handled(self) -> int:
        return self.core.requests_handled

    def handlers(self) -> dict[str, Handler]:
        """The methods by path, for a `GrpcServer`."""
        return {
            ENGAGE: self.engage,
            STATUS: unary(self.status),
            STATUS2: unary(self.status2),
            CONFIGURE_RUNNER: unary(self.configure_runner),
            STREAM_LOGS: self.stream_logs,
        }

    async def engage(self, stream: ServerStream) -> None:
        await self.core.engage(_StreamIO(stream, self.max_body))

    async def status(self, request: bytes) -> bytes:
        return status_to_proto(await self.core.status()).SerializeToString()

    async def status2(self, request: bytes) -> bytes:
        # the Struct, as JSON, is the status image's payload
        payload = payload_of_struct(json_format.MessageToDict(struct_pb2.Struct.FromString(request)))
        return status_to_proto(await self.core.status(payload)).SerializeToString()

    async def configure_runner(self, request: bytes) -> bytes:
        log.warning("ConfigureRunner called, but this runner takes no remote configuration")
        return pb.ConfigStatus().SerializeToString()

    async def stream_logs(self, stream: ServerStream) -> None:
        # Fn's pure runner answers this without a log streamer configured; neither has ours (yet)
        raise RpcError(Status.UNKNOWN, "runner not configured with logStreamer")
