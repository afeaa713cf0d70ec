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
    caplog.set_level(logging.INFO, logger="fn_core.lb.runner_client")
    await live.stop()
    for status, text in await asyncio.gather(*lost):
        assert (status, json.loads(text)) == (500, {"message": "the runner was lost during the call"})
    seen = await samples(session)
    assert seen[f'fn_lb_runner_lost_calls_total{{runner="{live.address}"}}'] == 2
    assert seen[f'fn_lb_runner_lost_calls_total{{runner="{dead}"}}'] == 0  # nothing was ever sent there
    assert seen[f'fn_lb_runner_reachable{{runner="{dead}"}}'] == 0
    assert [outcome.status for _, outcome in recorder.outcomes] == [200, 500, 500]
    # one warning for the break, not one per call (each call's own line says it was lost)
    lost_lines = [r for r in caplog.records if r.getMessage().startswith("runner was lost during call ")]
    assert [r.levelno for r in lost_lines] == [logging.WARNING]

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
    assert any(r.getMessage() == f"runner reachable again runner={dead}" for r in caplog.records)


async def lb_connected_to_one_runner(fake_runners, lb_factory, deploy_fn):
    """An LB with one fake runner, connected to it by a call; (the runner, its port, the LB's session, its recorder
    of call outcomes)."""
    runner = await fake_runners("echo")
    _, session, recorder = await lb_factory([runner.address])
    fn_id = (await deploy_fn(session))["fn"]["id"]
    async with session.post(f"/invoke/{fn_id}", data="hello") as r:
        assert r.status == 200  # the LB is connected
    return runner, int(runner.address.rpartition(":")[2]), session, recorder


async def test_a_runner_that_dies_while_no_call_comes_is_seen_unreachable_and_back_without_a_call(
    fake_runners, lb_factory, deploy_fn, caplog
):
    runner, port, session, recorder = await lb_connected_to_one_runner(fake_runners, lb_factory, deploy_fn)
    caplog.set_level(logging.INFO, logger="fn_core.lb.runner_client")

    async def reachable() -> float:
        return (await samples(session))[f'fn_lb_runner_reachable{{runner="{runner.address}"}}']

    await runner.stop()  # no call in flight, none coming: an alert on the gauge must still fire
    for _ in range(50):
        if await reachable() == 0:
            break
        await asyncio.sleep(0.1)
    assert await reachable() == 0
    assert [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()][0].startswith(
        f'runner unreachable, skipped until it answers runner={runner.address} '
        f'reason="UNAVAILABLE: failed to connect to {runner.address}: ConnectionRefusedError'
    )

    back = await fake_runners("echo", port=port)
    for _ in range(60):  # the backoff is 2 s at most
        if await reachable() == 1:
            break
        await asyncio.sleep(0.1)
    assert await reachable() == 1
    assert any(r.getMessage() == f"runner reachable again runner={runner.address}" for r in caplog.records)
    assert back.calls == [] and len(recorder.outcomes) == 1  # no call was needed to see either


def test_per_runner_counts_are_bounded_with_an_other_series_and_never_go_down(caplog):
    """As fn-metrics bounds its fns: past the bound a runner's counts go to runner="_other" (said once). A runner
    that left having counted nothing frees its slot (a pool whose runners get new addresses, as Kubernetes pods do,
    does not fill it); one that counted keeps its series."""
    from fn_core.lb.metrics import RunnerCounts

    counts = RunnerCounts("fn_lb_runner_lost_calls_total", max_runners=2)
    counts.track("10.0.0.1:9190")
    counts.track("10.0.0.2:9190")
    counts.add("10.0.0.1:9190")
    assert counts.samples() == {"10.0.0.1:9190": 1, "10.0.0.2:9190": 0}  # a series before its first count: increase() sees it
    caplog.set_level(logging.WARNING, logger="fn_core.lb.metrics")
    counts.track("10.0.0.3:9190")  # no room: counted under _other, whose series starts at 0
    assert counts.samples() == {"10.0.0.1:9190": 1, "10.0.0.2:9190": 0, "_other": 0}
    counts.add("10.0.0.3:9190")
    counts.track("10.0.0.4:9190")
    counts.add("10.0.0.4:9190")
    assert counts.samples() == {"10.0.0.1:9190": 1, "10.0.0.2:9190": 0, "_other": 2}
    assert [r.getMessage() for r in caplog.records] == [
        'runners past the bound of a per-runner metric are counted under runner="_other" '
        "metric=fn_lb_runner_lost_calls_total max_runners=2 runner=10.0.0.3:9190"
    ]

    counts.untrack("10.0.0.1:9190")  # left the pool after a lost call: kept
    counts.untrack("10.0.0.2:9190")  # left having lost nothing: its slot is free
    assert counts.samples() == {"10.0.0.1:9190": 1, "_other": 2}
    counts.track("10.0.0.5:9190")
    counts.track("10.0.0.1:9190")  # back: goes on from its count
    counts.add("10.0.0.1:9190")
    assert counts.samples() == {"10.0.0.1:9190": 2, "10.0.0.5:9190": 0, "_other": 2}

    counts.track("10.0.0.6:9190")  # two channels to one runner (the old one still closing): one series
    counts.track("10.0.0.6:9190")
    counts.untrack("10.0.0.5:9190")
    counts.untrack("10.0.0.6:9190")
    assert counts.tracks("10.0.0.6:9190") and not counts.tracks("10.0.0.5:9190")


async def test_a_runners_outage_is_a_warning_and_its_end_an_info_line_both_with_logfmt_fields(
    fake_runners, lb_factory, deploy_fn, caplog
):
    from fn_core import logfmt
    from fn_core.logfmt import FIELDS_ATTR

    runner, port, _, _ = await lb_connected_to_one_runner(fake_runners, lb_factory, deploy_fn)
    caplog.set_level(logging.INFO, logger="fn_core.lb.runner_client")

    def lines() -> list[tuple[int, str, dict, dict]]:
        return [(r.levelno, r.getMessage().partition(" runner=")[0], logfmt.parse(r.getMessage()), getattr(r, FIELDS_ATTR, {}))
                for r in caplog.records if r.name == "fn_core.lb.runner_client"]

    await runner.stop()
    await wait_until(lambda: len(lines()) == 1, "the outage said", timeout_s=10)
    await fake_runners("echo", port=port)
    await wait_until(lambda: len(lines()) == 2, "its end said", timeout_s=10)
    (down_level, down, down_fields, down_json), (up_level, up, up_fields, up_json) = lines()
    assert (down_level, down) == (logging.WARNING, "runner unreachable, skipped until it answers")
    assert down_fields["runner"] == runner.address and down_fields["reason"].startswith("UNAVAILABLE: failed to connect")
    assert down_json == {"runner": runner.address, "reason": down_fields["reason"]}  # FN_LOG_FORMAT=json's keys
    assert (up_level, up, up_fields, up_json) == (logging.INFO, "runner reachable again", {"runner": runner.address},
                                                  {"runner": runner.address})
