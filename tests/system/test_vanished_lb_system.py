"""A runner whose LB vanished mid-call: `fn-core runner` + two `fn-core lb`s + Docker + the fdk echo fn.

An LB frozen with SIGSTOP is what a host that went down looks like to its runner: the TCP connection stays
open (here the LB's kernel even takes the bytes) and nothing more comes on it. A call whose answer is larger
than the window the LB granted then waits on that LB for good; without a check it held its container and the
runner's memory until the function's timeout. With ``FN_GRPC_KEEPALIVE`` the runner PINGs the silent LB,
takes it for gone, drops the connection and lets the call end as a hang-up: its room is free again.
"""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp

from fn_core.testing import wait_until

MB = 1024 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=60)


async def test_a_runner_drops_a_frozen_lbs_connection_and_frees_the_room_its_call_held(platform, deploy_echo):
    # room for one 128 MB container: a second fn's call needs the room of the first's
    runner = await platform.runner(FN_GRPC_KEEPALIVE="1s", FN_MAX_TOTAL_MEMORY_BYTES=str(128 * MB))
    frozen, other = await platform.lb([runner]), await platform.lb([runner])
    async with aiohttp.ClientSession(frozen.url, timeout=TIMEOUT) as s:
        held_fn = (await deploy_echo(s, platform.image, memory=128, timeout=120))["fn"]
    async with aiohttp.ClientSession(other.url, timeout=TIMEOUT) as s:
        next_fn = (await deploy_echo(s, platform.image, app="other", memory=128, timeout=30))["fn"]

    frozen_client = aiohttp.ClientSession(frozen.url, timeout=aiohttp.ClientTimeout(total=None))
    # an answer of 8 MiB: more than the window an LB grants (4 MiB), so the runner waits for the LB to read
    big = asyncio.create_task(frozen_client.post(f"/invoke/{held_fn['id']}", json={"sleep_ms": 1500, "repeat": 8 * MB, "text": "x"}))
    pid = frozen.proc.popen.pid
    try:
        for _ in range(600):  # bounded: ~60 s for the container's start
            if (await runner.status()).active == 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the call never ran: {runner.proc.log()}")
        os.kill(pid, signal.SIGSTOP)

        await wait_until(lambda: "left a PING unanswered" in runner.proc.log(), "the runner took the frozen LB for gone", 30)
        assert "its connection is dropped and its 1 call(s) cancelled" in runner.proc.log()
        # the held call's room is free long before its function's 120 s timeout: another fn's call, through another
        # LB, gets it (the idle container is evicted for it)
        async with aiohttp.ClientSession(other.url, timeout=TIMEOUT) as s, s.post(f"/invoke/{next_fn['id']}", data=b"next") as r:
            assert (r.status, await r.read()) == (200, b"next")
        assert (await runner.status()).active == 0
    finally:
        os.kill(pid, signal.SIGCONT)
        big.cancel()
        await asyncio.gather(big, return_exceptions=True)
        await frozen_client.close()
