"""Per-runner metrics an operator alerts on: whether the LB reaches each runner, and the calls lost on it."""

from __future__ import annotations

import asyncio
import json
import logging

from fn_core import Placer, hookimpl
from fn_core.testing import free_port, metric_samples, wait_until


class InOrder:
    """A placer that tries the runners in the pool's order."""

    @hookimpl
    def place_call(self, call, runners):
        return list(runners)


class InOrderPlugin:
    @hookimpl
    def register_placers(self):
        return [Placer(name="in-order", hooks=InOrder(), description="the pool's order")]


async def samples(session) -> dict[str, float]:
    async with session.get("/metrics") as r:
        return metric_samples(await r.text())


async def test_metrics_say_which_runner_the_lb_cannot_reach_and_how_many_calls_each_lost(fake_runners, lb_factory, deploy_fn, caplog):
    live = await fake_runners(lambda call, body: "start-hang" if body == b"lose me" else "echo")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    node, session, recorder = await lb_factory([dead, live.address], placer="in-order", plugins=(("in-order", InOrderPlugin()),))
    fn_id = (await deploy_fn(session))["fn"]["id"]

    async def post(body: str) -> tuple[int, str]:
        async with session.post(f"/invoke/{fn_id}", data=body) as r:
            return r.status, await r.text()

    assert await post("hello") == (200, "hello")  # the dead runner first, then the live one
    seen = await samples(session)
    assert seen[f'fn_lb_runner_reachable{{runner="{dead}"}}'] == 0
    assert seen[f'fn_lb_runner_reachable{{runner="{live.address}"}}'] == 1
    assert seen[f'fn_lb_runner_lost_calls_total{{runner="{live.address}"}}'] == 0

    lost = [asyncio.create_task(post("lose me")) for _ in range(2)]  # the live runner starts them, then stops
    await wait_until(lambda: len(live.calls) == 3, "both calls to start")
    caplog.set_level(logging.WARNING, logger="fn_core.lb.runner_client")
    await live.stop()
    for status, text in await asyncio.gather(*lost):
        assert (status, json.loads(text)) == (500, {"message": "the runner was lost during the call"})
    seen = await samples(session)
    assert seen[f'fn_lb_runner_lost_calls_total{{runner="{live.address}"}}'] == 2
    assert seen[f'fn_lb_runner_lost_calls_total{{runner="{dead}"}}'] == 0  # nothing was ever sent there
    assert seen[f'fn_lb_runner_reachable{{runner="{dead}"}}'] == 0
    assert [outcome.status for _, outcome in recorder.outcomes] == [200, 500, 500]
    # one warning for the break, not one per call (each call's own line says it was lost)
    assert len([r for r in caplog.records if "was lost during call" in r.getMessage()]) == 1

    # the dead runner comes up: the LB, dialling it in the background, sees it with no call placed there
    calls_before = len(live.calls)
    back = await fake_runners("echo", port=int(dead.rpartition(":")[2]))

    async def reachable_again() -> bool:
        return (await samples(session))[f'fn_lb_runner_reachable{{runner="{dead}"}}'] == 1

    for _ in range(60):  # the backoff is 2 s at most
        if await reachable_again():
            break
        await asyncio.sleep(0.1)
    assert await reachable_again()
    assert back.calls == [] and len(live.calls) == calls_before
    assert any("runner " + dead + " reachable again" in r.getMessage() for r in caplog.records)


async def test_a_runner_that_dies_while_no_call_comes_is_seen_unreachable_and_back_without_a_call(
    fake_runners, lb_factory, deploy_fn, caplog
):
    runner = await fake_runners("echo")
    port = int(runner.address.rpartition(":")[2])
    node, session, recorder = await lb_factory([runner.address])
    fn_id = (await deploy_fn(session))["fn"]["id"]
    async with session.post(f"/invoke/{fn_id}", data="hello") as r:
        assert r.status == 200  # the LB is connected
    caplog.set_level(logging.WARNING, logger="fn_core.lb.runner_client")

    async def reachable() -> float:
        return (await samples(session))[f'fn_lb_runner_reachable{{runner="{runner.address}"}}']

    await runner.stop()  # no call in flight, none coming: an alert on the gauge must still fire
    for _ in range(50):
        if await reachable() == 0:
            break
        await asyncio.sleep(0.1)
    assert await reachable() == 0
    assert [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()][0].startswith(
        f"runner {runner.address} unreachable: UNAVAILABLE: failed to connect to {runner.address}: ConnectionRefusedError"
    )

    back = await fake_runners("echo", port=port)
    for _ in range(60):  # the backoff is 2 s at most
        if await reachable() == 1:
            break
        await asyncio.sleep(0.1)
    assert await reachable() == 1
    assert any(f"runner {runner.address} reachable again" in r.getMessage() for r in caplog.records)
    assert back.calls == [] and len(recorder.outcomes) == 1  # no call was needed to see either
