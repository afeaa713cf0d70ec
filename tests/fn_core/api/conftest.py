"""An LB node with no runners on 127.0.0.1, for tests of the HTTP API itself."""

from __future__ import annotations

import aiohttp
import pytest

from fn_core.config import load_config
from fn_core.lb.main import start_api, start_lb
from fn_core.plugins import get_plugin_manager
from fn_core.testing import metric_samples


@pytest.fixture
async def start(tmp_path):
    """``session = await start(env, plugins=[(name, plugin)], api_node=False, **overrides)``: a client session on a new
    LB with its own store ``fn<n>.db`` in ``tmp_path`` (the n-th of the test), or on an API node; stopped after the test."""
    started = []

    async def factory(env: dict[str, str], plugins=(), api_node: bool = False, **overrides) -> aiohttp.ClientSession:
        config = load_config(env=env, overrides={"db_url": f"sqlite3://{tmp_path}/fn{len(started)}.db", **overrides})
        pm = get_plugin_manager(config, load_entrypoints=False, extra_plugins=plugins)
        if api_node:
            node = await start_api(config, pm, host="127.0.0.1", port=0)
        else:
            node = await start_lb(config, pm, host="127.0.0.1", port=0, runner_addresses=[])
        session = aiohttp.ClientSession(node.url, timeout=aiohttp.ClientTimeout(total=30))
        started.append((node, session))
        return session

    yield factory
    for node, session in started:
        await session.close()
        await node.stop()


async def call(session, method, path, body=None, **kwargs):
    """(status, JSON body or None for a 204) of one v2 request; ``body``, if given, is sent as JSON."""
    if body is not None:
        kwargs["json"] = body
    async with session.request(method, path, **kwargs) as r:
        return r.status, (await r.json() if r.status != 204 else None)


async def request(session, method, path, **kwargs):
    """(status, JSON body, headers) of one request."""
    async with session.request(method, path, **kwargs) as r:
        return r.status, await r.json(), r.headers


async def metrics(session) -> dict[str, float]:
    """The /metrics samples by name and labels, e.g. {'fn_lb_invoke_rejected_total{status="404"}': 1.0}."""
    async with session.get("/metrics") as r:
        assert r.status == 200
        return metric_samples(await r.text())
