"""A runner whose Docker engine stops, restarts or hangs: `fn-core lb` + `fn-core runner`s, real Docker, the fdk echo fn.

The runner under test reaches the engine through a unix-socket relay (its DOCKER_HOST, `engine_relay`): taking the
relay down is what a stopped or restarting dockerd looks like to it (the socket gone, connections cut), and holding
every byte what a hung one looks like, without touching the engine other tests share.
"""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest

from fn_plugins_builtin.engine_outage import RETRY_S

from .engine_relay import broken_and_healthy, call_lines, fn_homed_on, placed_elsewhere

DOWN = "the Docker engine does not answer"
BACK = "the Docker engine answers again"
TIMEOUT = aiohttp.ClientTimeout(total=60)


async def runs_at_home_again(session: aiohttp.ClientSession, app_id: str, image: str, lb, broken, calls_before: int) -> None:
    """Once the runner tries the engine again, a new fn homed on it starts there, at the first attempt."""
    await asyncio.sleep(RETRY_S)
    back = await fn_homed_on(session, app_id, image, 0, 2, "back-")
    async with session.post(f"/invoke/{back}", data=b"home again") as r:
        assert (r.status, await r.read()) == (200, b"home again")
    assert (await call_lines(lb, calls_before + 1))[back] == (broken.address, 200, 1)
    assert BACK in broken.proc.log()


async def test_a_runner_whose_engine_is_down_nacks_cold_starts_and_the_lb_places_them_on_another(platform, deploy_echo, relay):
    broken, healthy, lb = await broken_and_healthy(platform, relay)
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        app_id = (await deploy_echo(s, platform.image))["app"]["id"]
        await relay.down()
        await placed_elsewhere(s, lb, app_id, platform.image, broken, healthy, DOWN, "engine_unavailable")

        await relay.up()  # the engine is back
        await runs_at_home_again(s, app_id, platform.image, lb, broken, 3)


async def test_a_hung_engine_is_found_by_a_ping_and_its_runners_cold_starts_go_elsewhere(platform, deploy_echo, relay):
    broken, healthy, lb = await broken_and_healthy(platform, relay)
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        app_id = (await deploy_echo(s, platform.image))["app"]["id"]
        relay.hung = True  # connections taken, nothing answered: the SDK alone would wait 60 s
        first, then = [await fn_homed_on(s, app_id, platform.image, 0, 2, f"hung{n}-") for n in range(2)]
        began = asyncio.get_running_loop().time()
        async with s.post(f"/invoke/{first}", data=b"not left waiting") as r:
            assert (r.status, await r.read()) == (200, b"not left waiting")
        # the create unanswered for ENGINE_SLOW_S (5 s), then a ping for PING_TIMEOUT_S (2 s): not the SDK's 60 s
        assert asyncio.get_running_loop().time() - began < 30
        async with s.post(f"/invoke/{then}", data=b"at once") as r:  # refused without asking the engine
            assert (r.status, await r.read()) == (200, b"at once")
        lines = await call_lines(lb, 2)
        assert [lines[first], lines[then]] == [(healthy.address, 200, 2)] * 2
        log = broken.proc.log()
        assert log.count(DOWN) == 1 and "no answer in 5 s, nor to a ping" in log and "failed to start" not in log

        await relay.down()  # the engine answers again
        await relay.up()
        await runs_at_home_again(s, app_id, platform.image, lb, broken, 2)


async def test_a_runner_stops_in_seconds_while_its_engine_hangs_and_says_what_it_left(platform, deploy_echo, relay):
    runner = await platform.runner(DOCKER_HOST=f"unix://{relay.path}")
    lb = await platform.lb([runner])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        async with s.post(f"/invoke/{fn_id}", data=b"warm") as r:  # a hot container for the stop to remove
            assert r.status == 200
    lb.proc.stop()
    relay.hung = True
    loop = asyncio.get_running_loop()
    began = loop.time()
    # its removal unanswered for ENGINE_SLOW_S, a ping for PING_TIMEOUT_S: 7 s, where the SDK alone waited 60 s for
    # the removal, 60 more for the look for what was left, and the exit for its threads
    assert await loop.run_in_executor(None, runner.proc.stop) == 0
    assert loop.time() - began < 30
    log = runner.proc.log()
    assert "could not remove container" in log and "those it made carry the label fn-agent-instance=" in log


@pytest.mark.parametrize("topology", ["split", "serve"])
async def test_a_call_waits_out_an_engine_restart_on_the_only_runner_and_runs_once_it_answers(
    platform, deploy_echo, relay, topology
):
    if topology == "split":
        runner = await platform.runner(DOCKER_HOST=f"unix://{relay.path}")
        lb = await platform.lb([runner])
    else:  # the all-in-one node: its LB and its runner in one process
        runner = lb = await platform.serve(DOCKER_HOST=f"unix://{relay.path}")
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        await relay.down()

        async def invoke() -> tuple[int, bytes]:
            async with s.post(f"/invoke/{fn_id}", data=b"after the restart") as r:
                return r.status, await r.read()

        call = asyncio.ensure_future(invoke())
        await asyncio.sleep(3)
        assert not call.done()  # waiting for a runner, not failed
        await relay.up()
        assert await asyncio.wait_for(call, 30) == (200, b"after the restart")
    [(_, status, attempts)] = (await call_lines(lb, 1)).values()
    # NACKed while the engine was away, at most about once a second (not every FN_RETRY_ALL_DELAY_MSECS, 10 ms)
    assert status == 200 and 2 <= attempts <= 6
    log = runner.proc.log()
    assert log.count(DOWN) == 1 and log.count(BACK) == 1 and "failed to start" not in log


async def test_launches_stuck_on_a_hung_engine_leave_the_runners_other_work_alone(platform, deploy_echo, relay):
    """Each create on a hung engine holds its thread until the SDK's 60 s: more of them than the loop's default
    executor has threads must not hold up what else the runner does in threads (its /metrics here)."""
    broken, healthy, lb = await broken_and_healthy(platform, relay)
    stuck = min(32, (os.cpu_count() or 1) + 4) + 2  # past the default executor's threads (asyncio's own formula)
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        app_id = (await deploy_echo(s, platform.image))["app"]["id"]
        homed = [await fn_homed_on(s, app_id, platform.image, 0, 2, f"stuck{n}-") for n in range(stuck)]
        relay.hung = True

        async def invoke(fn_id: str) -> tuple[int, bytes]:
            async with s.post(f"/invoke/{fn_id}", data=b"placed elsewhere") as r:
                return r.status, await r.read()

        calls = [asyncio.ensure_future(invoke(fn_id)) for fn_id in homed]
        await asyncio.sleep(2)  # every launch is in its thread, on the hung engine
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with aiohttp.ClientSession(broken.url) as direct, direct.get("/metrics") as r:
            assert r.status == 200 and "fn_process_cpu_seconds_total" in await r.text()
        assert loop.time() - began < 5  # not after the SDK's 60 s
        assert await asyncio.gather(*calls) == [(200, b"placed elsewhere")] * stuck


async def test_a_container_the_engine_would_not_remove_after_a_failed_launch_goes_once_it_relents(
    platform, deploy_echo, relay, docker_client
):
    """The engine refuses a new container's start (the call's 500), then its removal three times: the container
    was left, unknown to the runner, until the runner stopped. It is now tried again, and gone while the runner runs."""
    tag = platform.tag()
    runner = await platform.runner(DOCKER_HOST=f"unix://{relay.path}", FN_CONTAINER_LABEL_TAG=tag)
    lb = await platform.lb([runner])
    relay.refuse("POST", "/start", "OCI runtime create failed: refused by the test", times=1)
    relay.refuse("DELETE", "/containers/", "could not kill running container: refused by the test", times=3)

    def ours() -> list:
        return docker_client.containers.list(all=True, filters={"label": f"fn-agent-classifier={tag}"})

    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        async with s.post(f"/invoke/{fn_id}", data=b"x") as r:
            assert r.status == 500
            assert (await r.json())["message"] == "could not start the container: OCI runtime create failed: refused by the test"
        assert len(ours()) == 1  # made, not started, and not removed
        for _ in range(150):  # bounded: ~15 s (the removal is tried again after 1, 2 and 5 s)
            if not ours():
                break
            await asyncio.sleep(0.1)
        assert ours() == []
        assert runner.proc.popen.poll() is None
        async with s.post(f"/invoke/{fn_id}", data=b"then runs") as r:
            assert (r.status, await r.read()) == (200, b"then runs")
    assert [line.split(b" ", 1)[0] for line in relay.refused] == [b"POST"] + [b"DELETE"] * 3
    log = runner.proc.log()
    assert log.count("could not remove container") == 1 and "left by a launch, at last" in log


async def test_a_third_signal_exits_at_once_when_a_hung_engine_holds_the_cut_stops_removals(platform, deploy_echo, relay,
                                                                                             docker_client):
    """A second signal cuts the calls and still removes the containers (`RunnerNode.stop`); with an engine that hangs,
    that removal would hold the runner for the SDK's minute, so a third signal exits on the spot."""
    runner = await platform.runner(DOCKER_HOST=f"unix://{relay.path}", FN_SHUTDOWN_GRACE="60")
    lb = await platform.lb([runner])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        in_flight = asyncio.create_task(s.post(f"/invoke/{fn_id}", json={"sleep_ms": 30000}))
        for _ in range(300):  # bounded: ~30 s, until the call runs in its container
            running = docker_client.containers.list(filters={"label": f"fn-fn-id={fn_id}", "status": "running"})
            if running:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # the call is in the container
        relay.hung = True
        for _ in range(2):
            runner.proc.popen.send_signal(signal.SIGINT)
            await asyncio.sleep(0.5)
        async with (await in_flight) as r:  # the cut answers the call: it needs no engine
            assert r.status == 500 and "cut short" in (await r.json())["message"]
        await asyncio.sleep(1)
        assert runner.proc.popen.poll() is None  # removing its container, on an engine that does not answer
        runner.proc.popen.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(runner.proc.popen.wait, 10) == 130
    relay.hung = False
    assert "third signal (SIGINT): exiting now; containers being removed may be left" in runner.proc.log()
