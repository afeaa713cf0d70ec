"""An API node that freezes under its LB: `fn-core api` + `fn-core lb` (FN_RUNNER_API_URL) + `fn-core runner` + Docker.

A frozen API node (SIGSTOP: a paused VM, a hung process) accepts connections and never answers. The LB rides out
the outage on what it read (the fns it knows keep running), and only the first lookup that finds the API node so
waits the 10 s timeout: the next ones wait a moment for the one check under way, then answer from the last reading,
or 503 for what the LB never read. Before, each lookup past the cache's TTL waited the whole timeout: an fn's
first call 10 s for its fn and 10 s more for its app, and every call of an unknown fn 10 s for its 503.
"""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp

from fn_core.testing import free_port

TIMEOUT = aiohttp.ClientTimeout(total=120)
CACHE_TTL_S = 5.0  # fn_core.store.cache.DEFAULT_TTL_S, in the LB process


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, bytes, float]:
    began = asyncio.get_running_loop().time()
    async with session.post(url, data=body) as r:
        return r.status, await r.read(), asyncio.get_running_loop().time() - began


async def test_a_frozen_api_node_costs_the_lb_one_timeout_not_one_per_lookup(platform, tmp_path):
    api_port, lb_port = free_port(), free_port()
    api = platform.start("api", ["api", "--host", "127.0.0.1", "--port", str(api_port), "--db", f"sqlite3://{tmp_path}/api.db"])
    api_url, lb_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{lb_port}"
    await platform.wait_http(api, api_url)
    runner = await platform.runner()
    lb = platform.start("lb", ["lb", "--host", "127.0.0.1", "--port", str(lb_port), "--runner", runner.address],
                        FN_RUNNER_API_URL=api_url)
    await platform.wait_http(lb, lb_url)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.post(f"{api_url}/v2/apps", json={"name": "frozen"}) as r:
            app = await r.json()
        fns = []
        for name in ("first", "second"):
            async with s.post(f"{api_url}/v2/fns", json={"name": name, "app_id": app["id"], "image": platform.image}) as r:
                fns.append(await r.json())
        for fn in fns:  # the LB reads each fn and the app, and the runner starts their containers
            assert (await post(s, f"{lb_url}/invoke/{fn['id']}", b"warm"))[:2] == (200, b"warm")
        await asyncio.sleep(CACHE_TTL_S + 0.5)  # what the LB read is past its TTL: the next lookups ask the API node

        api.popen.send_signal(signal.SIGSTOP)
        try:
            first = await post(s, f"{lb_url}/invoke/{fns[0]['id']}", b"first")
            second = await post(s, f"{lb_url}/invoke/{fns[1]['id']}", b"second")
            unknown = await post(s, f"{lb_url}/invoke/01NEVERREAD0000000000000000", b"x")
        finally:
            api.popen.send_signal(signal.SIGCONT)
        async with s.post(f"{api_url}/v2/fns", json={"name": "later", "app_id": app["id"], "image": platform.image}) as r:
            later = await r.json()
        after = await post(s, f"{lb_url}/invoke/{later['id']}", b"after")  # back: the next lookup finds it so
    # the fns the LB knew run on, from its last reading; only the first lookup waited the timeout
    assert first[:2] == (200, b"first") and 9.5 <= first[2] < 20, first
    assert second[:2] == (200, b"second") and second[2] < 3, second
    assert unknown[0] == 503 and json.loads(unknown[1]) == {
        "message": "Service temporarily unavailable: function definitions cannot be read"}
    assert unknown[2] < 3, unknown
    assert after[:2] == (200, b"after"), after
    log = lb.log()
    assert log.count("API node unavailable (FN_RUNNER_API_URL)") == 1 and "timed out after 10 s" in log
    assert "API node answers again" in log
