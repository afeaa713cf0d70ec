"""Detached invocation through the LB over real gRPC to a real runner, with real Docker."""

import asyncio
import json


async def test_a_detached_call_is_answered_202_while_the_function_still_runs(fn_platform, echo_image):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image)
    core = platform.runners[0].core
    result = await platform.invoke(fn["id"], json.dumps({"sleep_ms": 1500}), headers={"Fn-Invoke-Type": "detached"})
    assert result.status == 202 and result.body == b"" and result.headers["Fn-Call-Id"]
    assert core.active == 1  # the client has its 202; the function is still running
    for _ in range(500):  # bounded: until the call ends on the runner
        if not core.active:
            break
        await asyncio.sleep(0.01)
    assert (core.active, core.requests_handled) == (0, 1)
    synced = await platform.invoke(fn["id"], "after")  # the container is free again and serves sync calls
    assert (synced.status, synced.body) == (200, b"after")
    assert len(platform.containers(fn["id"])) == 1
