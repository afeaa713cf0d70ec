"""What a runner does with one call, whatever carries it: gRPC Engage or the in-process handle.

The call arrives as a `CallOffer` (over gRPC: Fn's ``try`` message), then its body; the answer
goes out through the `CallIO` as Fn's three kinds (``result_start`` once, ``data``, ``finished``),
which a gRPC stream sends as messages, data in frames <= 10 KiB. A 503 ``finished`` before any
``result_start`` is the NACK: the LB may place the call elsewhere, so it is only sent while
nothing was committed. The counters and `live_status` live here, so a runner reports the same
whichever way its calls come in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from fn_core.errors import APIError, BadRequest, ClientCancelled, InvalidImage, ServerTooBusy
from fn_core.hook_calls import run_isolated, run_status_hooks
from fn_core.models import CALL_TYPE_DETACHED, Call, now_rfc3339
from fn_core.proto import runner_pb2 as pb
from fn_core.records import CallOutcome, RunnerStatus
from fn_core.runner.agent import Agent
from fn_core.runner.status_image import EMPTY_PAYLOAD, StatusImageCheck
from fn_core.wire import CallOffer

log = logging.getLogger(__name__)


class CallIO(Protocol):
    """One call's transport as the runner sees it: what the LB sent, and Fn's three kinds of answer."""

    async def read_offer(self) -> CallOffer | None:
        """The offered call (None: the LB closed the stream); `BadRequest` when the first message is no TryCall."""

    async def read_body(self) -> bytes | None:
        """The whole request body (None: the LB went away before sending it); `RequestTooLarge` over the limit."""

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Fn's ``result_start``: the call is committed from here on."""

    async def data(self, chunk: bytes) -> None:
        """Part of the response body, of any size (a gRPC stream cuts it into frames of <= 10 KiB)."""

    async def finish(self, done: pb.CallFinished) -> None:
        """Fn's ``finished``: the last thing a call writes."""


def finished(call: Call | None, error: APIError | None, started_ns: int, created: str, ran_ns: int) -> pb.CallFinished:
    """Fn's ``finished`` for a call received at ``started_ns`` (``created``) that got its container at ``ran_ns`` (0: it
    got none). Its timings are Fn's: ``schedulerDuration`` the wait for a container (a cold start's launch included;
    the whole call when it got none), ``executionDuration`` the time in the container."""
    now = time.monotonic_ns()
    done = pb.CallFinished(
        success=error is None,
        details=call.id if call else "",
        createdAt=created,
        startedAt=now_rfc3339(now - ran_ns) if ran_ns else "",
        completedAt=now_rfc3339(),
        schedulerDuration=(ran_ns or now) - started_ns,
        executionDuration=(now - ran_ns) if ran_ns else 0,
        image=call.image if call else "",
    )
    if error is not None:
        done.errorCode, done.errorStr, done.errorUser = error.status, error.message, error.user_error
    return done


class RunnerCore:
    def __init__(self, agent: Agent, hook: Any, status_image: str = "") -> None:
        self.agent = agent
        self.metrics = agent.metrics
        self.hook = hook
        self.status_check = StatusImageCheck(agent, status_image) if status_image else None
        self.active = 0
        self.requests_received = 0
        self.requests_handled = 0
        # read once: with no listener (the usual case) a call makes no outcome record at all
        self.listened = bool(hook.runner_call_finished.get_hookimpls())
        self._status_hooks_failing: set[tuple[str, str | None]] = set()  # runner_status plugins failing now (logged once)

    async def engage(self, io: CallIO) -> None:
        self.active += 1
        self.requests_received += 1
        nacked = False
        try:
            nacked = await self._engage(io)
        finally:
            self.active -= 1
            if not nacked:
                self.requests_handled += 1

    async def _engage(self, io: CallIO) -> bool:
        """Serve one call; True when it ended in a NACK (not counted as handled)."""
        created, started_ns = now_rfc3339(), time.monotonic_ns()
        try:
            offer = await io.read_offer()
            if offer is None:
                raise BadRequest("expected a try message first")
        except BadRequest as err:
            self._count(err, started_ns)
            await io.finish(finished(None, err, started_ns, created, 0))
            return False
        except asyncio.CancelledError:  # the LB dropped the stream before its try (or we stop): as below
            self._cancelled(None, started_ns)
            raise
        call = offer.call
        if self.status_check is not None and call.image == self.status_check.image:
            error = InvalidImage()  # Fn: ErrFnsInvalidImage
            self._count(error, started_ns)
            await io.finish(finished(call, error, started_ns, created, 0))
            return False

        try:
            body = await io.read_body()
        except asyncio.CancelledError:  # the LB dropped the stream mid-body (its client left) or we stop: as below
            self._cancelled(call, started_ns)
            raise
        except APIError as err:  # a body over the runner's limit: refused before anything ran (not a NACK)
            self._count(err, started_ns)
            await io.finish(finished(call, err, started_ns, created, 0))
            return False
        if body is None:  # the LB went away before sending the whole body: counted (it was received) as cancelled
            self._cancelled(call, started_ns)
            return False

        started = 0  # the status sent in `result_start`, once it is
        ran_ns = 0  # when the call got its container
        nacked: bool | None = None  # set once `finished` is sent

        async def on_start(status: int, headers: list[tuple[str, str]]) -> None:
            nonlocal started
            started = status
            await io.start(status, headers)

        on_data = io.data
        detached_ack = None
        if call.type == CALL_TYPE_DETACHED:  # Fn's detached call: 202 as the call starts, the response goes nowhere
            detached_ack, on_start, on_data = on_start, _discard_start, _discard_data

        async def on_committed() -> None:
            nonlocal ran_ns
            ran_ns = time.monotonic_ns()
            if detached_ack is not None:
                await detached_ack(202, [])

        async def on_end(outcome: Exception | None) -> None:
            nonlocal nacked
            nacked = False  # a failed send below still ends the call: never a second `finished`
            nacked = await self._finish(io, call, outcome, started, started_ns, created, ran_ns)

        running_on: asyncio.Future[None] | None = None  # once dropped, what its container still does with it

        def on_dropped(exchange: asyncio.Future[None]) -> None:
            nonlocal running_on
            running_on = exchange

        outcome: Exception | None = None
        try:
            await self.agent.run(call, offer.slot_key, offer.extensions, body, on_start, on_data, on_committed, on_end,
                                 on_dropped)
        except asyncio.CancelledError:
            if nacked is None:  # ended before its `finished`: the LB dropped the stream (its client left) or we stop
                self._cancelled(call, started_ns, ran_ns, running_on)
            raise
        except Exception as exc:
            outcome = exc
        if nacked is not None:
            return nacked  # `finished` left with the response (on_end)
        return await self._finish(io, call, outcome, started, started_ns, created, ran_ns)

    async def _finish(
        self, io: CallIO, call: Call, outcome: Exception | None, started: int, started_ns: int, created: str, ran_ns: int
    ) -> bool:
        """Send `finished` for the call's outcome (``started``: the status sent, 0 if none); True when it is the NACK."""
        error: APIError | None = None
        if isinstance(outcome, APIError):
            error = outcome
        elif outcome is not None:
            log.error("call %s failed inside the runner", call.id, exc_info=outcome)
            error = APIError(f"internal error: {type(outcome).__name__}")
        if error is not None and error.status == 503:
            # The LB reads any 503 before a `result_start` as the NACK, so the runner counts it as one too. Before
            # the call took a container that is a refusal (a plugin's 503 from modify_container_options); after, only
            # ours that say nothing reached the container (`ServerTooBusy`)
            if not started and (not ran_ns or isinstance(error, ServerTooBusy)):
                self.metrics.observe_refusal()
                await io.finish(finished(call, error, started_ns, created, 0))
                return True
            error = APIError(error.message, status=500)  # never a late NACK: the call was committed
        self._count(error, started_ns)
        done = finished(call, error, started_ns, created, ran_ns)
        await io.finish(done)
        if self.listened:
            status = error.status if error is not None else started or 200
            outcome_record = CallOutcome(
                status=status, error=error.message if error else "", duration_s=(time.monotonic_ns() - started_ns) / 1e9,
                wait_s=done.schedulerDuration / 1e9,
            )
            asyncio.get_running_loop().call_soon(self._tell_listeners, call, outcome_record)
        return False

    def _cancelled(self, call: Call | None, started_ns: int, ran_ns: int = 0, running_on: asyncio.Future[None] | None = None) -> None:
        """A call received but dropped before its end: counted now (the runner's calls by result add up to the requests
        it received), and, once its try was read, told to listeners as Fn's 444 (the client's cancel). One whose
        container runs on with it (``running_on``) is told when the container is done: its time is the container's
        (what a ledger bills, when the container is free again), not the client's."""
        self.metrics.observe_cancelled()
        if not self.listened or call is None:
            return

        def tell(_: object = None) -> None:
            outcome = CallOutcome(status=ClientCancelled.status, error=ClientCancelled.message,
                                  duration_s=(time.monotonic_ns() - started_ns) / 1e9,
                                  wait_s=(ran_ns - started_ns) / 1e9 if ran_ns else None)
            self._tell_listeners(call, outcome)

        if running_on is None:
            asyncio.get_running_loop().call_soon(tell)
        else:
            running_on.add_done_callback(tell)

    def _tell_listeners(self, call: Call, outcome: CallOutcome) -> None:
        run_isolated(self.hook.runner_call_finished, call=call, outcome=outcome)

    def _count(self, error: APIError | None, started_ns: int) -> None:
        self.metrics.observe_call(None if error is None else error.status, (time.monotonic_ns() - started_ns) / 1e9)

    def render_metrics(self) -> str:
        """This runner's part of `/metrics` (`fn_core.runner.metrics`)."""
        return self.metrics.render(self.agent, running=self.active)

    def live_status(self) -> RunnerStatus:
        budget = self.agent.budget
        status = RunnerStatus(
            active=self.active,
            requests_received=self.requests_received,
            requests_handled=self.requests_handled,
            custom_status={
                "runner.mem_free_bytes": str(budget.free_memory),
                "runner.cpu_free_mcpus": str(budget.free_mcpus),
                "runner.containers": str(len(self.agent.containers())),
            },
        )
        run_status_hooks(self.hook, status, failing=self._status_hooks_failing)
        return status

    async def status(self, payload: bytes = EMPTY_PAYLOAD) -> RunnerStatus:
        """`live_status`, then the status image's call (unless a plugin already marked the runner failed)."""
        self.metrics.status_requests += 1
        status = self.live_status()
        if self.status_check is not None and not status.failed:
            result, cached = await self.status_check.run(payload)
            result.apply_to(status, cached)
        return status


async def _discard_start(status: int, headers: list[tuple[str, str]]) -> None:
    return None


async def _discard_data(chunk: bytes) -> None:
    return None
