"""fn_lb_calls_inflight: every call the LB has under way, a detached one until its stream ends (long after its 202)."""

from __future__ import annotations

from fn_core.testing import metric_samples, wait_until


async def inflight(session) -> float:
    async with session.get("/metrics") as r:
        return metric_samples(await r.text())["fn_lb_calls_inflight"]


async def test_a_detached_call_counts_as_inflight_until_its_stream_ends_not_until_its_202(fake_runners, lb_factory, deploy_fn):
    started = await fake_runners("start-hang")  # started (202 to the client), then runs until the LB cuts it off
    _, session, recorder = await lb_factory([started.address], detached_placer_timeout_s=0.2, execution_headroom_msecs=300)
    ids = await deploy_fn(session, fn={"timeout": 1})
    assert await inflight(session) == 0
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x", headers={"Fn-Invoke-Type": "detached"}) as r:
        assert r.status == 202
    assert await inflight(session) == 1  # the client has its 202; the call still runs (counted once, not twice)
    await wait_until(lambda: bool(recorder.outcomes), "the call ended", timeout_s=15)  # cut after 0.2 + 1 + 0.3 s
    assert await inflight(session) == 0


async def test_a_detached_call_refused_before_its_202_is_inflight_no_more(fake_runners, lb_factory, deploy_fn):
    busy = await fake_runners("nack")
    _, session, _ = await lb_factory([busy.address], detached_placer_timeout_s=0.2)
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x", headers={"Fn-Invoke-Type": "detached"}) as r:
        assert r.status == 503
    assert await inflight(session) == 0
