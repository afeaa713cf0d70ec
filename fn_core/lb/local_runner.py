"""The LB's handle on a runner in its own process (`fn-core serve`): no gRPC, same semantics.

`LocalRunner` has `RunnerClient`'s interface (`try_exec`, `status`, `close`). The runner side is
the same `RunnerCore` that serves Engage streams and its answer goes into the same `ReplyReader`
that reads a remote runner's messages, so NACK, commit, counters and `runner_status` hooks behave
as over gRPC; only the socket, the HTTP/2 framing and the serialization are gone (the runner gets
the LB's `CallOffer` itself, and its answer is not wrapped into messages).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from fn_core.errors import APIError
from fn_core.lb.runner_client import AnswerSink, ExecResult, ReplyReader
from fn_core.proto import runner_pb2 as pb
from fn_core.records import RunnerStatus
from fn_core.runner.core import RunnerCore
from fn_core.wire import CallOffer

log = logging.getLogger(__name__)

#: The address a local runner has in the pool (placers, logs and `CallOutcome.runner` see it).
LOCAL_ADDRESS = "local"


class _LocalIO:
    """`CallIO` for one call handed over in memory: the reply goes straight into the reader."""

    __slots__ = ("offer", "body", "reply")

    def __init__(self, offer: CallOffer, body: bytes, reply: ReplyReader) -> None:
        self.offer = offer
        self.body = body
        self.reply = reply

    async def read_offer(self) -> CallOffer | None:
        return self.offer

    async def read_body(self) -> bytes | None:
        return self.body

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.reply.result_start(status, headers)

    async def data(self, chunk: bytes) -> None:
        self.reply.data(chunk)
        if self.reply.spill:
            await self.reply.spill_to_sink()

    async def finish(self, done: pb.CallFinished) -> None:
        self.reply.finished(done)


class LocalRunner:
    def __init__(self, core: RunnerCore, address: str = LOCAL_ADDRESS) -> None:
        self.core = core
        self.address = address

    async def close(self) -> None:
        """Nothing to close: the runner node is stopped by its owner, after the LB."""

    async def status(self, timeout_s: float = 2.0) -> RunnerStatus:
        return await self.core.status()

    async def try_exec(
        self,
        offer: CallOffer,
        body: bytes,
        on_start: Callable[[ExecResult], None] | None = None,
        sink: AnswerSink | None = None,
        wait_until: float = math.inf,
    ) -> ExecResult | None:
        """As `RunnerClient.try_exec`: None = not placed (NACK), else the committed call's result (no connection
        to wait for: ``wait_until`` has nothing to bound)."""
        reply = ReplyReader(on_start, sink)
        try:
            await self.core.engage(_LocalIO(offer, body, reply))
        except Exception as exc:  # as a runner lost mid-call over gRPC: committed, never re-sent
            log.exception("call %s failed in the local runner", offer.call.id)
            reply.result.error = APIError(f"the runner failed during the call: {type(exc).__name__}", status=500)
            return reply.result
        return reply.outcome() if reply.done else reply.ended_early()
