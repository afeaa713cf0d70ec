"""/debug/stacks (Fn's pprof goroutine dump, for a Python node): where each thread and task of a node waits."""

from __future__ import annotations

import asyncio

from fn_core.testing import wait_until


async def test_an_lb_shows_a_call_in_flight_waiting_on_its_runner(fn_platform, echo_image):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image)
    assert (await platform.invoke(fn["id"], b"warm")).status == 200
    slow = asyncio.create_task(platform.invoke(fn["id"], b'{"sleep_ms": 1500}'))
    await wait_until(lambda: platform.lb.agent.metrics.inflight == 1, "the call is in flight")

    async with platform.session.get(f"{platform.url}/debug/stacks") as r:
        assert r.status == 200 and r.content_type == "text/plain"
        dump = await r.text()
    answered = await slow
    assert answered.status == 200
    call_id = answered.headers["Fn-Call-Id"]
    assert "thread 'MainThread'" in dump and "asyncio tasks (besides this request's)" in dump
    # the call's handler, and where it waits: the LB's placement, on the runner's answer
    assert "in invoke" in dump and "in place" in dump and "fn_core/lb/runner_client.py" in dump
    # the runner, in this same process, shows its side of the call: the container's exchange; both by call id
    assert f"task 'invoke {call_id}'" in dump and f"task 'call {call_id}'" in dump
    assert "fn_core/runner/agent.py" in dump
