"""RunnerCore's NACK rule, as the LB reads it: a 503 `finished` before any `result_start` is "not placed, try another
runner". The runner must count and tell such a try as the LB takes it, and never send one for a call that may have run."""

from __future__ import annotations

import asyncio

import pytest

from fn_core import APIError, hookimpl
from fn_core.errors import RunnerOutOfResources
from fn_core.runner.core import RunnerCore
from fn_core.runner.metrics import RunnerMetrics
from fn_core.testing import build_plugin_manager, make_call
from fn_core.wire import CallOffer, is_nack


class OneCall:
    """The gRPC stream's side of one call: its try, an empty body, and what the runner sent back."""

    def __init__(self) -> None:
        self.call = make_call()
        self.done = None
        self.started = False

    async def read_offer(self):
        return CallOffer(self.call, b"k" * 32)

    async def read_body(self):
        return b""

    async def start(self, status, headers):
        self.started = True

    async def data(self, chunk):
        pass

    async def finish(self, done):
        self.done = done


class FailingAgent:
    """Fails the call with ``error``, after taking a container for it when ``committed``."""

    def __init__(self, error: APIError, committed: bool) -> None:
        self.error, self.committed = error, committed
        self.metrics = RunnerMetrics()

    async def run(self, call, key, extensions, body, on_start, on_data, on_committed, on_end, on_dropped=None):
        if self.committed:
            await on_committed()
        raise self.error


async def serve(error: APIError, committed: bool):
    heard: list[int] = []

    class Listener:
        @hookimpl
        def runner_call_finished(self, call, outcome):
            heard.append(outcome.status)

    core = RunnerCore(FailingAgent(error, committed), build_plugin_manager(Listener()).hook)  # type: ignore[arg-type]
    io = OneCall()
    await core.engage(io)
    await asyncio.sleep(0)  # listeners are told in the next turn
    return io, core, heard


@pytest.mark.parametrize("error", [
    APIError("quota exceeded for this runner", status=503),  # a modify_container_options plugin's refusal
    RunnerOutOfResources(),
])
async def test_a_503_before_the_call_took_a_container_is_a_nack_counted_as_the_lb_reads_it(error):
    io, core, heard = await serve(error, committed=False)
    assert is_nack(io.done, result_started=False)
    assert heard == [] and core.requests_handled == 0 and core.metrics.calls_by_result["refused"] == 1


async def test_ours_that_says_nothing_reached_the_container_is_a_nack_after_the_commit_too():
    io, core, heard = await serve(RunnerOutOfResources(), committed=True)  # no fd left to connect to the container
    assert is_nack(io.done, result_started=False) and heard == []


async def test_any_other_503_once_the_call_took_a_container_is_a_500_never_a_nack():
    """The LB would place a NACKed call again: one that may have run would run twice."""
    io, core, heard = await serve(APIError("a plugin's own 503", status=503), committed=True)
    assert not is_nack(io.done, result_started=False)
    assert (io.done.errorCode, io.done.errorStr) == (500, "a plugin's own 503")
    assert heard == [500] and core.requests_handled == 1 and core.metrics.calls_by_result["error"] == 1
