"""`RunnerNode.stop` cancelled (a second signal, a timeout): the grace ends, the clean-up does not; the cancel goes on.

Stand-ins for the agent and the driver (what they do is tested through real Docker in tests/system: the second and
third signals); here, only what the stop does with a cancel."""

import asyncio
import types

import pytest

from fn_core.runner.main import RunnerNode


class Agent:
    def __init__(self, core) -> None:
        self.core = core
        self.cut = False

    def begin_shutdown(self) -> None:
        pass

    def cut_running_calls(self) -> None:
        self.cut = True
        self.core.active = 0

    async def close(self) -> None:
        pass


class Driver:
    def __init__(self, removal_s: float) -> None:
        self.removal_s = removal_s
        self.removed = False

    async def close(self) -> None:
        await asyncio.sleep(self.removal_s)  # the containers' removal
        self.removed = True


def node(active: int, removal_s: float = 0.2) -> RunnerNode:
    core = types.SimpleNamespace(active=active)
    return RunnerNode(None, types.SimpleNamespace(core=core), Agent(core), Driver(removal_s), "127.0.0.1", 0, grace=30)


@pytest.mark.parametrize("when", ["in the grace", "in the removal"])
async def test_a_cancelled_stop_cuts_the_calls_removes_the_containers_and_ends_cancelled(when):
    runner = node(active=1 if when == "in the grace" else 0)
    stopping = asyncio.create_task(runner.stop())
    await asyncio.sleep(0.1)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert runner.driver.removed and runner.agent.cut is (when == "in the grace")


async def test_a_timeout_around_the_stop_skips_the_grace_and_an_outer_cancel_is_not_lost():
    runner = node(active=1)

    async def stop_within(seconds: float, stopped: RunnerNode = runner) -> None:
        async with asyncio.timeout(seconds):
            await stopped.stop()

    with pytest.raises(TimeoutError):  # the timeout's own cancel: its TimeoutError, once the clean-up is over
        await stop_within(0.1)
    assert runner.driver.removed

    outer = node(active=1, removal_s=0.5)
    task = asyncio.create_task(stop_within(0.3, outer))
    await asyncio.sleep(0.1)
    task.cancel()  # from outside, in the grace; then the timeout expires in the removal: the task ends cancelled
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outer.driver.removed
