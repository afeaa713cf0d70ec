"""Slot-queue and budget decisions with a fake driver (fast; the real-Docker tests cover the rest)."""

from __future__ import annotations

import asyncio

import pytest

from fn_core.config import load_config
from fn_core.errors import CallResourceTooBig, ServerTooBusy
from fn_core.models import Call, slot_key
from fn_core.runner.agent import Agent, HotContainer, SlotQueue
from fn_core.runner.resources import MB, Budget


class HangingDriver:
    """Launches never finish: lets a test look at what the agent decided to start."""

    def __init__(self) -> None:
        self.launched = 0

    async def launch(self, call, extensions, iofs_dir, env):
        self.launched += 1
        await asyncio.Event().wait()

    async def remove(self, container_id):
        pass


def make_agent(tmp_path, memory_mb: int, *, non_blocking: bool) -> tuple[Agent, HangingDriver]:
    config = load_config(env={}, overrides={"iofs_path": str(tmp_path), "enable_nb_resource_tracker": non_blocking})
    driver = HangingDriver()
    return Agent(config, driver, budget=Budget(total_memory=memory_mb * MB, total_mcpus=4000)), driver


def test_budget_reserve_and_release():
    budget = Budget(total_memory=256 * MB, total_mcpus=1000)
    assert budget.possible(256 * MB, 1000) and not budget.possible(257 * MB, 0)
    assert budget.try_reserve(128 * MB, 500) and budget.try_reserve(128 * MB, 500)
    assert not budget.try_reserve(1, 0)
    budget.release(128 * MB, 500)
    assert budget.free_memory == 128 * MB and budget.free_mcpus == 500


async def test_a_burst_starts_one_container_and_more_only_for_calls_still_waiting_a_cold_start_later(tmp_path):
    agent, driver = make_agent(tmp_path, 1024, non_blocking=False)
    agent.launch_s = 0.05  # what a cold start has been costing
    call = Call(id="c", fn_id="f", image="img", memory=128)
    waiters = [asyncio.create_task(agent.acquire(call, slot_key(call), {})) for _ in range(3)]
    await asyncio.sleep(0.01)
    [queue] = agent.queues.values()
    assert (queue.starting, driver.launched) == (1, 1)  # the others wait for the one coming up
    await asyncio.sleep(0.1)
    # the launch hangs, so after a cold start's time the two others get one each
    assert (queue.starting, driver.launched, agent.budget.used_memory) == (3, 3, 3 * 128 * MB)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert queue.waiting() == 0


async def test_non_blocking_mode_nacks_what_does_not_fit(tmp_path):
    agent, driver = make_agent(tmp_path, 256, non_blocking=True)
    agent.launch_s = 0.05
    call = Call(id="c", fn_id="f", image="img", memory=128)
    waiters = [asyncio.create_task(agent.acquire(call, slot_key(call), {})) for _ in range(3)]
    await asyncio.sleep(0.1)
    assert driver.launched == 2  # room for two containers of 128 MB
    assert isinstance(waiters[2].exception(), ServerTooBusy)  # the newest call is refused: nothing ran
    for waiter in waiters[:2]:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_blocking_mode_waits_and_too_big_is_400(tmp_path):
    agent, driver = make_agent(tmp_path, 128, non_blocking=False)
    call = Call(id="c", fn_id="f", image="img", memory=128)
    first = asyncio.create_task(agent.acquire(call, slot_key(call), {}))
    second = asyncio.create_task(agent.acquire(call, slot_key(call), {}))
    await asyncio.sleep(0.01)
    assert driver.launched == 1 and not second.done()  # waits for resources, no NACK
    with pytest.raises(CallResourceTooBig):
        big = Call(id="b", fn_id="g", image="img", memory=256)
        await agent.acquire(big, slot_key(big), {})
    agent.begin_shutdown()
    await asyncio.sleep(0)
    assert isinstance(second.exception(), ServerTooBusy)  # shutting down: waiting calls are NACKed
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


def slot_with_busy_container(agent: Agent, call: Call) -> HotContainer:
    """A slot whose one container is serving a call."""
    key = slot_key(call)
    queue = agent.queues[key] = SlotQueue(key=key, call=call, extensions={})
    busy = HotContainer(id="c1", queue=queue, iofs_dir="/nonexistent", conn=None, memory=128 * MB, mcpus=0, idle_timeout_s=30)
    queue.containers.add(busy)
    assert agent.budget.try_reserve(128 * MB, 0)
    return busy


async def test_a_call_waits_briefly_for_its_busy_container_instead_of_a_cold_start(tmp_path):
    agent, driver = make_agent(tmp_path, 1024, non_blocking=True)
    call = Call(id="c", fn_id="f", image="img", memory=128)
    agent.launch_s = 0.05  # what a cold start has been costing
    busy = slot_with_busy_container(agent, call)
    waiter = asyncio.create_task(agent.acquire(call, slot_key(call), {}))
    await asyncio.sleep(0.02)
    assert driver.launched == 0  # less than a cold start's time: it waits for its own container
    agent.release(busy)  # the running call ends: its container goes to the waiter
    assert await waiter is busy
    await asyncio.sleep(0.1)
    assert driver.launched == 0  # the deferred check found nobody left waiting


async def test_a_long_wait_still_gets_a_container_launched(tmp_path):
    agent, driver = make_agent(tmp_path, 1024, non_blocking=True)
    call = Call(id="c", fn_id="f", image="img", memory=128)
    agent.launch_s = 0.05
    slot_with_busy_container(agent, call)
    waiter = asyncio.create_task(agent.acquire(call, slot_key(call), {}))
    await asyncio.sleep(0.15)
    assert driver.launched == 1  # waited a cold start's time in vain: now one is launched
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
