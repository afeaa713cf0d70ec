"""Fn's RunnerProtocol service over gRPC: Engage (one call per stream), Status and Status2.

The call's semantics (try, body, result_start, data, finished, the NACK) are `RunnerCore`'s;
this is only the stream they travel on.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from fn_core.proto import runner_pb2 as pb
from fn_core.proto import runner_pb2_grpc
from fn_core.runner.agent import Agent
from fn_core.runner.core import RunnerCore
from fn_core.runner.status_image import payload_of_struct
from fn_core.wire import MAX_DATA_CHUNK, CallOffer, status_to_proto

log = logging.getLogger(__name__)


class _StreamIO:
    """`CallIO` over one Engage stream."""

    __slots__ = ("context",)

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context

    async def read_offer(self) -> CallOffer | None:
        msg = await self.context.read()
        return None if msg is grpc.aio.EOF else CallOffer.from_message(msg)

    async def read_body(self) -> bytes | None:
        parts: list[bytes] = []
        while True:
            msg = await self.context.read()
            if msg is grpc.aio.EOF:
                return b"".join(parts)  # a closed send side also ends the body (Fn: any read error = EOF)
            if msg.WhichOneof("body") != "data":
                continue
            if msg.data.eof and not parts:
                return msg.data.data  # the usual small body: one frame, no join
            parts.append(msg.data.data)
            if msg.data.eof:
                return b"".join(parts)

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        meta = pb.HttpRespMeta(status_code=status, headers=[pb.HttpHeader(key=k, value=v) for k, v in headers])
        await self.context.write(pb.RunnerMsg(result_start=pb.CallResultStart(http=meta)))

    async def data(self, chunk: bytes) -> None:
        if len(chunk) <= MAX_DATA_CHUNK:
            await self.context.write(pb.RunnerMsg(data=pb.DataFrame(data=chunk)))
            return
        view = memoryview(chunk)
        for i in range(0, len(chunk), MAX_DATA_CHUNK):
            await self.context.write(pb.RunnerMsg(data=pb.DataFrame(data=bytes(view[i : i + MAX_DATA_CHUNK]))))

    async def finish(self, done: pb.CallFinished) -> None:
        await self.context.write(pb.RunnerMsg(finished=done))


class RunnerServicer(runner_pb2_grpc.RunnerProtocolServicer):
    def __init__(self, agent: Agent, hook: Any, core: RunnerCore | None = None, status_image: str = "") -> None:
        self.core = core or RunnerCore(agent, hook, status_image)
        self.agent = agent

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

    async def Engage(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await self.core.engage(_StreamIO(context))

    async def Status(self, request: Any, context: grpc.aio.ServicerContext) -> pb.RunnerStatus:
        return status_to_proto(await self.core.status())

    async def Status2(self, request: struct_pb2.Struct, context: grpc.aio.ServicerContext) -> pb.RunnerStatus:
        # the Struct, as JSON, is the status image's payload
        return status_to_proto(await self.core.status(payload_of_struct(json_format.MessageToDict(request))))

    async def ConfigureRunner(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ConfigStatus:
        log.warning("ConfigureRunner called, but this runner takes no remote configuration")
        return pb.ConfigStatus()

    async def StreamLogs(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        # Fn's pure runner answers this without a log streamer configured; neither has ours (yet)
        await context.abort(grpc.StatusCode.UNKNOWN, "runner not configured with logStreamer")

