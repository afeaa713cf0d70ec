"""Slot-queue and budget decisions with a fake driver (fast; the real-Docker tests cover the rest)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from fn_core.config import load_config
from fn_core.errors import CallResourceTooBig, ServerTooBusy
from fn_core.models import Call, now_rfc3339, slot_key
from fn_core.runner.agent import Agent
from fn_core.runner.resources import MB, Budget
from fn_core.runner.slots import HotContainer, SlotQueue


class HangingDriver:
    """Launches never finish: lets a test look at what the agent decided to start."""

    def __init__(self) -> None:
        self.launched = 0

    async def launch(self, call, extensions, iofs_dir, env):
        self.launched += 1
        await asyncio.Event().wait()

    async def remove(self, container_id):
        pass


def make_agent(tmp_path, memory_mb: int, *, non_blocking: bool, evict_min_idle_ms: int = 1000) -> tuple[Agent, HangingDriver]:
    overrides = {"iofs_path": str(tmp_path), "enable_nb_resource_tracker": non_blocking, "evict_min_idle_msecs": evict_min_idle_ms}
    config = load_config(env={}, overrides=overrides)
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


class FakeConnection:
    open = True  # a live container's keep-alive connection

    async def close(self) -> None:
        pass


def slot_with_busy_container(agent: Agent, call: Call, container_id: str = "c1") -> HotContainer:
    """A slot whose one container is serving a call."""
    key = slot_key(call)
    queue = agent.queues[key] = SlotQueue(key=key, call=call, extensions={})
    busy = HotContainer(id=container_id, queue=queue, iofs_dir="/nonexistent", conn=FakeConnection(), memory=128 * MB,
                        mcpus=0, idle_timeout_s=3600)
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


def test_a_long_wait_gets_its_launch_on_uvloop_too(tmp_path):
    """The servers run on uvloop, whose clock and timers tick in whole ms: a timer set for a time between
    two ticks often fires a little before that time by the loop's own clock (about 1 in 3 here)."""

    async def scenario() -> None:
        launched = []
        for i in range(12):
            agent, driver = make_agent(tmp_path, 1024, non_blocking=True)
            call = Call(id="c", fn_id="f", image="img", memory=128)
            slot_with_busy_container(agent, call)
            agent.launch_s = 0.02 + 0.0001 * (i + 1)  # cold-start estimates are averages, never whole ms
            waiter = asyncio.create_task(agent.acquire(call, slot_key(call), {}))
            await asyncio.sleep(0.05)
            launched.append(driver.launched)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        assert launched == [1] * 12  # every call that waited a cold start's time in vain got a launch

    uvloop.run(scenario())


async def serve_in_turn(agent: Agent, call: Call, container: HotContainer, calls: int, wait_s: float) -> HotContainer:
    """Calls one after another, each waiting `wait_s` for the busy container (a closed loop of 2 clients)."""
    for _ in range(calls):
        waiter = asyncio.create_task(agent.acquire(call, slot_key(call), {}))
        await asyncio.sleep(wait_s)
        agent.release(container)  # the running call ends; the waiter takes the container
        container = await waiter
    return container


async def backlog_of_60ms(tmp_path) -> tuple[Agent, HangingDriver, Call, HotContainer]:
    """A slot whose cold start takes 100 ms, after two calls that each waited 30 ms for its one container."""
    agent, driver = make_agent(tmp_path, 1024, non_blocking=True)
    call = Call(id="c", fn_id="f", image="img", memory=128)
    agent.launch_s = 0.1
    container = slot_with_busy_container(agent, call)
    return agent, driver, call, await serve_in_turn(agent, call, container, 2, 0.03)


async def test_a_backlog_gets_a_launch_once_its_waits_add_up_to_a_cold_start(tmp_path):
    """No single wait is long, but a steady backlog pays their sum: once that reaches a cold start, buy."""
    agent, driver, call, container = await backlog_of_60ms(tmp_path)
    assert driver.launched == 0  # 60 ms of waiting so far: less than a cold start
    await serve_in_turn(agent, call, container, 2, 0.03)
    assert driver.launched == 1  # 120 ms: one container more


async def test_a_backlog_ends_when_a_container_goes_idle_with_nobody_waiting(tmp_path):
    agent, driver, call, container = await backlog_of_60ms(tmp_path)
    agent.release(container)  # nobody waiting: idle, the backlog is over
    container = await agent.acquire(call, slot_key(call), {})
    await serve_in_turn(agent, call, container, 2, 0.03)
    assert driver.launched == 0  # 60 ms + 60 ms, but in two backlogs


def idle_container(agent: Agent, fn_id: str, idle_for_s: float) -> HotContainer:
    """A container of its own slot, idle for that long."""
    container = slot_with_busy_container(agent, Call(id="c-" + fn_id, fn_id=fn_id, image="img", memory=128), fn_id)
    agent.release(container)
    container.idle_since -= idle_for_s
    return container


def live(agent: Agent) -> set[str]:
    return {c.id for c in agent.containers()}


async def test_non_blocking_eviction_takes_only_containers_gone_cold_and_otherwise_nacks(tmp_path):
    agent, driver = make_agent(tmp_path, 256, non_blocking=True, evict_min_idle_ms=500)
    idle_container(agent, "cold", idle_for_s=2.0)
    idle_container(agent, "warm", idle_for_s=0.0)
    new = Call(id="n", fn_id="new", image="img", memory=128, created_at=now_rfc3339())
    first = asyncio.create_task(agent.acquire(new, slot_key(new), {}))
    await asyncio.sleep(0.01)
    assert live(agent) == {"warm"} and driver.launched == 1  # the cold one made room
    other = Call(id="o", fn_id="other", image="img", memory=128, created_at=now_rfc3339())
    with pytest.raises(ServerTooBusy):  # only a warm container is left: the LB should try another runner
        await agent.acquire(other, slot_key(other), {})
    assert live(agent) == {"warm"} and driver.launched == 1
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


async def test_a_call_refused_for_long_enough_may_evict_a_warm_container(tmp_path):
    agent, driver = make_agent(tmp_path, 128, non_blocking=True, evict_min_idle_ms=300)
    idle_container(agent, "warm", idle_for_s=0.0)
    # stamped long ago by an LB whose clock runs behind ours: not a reason to evict on its first try here
    call = Call(id="s", fn_id="new", image="img", memory=128, created_at="2020-01-01T00:00:00.000Z")
    with pytest.raises(ServerTooBusy):
        await agent.acquire(call, slot_key(call), {})
    assert live(agent) == {"warm"} and driver.launched == 0
    await asyncio.sleep(0.1)
    with pytest.raises(ServerTooBusy):  # back 0.1 s later (the LB's next pass): still refused
        await agent.acquire(call, slot_key(call), {})
    await asyncio.sleep(0.25)
    waiter = asyncio.create_task(agent.acquire(call, slot_key(call), {}))  # refused here for 0.35 s now
    await asyncio.sleep(0.01)
    assert live(agent) == set() and driver.launched == 1  # the warm one gave way: this call waited long enough
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)


async def test_blocking_mode_evicts_the_container_idle_the_longest(tmp_path):
    agent, driver = make_agent(tmp_path, 256, non_blocking=False)
    idle_container(agent, "recent", idle_for_s=0.0)
    idle_container(agent, "oldest", idle_for_s=5.0)
    new = Call(id="n", fn_id="new", image="img", memory=128, created_at=now_rfc3339())
    waiter = asyncio.create_task(agent.acquire(new, slot_key(new), {}))
    await asyncio.sleep(0.01)
    assert live(agent) == {"recent"} and driver.launched == 1  # no other runner to go to: any idle one may go
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)


class PausingDriver(HangingDriver):
    def __init__(self) -> None:
        super().__init__()
        self.paused: list[str] = []
        self.removed: list[str] = []

    async def pause(self, container_id):
        self.paused.append(container_id)

    async def remove(self, container_id):
        self.removed.append(container_id)


async def test_an_idle_container_used_again_is_paused_and_reaped_counting_from_its_last_call(tmp_path):
    """The idle checks armed when it first went idle fire while it is busy or freshly idle again:
    they wait on, and pausing and reaping still come FN_FREEZE_IDLE_MSECS and its idle timeout after the last call."""
    config = load_config(env={}, overrides={"iofs_path": str(tmp_path), "freeze_idle_msecs": 300})
    driver = PausingDriver()
    agent = Agent(config, driver, budget=Budget(total_memory=1024 * MB, total_mcpus=4000))
    call = Call(id="c", fn_id="f", image="img", memory=128)
    container = slot_with_busy_container(agent, call)
    container.idle_timeout_s = 0.9
    agent.release(container)  # idle at t0: a pause check for t0 + 0.3, a reap check for t0 + 0.9
    await asyncio.sleep(0.15)
    assert await agent.acquire(call, slot_key(call), {}) is container  # busy across t0 + 0.3
    await asyncio.sleep(0.3)
    agent.release(container)  # idle again at t1 = t0 + 0.45
    await asyncio.sleep(0.15)
    assert driver.paused == []  # t1 + 0.15: not idle for 0.3 s yet
    await asyncio.sleep(0.3)
    assert driver.paused == [container.id]  # t1 + 0.45
    await asyncio.sleep(0.15)
    assert container.state == "idle"  # t1 + 0.6 = t0 + 1.05: the reap check of t0 + 0.9 waited on
    await asyncio.sleep(0.5)
    assert container.state == "retired" and driver.removed == [container.id]  # t1 + 1.1


def test_a_driver_that_cannot_hand_over_output_is_named_at_start_and_output_stays_off(tmp_path, caplog):
    config = load_config(env={}, overrides={"iofs_path": str(tmp_path), "max_log_size_bytes": 500})
    agent = Agent(config, HangingDriver(), function_output=True)  # its launch() has no ``output``
    assert agent.output_limit is None
    assert "driver HangingDriver cannot hand over its containers' output" in caplog.text

    class OutputDriver(HangingDriver):
        async def launch(self, call, extensions, iofs_dir, env, output=None):
            await super().launch(call, extensions, iofs_dir, env)

    assert Agent(config, OutputDriver(), function_output=True).output_limit == 500
