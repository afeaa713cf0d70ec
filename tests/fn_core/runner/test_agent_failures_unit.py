"""What the agent does when a starting container dies, the driver cannot say how a container ended, or the
caller goes away before its call reaches the container: with a fake driver (fast; the Docker tests cover the rest)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

from fn_core.config import load_config
from fn_core.errors import (
    ContainerExited,
    ContainerInitTimeout,
    CutAtShutdown,
    FunctionResponseError,
    RunnerOutOfResources,
    ServerTooBusy,
)
from fn_core.models import Call, slot_key
from fn_core.runner import agent as agent_module
from fn_core.runner.agent import EXIT_WAIT_S, Agent
from fn_core.runner.driver import ExitStatus
from fn_core.runner.resources import MB, Budget
from fn_core.runner.slots import HotContainer, Relay
from fn_core.runner.uds import SOCKET_NAME, ContainerBroken


class FakeDriver:
    """Containers that come up (a socket appears in their dir after ``ready_after_s``) or crash while starting
    (``wait_exit`` answers ``start_exit`` after ``crash_after_s``); ``exit_status`` answers ``exit`` (or raises it)."""

    def __init__(self, *, ready_after_s: float | None = 0.01, crash_after_s: float | None = None,
                 start_exit: ExitStatus | Exception | None = None, exit: ExitStatus | Exception | None = None) -> None:
        self.ready_after_s = ready_after_s
        self.crash_after_s = crash_after_s
        self.start_exit = start_exit
        self.exit = exit
        self.launched: list[str] = []
        self.removed: list[str] = []
        self.exit_waits: list[float] = []  # the wait_s of each exit_status asked
        self.refuse_removals = 0  # how many removals fail (the engine down) before they work
        self.watches_cancelled: list[str] = []
        self.sockets: list[socket.socket] = []

    async def launch(self, call, extensions, iofs_dir, env):
        container_id = f"c{len(self.launched) + 1}"
        self.launched.append(container_id)
        if self.ready_after_s is not None:
            asyncio.get_running_loop().call_later(self.ready_after_s, self._listen, iofs_dir)
        return container_id

    def _listen(self, iofs_dir: str) -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(os.path.join(iofs_dir, SOCKET_NAME))
        sock.listen()  # connections wait in its backlog: enough for the agent to open one
        self.sockets.append(sock)

    async def wait_exit(self, container_id):
        try:
            if self.crash_after_s is None:
                await asyncio.Event().wait()
            await asyncio.sleep(self.crash_after_s)
        except asyncio.CancelledError:
            self.watches_cancelled.append(container_id)
            raise
        if isinstance(self.start_exit, Exception):
            raise self.start_exit
        return self.start_exit

    async def exit_status(self, container_id, wait_s):
        self.exit_waits.append(wait_s)
        if isinstance(self.exit, Exception):
            raise self.exit
        return self.exit

    async def remove(self, container_id):
        if self.refuse_removals:
            self.refuse_removals -= 1
            raise ConnectionError("the engine does not answer")
        self.removed.append(container_id)

    async def pause(self, container_id):
        pass

    async def unpause(self, container_id):
        pass

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
async def make_agent(tmp_path):
    """``make_agent(driver)``: an agent with 1 GiB for containers and a 30 s start timeout, closed after the test."""
    made: list[tuple[Agent, FakeDriver]] = []

    def _make(driver: FakeDriver) -> Agent:
        config = load_config(env={}, overrides={"iofs_path": str(tmp_path), "hot_start_timeout_msecs": 30000})
        agent = Agent(config, driver, budget=Budget(total_memory=1024 * MB, total_mcpus=4000))
        made.append((agent, driver))
        return agent

    yield _make
    for agent, driver in made:
        await agent.close()
        driver.close()


def a_call(**kwargs) -> Call:
    return Call(**{"id": "call1", "app_id": "app1", "fn_id": "fn1", "image": "img", "memory": 128, "timeout": 5, **kwargs})


async def nothing(*args) -> None:
    pass


async def settled(agent: Agent) -> None:
    """Until the agent's background work (removals) is done."""
    while agent._tasks:
        await asyncio.gather(*list(agent._tasks), return_exceptions=True)
        await asyncio.sleep(0)  # their done callbacks (which take them out of the set) run now, on Python 3.12 too


# --- a container that exits while it starts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("exit", "message"),
    [(ExitStatus(1), "container exit code 1"), (ExitStatus(137, oom_killed=True), "container out of memory")],
)
async def test_a_container_that_exits_while_starting_fails_its_call_at_once_with_how_it_ended(make_agent, exit, message):
    driver = FakeDriver(ready_after_s=None, crash_after_s=0.05, start_exit=exit)
    agent = make_agent(driver)
    call = a_call()
    began = asyncio.get_running_loop().time()
    with pytest.raises(ContainerExited) as caught:
        await agent.run(call, slot_key(call), {}, b"x", nothing, nothing)
    assert asyncio.get_running_loop().time() - began < 5  # not at the start timeout (30 s)
    assert (caught.value.status, caught.value.message, caught.value.user_error) == (502, message, True)
    await settled(agent)
    assert driver.removed == ["c1"] and agent.containers() == [] and agent.queues == {}
    assert agent.budget.used_memory == 0
    assert os.listdir(agent.socket_dirs.root) == []  # its socket dir went with it
    assert agent.metrics.launches_by_result == {"ok": 0, "failed": 1}
    assert agent.metrics.exits_by_code == {"oom" if exit.oom_killed else "1": 1}


async def test_a_container_whose_socket_comes_first_is_served_and_no_longer_watched(make_agent):
    driver = FakeDriver(ready_after_s=0.02)
    agent = make_agent(driver)
    call = a_call()
    container = await agent.acquire(call, slot_key(call), {})
    assert container.id == "c1"
    await asyncio.sleep(0)
    assert driver.watches_cancelled == ["c1"]  # the driver may let go of what it watched the start with
    agent.release(container)
    await agent.close()


@pytest.mark.parametrize("cannot_tell", [None, OSError("engine hiccup")])
async def test_when_the_driver_cannot_tell_an_exit_the_socket_still_decides(make_agent, cannot_tell, caplog):
    driver = FakeDriver(ready_after_s=0.1, crash_after_s=0.0, start_exit=cannot_tell)
    agent = make_agent(driver)
    call = a_call()
    container = await agent.acquire(call, slot_key(call), {})
    assert container.id == "c1" and agent.metrics.launches_by_result["ok"] == 1
    if cannot_tell is not None:
        assert "could not learn whether starting container c1 exited: OSError('engine hiccup')" in caplog.text
    agent.release(container)
    await agent.close()


async def test_a_start_that_never_ends_is_still_the_start_timeout(tmp_path):
    config = load_config(env={}, overrides={"iofs_path": str(tmp_path), "hot_start_timeout_msecs": 100})
    driver = FakeDriver(ready_after_s=None)
    agent = Agent(config, driver, budget=Budget(total_memory=1024 * MB, total_mcpus=4000))
    call = a_call()
    with pytest.raises(ContainerInitTimeout):
        await agent.run(call, slot_key(call), {}, b"x", nothing, nothing)
    assert driver.watches_cancelled == ["c1"]
    await settled(agent)
    assert driver.removed == ["c1"]


# --- the caller gone before its call reached the container ---------------------------------------------


async def test_a_caller_gone_while_its_call_is_committed_leaves_the_container_idle_and_its_room_reserved_once(make_agent):
    """A detached call's 202 is sent once a container is taken; a lost LB connection fails that send (or cancels it,
    waiting for flow control). The container saw nothing of the call: it stays in service, not busy for ever."""
    driver = FakeDriver()
    agent = make_agent(driver)
    call = a_call(type="detached")
    key = slot_key(call)

    async def send_fails() -> None:
        raise RuntimeError("stream gone")

    with pytest.raises(RuntimeError, match="stream gone"):
        await agent.run(call, key, {}, b"x", nothing, nothing, send_fails)
    assert agent.container_states() == {"starting": 0, "busy": 0, "idle": 1, "paused": 0}

    committing = asyncio.Event()

    async def send_waits() -> None:
        committing.set()
        await asyncio.Event().wait()  # the HTTP/2 window never opens

    run = asyncio.create_task(agent.run(call, key, {}, b"x", nothing, nothing, send_waits))
    await committing.wait()
    assert agent.container_states()["busy"] == 1
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    assert agent.container_states() == {"starting": 0, "busy": 0, "idle": 1, "paused": 0}
    assert driver.launched == ["c1"] and agent.budget.used_memory == 128 * MB  # one container, reserved once
    [container] = agent.containers()
    assert await agent.acquire(call, key, {}) is container  # and it serves the next call
    agent.release(container)
    await agent.close()


# --- how a dead container ended cannot be read ----------------------------------------------------------


class BrokenConnection:
    """A hot container's connection whose process died: the call fails, and it cannot be opened again."""

    open = False
    failure = ContainerBroken("connection reset by peer")

    async def call(self, *args) -> None:
        raise self.failure

    async def reopen(self) -> bool:
        return False

    async def close(self) -> None:
        pass


def container_in_service(agent: Agent, call: Call, conn=None) -> HotContainer:
    """A container of the call's slot with a socket dir of its own, taken out of `acquire`'s hands (busy)."""
    queue = agent._new_queue(slot_key(call), call, {})
    agent.queues[queue.key] = queue
    container = HotContainer(id="dead1", queue=queue, iofs_dir=agent.socket_dirs.make(), conn=conn or BrokenConnection(),
                             memory=128 * MB, mcpus=0, idle_timeout_s=30)
    queue.containers.add(container)
    assert agent.budget.try_reserve(128 * MB, 0)
    return container


async def test_a_container_that_broke_mid_call_is_removed_and_the_call_is_a_502_when_its_end_cannot_be_read(make_agent):
    driver = FakeDriver(exit=OSError("404 No such container (inspect after wait)"))
    agent = make_agent(driver)
    call = a_call()
    container = container_in_service(agent, call)
    with pytest.raises(ContainerExited) as caught:
        await agent._exchange(container, call, b"x", Relay(nothing, nothing))
    assert (caught.value.status, caught.value.message) == (502, "container exit code unknown")
    await settled(agent)
    assert driver.removed == ["dead1"]
    assert os.listdir(agent.socket_dirs.root) == []
    assert agent.budget.used_memory == 0


async def test_a_container_found_dead_while_idle_is_removed_when_its_end_cannot_be_read(make_agent, caplog):
    driver = FakeDriver(exit=OSError("500 Server Error"))
    agent = make_agent(driver)
    call = a_call()
    container = container_in_service(agent, call)
    agent.release(container)  # idle; its process dies there
    fresh = await agent.acquire(call, slot_key(call), {})  # finds it dead: a fresh one instead, no 502
    assert fresh.id == "c1"
    await settled(agent)
    assert driver.removed == ["dead1"] and not os.path.exists(container.iofs_dir)
    assert "hot container dead1 of fn fn1 is gone, how unknown while idle" in caplog.text
    agent.release(fresh)
    await agent.close()


async def test_a_container_found_dead_while_idle_that_the_engine_would_not_remove_keeps_its_memory(make_agent, monkeypatch,
                                                                                                   caplog):
    """As any container the engine refused to remove: the engine could not tell it had ended, so it may still run."""
    monkeypatch.setattr(agent_module, "REMOVE_RETRY_S", (0.2,))
    driver = FakeDriver(exit=None)
    driver.refuse_removals = 1
    agent = make_agent(driver)
    call = a_call()
    container = container_in_service(agent, call)
    agent.release(container)  # idle; its connection is found dead at the next call
    fresh = await agent.acquire(call, slot_key(call), {})
    async with asyncio.timeout(5):
        while "could not remove container dead1" not in caplog.text:
            await asyncio.sleep(0.01)
    assert "its 128 MB held meanwhile" in caplog.text and agent.budget.used_memory == 2 * 128 * MB
    async with asyncio.timeout(5):
        while driver.removed != ["dead1"]:
            await asyncio.sleep(0.01)
    assert agent.budget.used_memory == 128 * MB  # the fresh one's alone
    agent.release(fresh)


# --- a live container that answers badly ---------------------------------------------------------------


async def test_a_container_that_spoke_bad_http_is_fns_response_error_at_once_with_the_detail_in_the_log(make_agent, caplog):
    driver = FakeDriver(exit=None)  # still running
    agent = make_agent(driver)
    call = a_call()
    conn = BrokenConnection()
    conn.failure = ContainerBroken("HttpProcessingError: 400, message: Bad status line b'THIS IS NOT HTTP'", spoke_bad_http=True)
    container = container_in_service(agent, call, conn)
    with pytest.raises(FunctionResponseError) as caught:
        await agent._exchange(container, call, b"x", Relay(nothing, nothing))
    # Fn's words for the client; what the container sent is the operator's, in the runner's log
    assert (caught.value.status, caught.value.message) == (502, "error receiving function response")
    assert "hot container dead1 of fn fn1 answered call call1 badly: HttpProcessingError" in caplog.text
    assert driver.exit_waits == [0.0]  # alive: asked once, no wait for an exit that is not coming
    assert agent.metrics.retired_by_reason["bad_response"] == 1
    await settled(agent)
    assert driver.removed == ["dead1"]


async def test_a_connection_lost_mid_call_gives_the_container_time_to_be_seen_exiting(make_agent):
    driver = FakeDriver(exit=ExitStatus(9))
    agent = make_agent(driver)
    call = a_call()
    container = container_in_service(agent, call)
    with pytest.raises(ContainerExited, match="container exit code 9"):
        await agent._exchange(container, call, b"x", Relay(nothing, nothing))
    assert driver.exit_waits == [EXIT_WAIT_S]
    assert agent.metrics.retired_by_reason["exited"] == 1


# --- removals the engine refuses, and a stop -----------------------------------------------------------


async def test_a_removal_the_engine_refuses_is_tried_again_until_it_works(make_agent, monkeypatch, caplog):
    monkeypatch.setattr(agent_module, "REMOVE_RETRY_S", (0.01, 0.02))
    caplog.set_level(logging.INFO, logger="fn_core.runner.agent")
    driver = FakeDriver(exit=OSError("engine down"))
    driver.refuse_removals = 3  # the first removal, and two retries
    agent = make_agent(driver)
    call = a_call()
    container = container_in_service(agent, call)
    with pytest.raises(ContainerExited):
        await agent._exchange(container, call, b"x", Relay(nothing, nothing))
    await asyncio.sleep(0.02)
    assert driver.removed == [] and os.path.exists(container.iofs_dir)  # its dir stays while it may still run
    await settled(agent)
    assert driver.removed == ["dead1"] and not os.path.exists(container.iofs_dir)
    assert caplog.text.count("could not remove container dead1") == 1  # said once, not at every try
    assert "removed container dead1 at last" in caplog.text


async def test_a_container_the_engine_would_not_remove_keeps_its_memory_until_it_is_removed(make_agent, monkeypatch, caplog):
    """It may still run: a new container that would not fit beside it waits for its removal, not the engine's OOM."""
    monkeypatch.setattr(agent_module, "REMOVE_RETRY_S", (0.2, 0.2))
    driver = FakeDriver()
    driver.refuse_removals = 2  # the first removal, and one retry
    agent = make_agent(driver)  # 1 GiB
    first, other = a_call(memory=1024), a_call(id="call2", fn_id="fn2", memory=1024)
    container = await agent.acquire(first, slot_key(first), {})
    agent.retire(container, "evicted")
    await asyncio.sleep(0.05)
    assert driver.removed == [] and agent.budget.used_memory == 1024 * MB  # refused: held again
    assert "could not remove container c1 (ConnectionError('the engine does not answer')): trying again, its 1024 MB" \
        " held meanwhile" in caplog.text
    waiting = asyncio.create_task(agent.acquire(other, slot_key(other), {}))
    await asyncio.sleep(0.2)
    assert not waiting.done() and driver.launched == ["c1"]  # no room while c1 may still run
    async with asyncio.timeout(5):
        second = await waiting  # after the retry that works
    assert driver.removed == ["c1"] and driver.launched == ["c1", "c2"] and second.id == "c2"
    assert agent.budget.used_memory == 1024 * MB  # c2's alone
    agent.release(second)


async def test_a_stop_tries_a_refused_removal_once_more_and_does_not_wait_for_the_engine(make_agent, monkeypatch):
    monkeypatch.setattr(agent_module, "REMOVE_RETRY_S", (30.0,))
    driver = FakeDriver(exit=OSError("engine down"))
    driver.refuse_removals = 1
    agent = make_agent(driver)
    call = a_call()
    with pytest.raises(ContainerExited):
        await agent._exchange(container_in_service(agent, call), call, b"x", Relay(nothing, nothing))
    await asyncio.sleep(0.01)
    async with asyncio.timeout(2):  # not the 30 s retry wait
        await agent.close()
    assert driver.removed == ["dead1"]


async def test_a_stop_does_not_wait_for_a_container_still_starting(make_agent):
    driver = FakeDriver(ready_after_s=None)  # never ready: the start timeout is 30 s
    agent = make_agent(driver)
    call = a_call()
    waiting = asyncio.create_task(agent.run(call, slot_key(call), {}, b"x", nothing, nothing))
    while not driver.launched:
        await asyncio.sleep(0.01)
    async with asyncio.timeout(2):
        await agent.close()
        with pytest.raises(ServerTooBusy):  # the NACK: nothing of the call ran
            await waiting
    assert driver.removed == ["c1"] and agent.budget.used_memory == 0


class HangingConnection:
    """A hot container busy with a call that does not end before the runner's stop."""

    open = True

    async def call(self, *args) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


async def test_calls_cut_at_the_end_of_a_stops_grace_end_with_their_own_error_never_the_nack(make_agent):
    driver = FakeDriver()
    agent = make_agent(driver)
    call = a_call(timeout=30)
    container = container_in_service(agent, call, HangingConnection())
    ended: list[Exception | None] = []

    async def on_end(outcome):
        ended.append(outcome)

    running = asyncio.create_task(agent._exchange(container, call, b"x", Relay(nothing, nothing, on_end)))
    await asyncio.sleep(0.01)
    agent.begin_shutdown()
    agent.cut_running_calls()
    with pytest.raises(CutAtShutdown) as caught:
        await asyncio.wait_for(running, 1)
    # 500, not 503: a 503 before any answer would be the NACK, and the LB would run the call again elsewhere
    assert (caught.value.status, caught.value.message) == (500, "call cut short: the runner is shutting down")
    assert ended == [caught.value]  # its `finished` goes out with it
    assert container.state == "retired" and agent.metrics.retired_by_reason["shutdown"] == 1


@pytest.mark.parametrize("non_blocking", [False, True])
async def test_the_slot_of_a_call_that_gave_up_or_was_refused_is_not_kept(tmp_path, non_blocking):
    """A runner sees fns come and go for months: a slot that never got a container is forgotten with its last call."""
    config = load_config(env={}, overrides={"iofs_path": str(tmp_path), "enable_nb_resource_tracker": non_blocking})
    driver = FakeDriver()
    agent = Agent(config, driver, budget=Budget(total_memory=128 * MB, total_mcpus=4000))
    busy = container_in_service(agent, a_call(fn_id="fn-busy"), HangingConnection())  # all the memory
    for i in range(20):
        call = a_call(id=f"call{i}", fn_id=f"fn{i}")
        waiting = asyncio.create_task(agent.acquire(call, slot_key(call), {}))
        await asyncio.sleep(0.01)
        if not non_blocking:  # blocking: it waits for room, until its caller gives up
            waiting.cancel()
        with pytest.raises((asyncio.CancelledError, ServerTooBusy)):  # non-blocking: refused at once (the NACK)
            await waiting
    assert list(agent.queues) == [busy.queue.key] and agent._starved == {}
    assert driver.launched == []
    agent.retire(busy, "shutdown")
    await agent.close()


# --- a runner out of disk space -----------------------------------------------------------------------
class FullDiskDriver(FakeDriver):
    """A driver whose engine's disk is full for the first ``full_for`` launches."""

    def __init__(self, full_for: int) -> None:
        super().__init__()
        self.full_for = full_for

    async def launch(self, call, extensions, iofs_dir, env):
        if self.full_for:
            self.full_for -= 1
            raise RunnerOutOfResources("the Docker engine's disk is full")
        return await super().launch(call, extensions, iofs_dir, env)


async def test_a_call_refused_for_a_full_disk_is_nacked_and_waits_a_pause_when_it_comes_back(make_agent, monkeypatch):
    monkeypatch.setattr(agent_module, "CANNOT_LAUNCH_PAUSE_S", 0.3)
    agent = make_agent(FullDiskDriver(full_for=1))
    call = a_call()
    with pytest.raises(RunnerOutOfResources):  # the NACK: nothing ran
        await agent.acquire(call, slot_key(call), {})
    assert agent.metrics.launches_refused == {"engine_unavailable": 0, "out_of_resources": 1}
    assert agent.metrics.launches_by_result == {"ok": 0, "failed": 0}
    assert agent.shortage.refused == 1

    loop = asyncio.get_running_loop()
    began = loop.time()
    container = await agent.acquire(call, slot_key(call), {})  # every runner refused it: it is back, after a pause
    assert loop.time() - began >= 0.3
    assert agent.metrics.launches_by_result["ok"] == 1 and agent.shortage.since is None
    agent.release(container)
