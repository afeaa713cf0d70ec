"""/metrics of the v2 API: requests by method, route and status, and latency by route, on API and LB nodes."""

from __future__ import annotations

import time

import aiohttp
import pytest

from fn_core import hookimpl
from fn_core.config import load_config
from fn_core.lb.main import start_api
from fn_core.testing import build_plugin_manager

from .conftest import metrics, request

REQUESTS = "fn_api_requests_total"


@pytest.fixture
async def api_node(tmp_path):
    """A real API node (`fn-core api`) on 127.0.0.1 with its own store, and a client session on it."""
    config = load_config(env={}, overrides={"db_url": f"sqlite3://{tmp_path}/fn.db"})
    node = await start_api(config, host="127.0.0.1", port=0)
    session = aiohttp.ClientSession(node.url, timeout=aiohttp.ClientTimeout(total=30))
    yield session
    await session.close()
    await node.stop()


async def test_the_api_node_counts_requests_by_route_and_status(api_node):
    asked = [
        ("POST", "/v2/apps", {"name": "shop"}, 200),
        ("GET", "/v2/apps/01NOSUCHAPP", None, 404),
        ("GET", "/v2/apps/01NOSUCHAPP", None, 404),
        ("POST", "/v2/apps", {"name": "bad name!"}, 400),
        ("GET", "/v2/apps", None, 200),
    ]
    for method, path, body, status in asked:
        assert (await request(api_node, method, path, json=body))[0] == status

    samples = await metrics(api_node)
    assert samples[f'{REQUESTS}{{method="POST",route="/v2/apps",status="200"}}'] == 1
    assert samples[f'{REQUESTS}{{method="POST",route="/v2/apps",status="400"}}'] == 1
    assert samples[f'{REQUESTS}{{method="GET",route="/v2/apps/{{app_id}}",status="404"}}'] == 2
    assert samples[f'{REQUESTS}{{method="GET",route="/v2/apps",status="200"}}'] == 1
    assert samples['fn_api_request_duration_seconds_count{route="/v2/apps"}'] == 3
    assert samples['fn_api_request_duration_seconds_bucket{route="/v2/apps/{app_id}",le="+Inf"}'] == 2
    assert not any(name.startswith("fn_lb_") for name in samples)  # an API node places no calls


async def test_the_api_node_shows_its_plugins_families(tmp_path):
    """`metric_families` runs on every node with plugins and an HTTP port: the API node's plugins (an audit log, a
    validator) count things too."""

    class Saves:
        @hookimpl
        def metric_families(self):
            return [("audit_saves_total", "counter", "saves seen", ["audit_saves_total 7"])]

    config = load_config(env={}, overrides={"db_url": f"sqlite3://{tmp_path}/fn.db"})
    node = await start_api(config, build_plugin_manager(Saves()), host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession(node.url) as session:
            assert (await request(session, "GET", "/v2/apps"))[0] == 200
            samples = await metrics(session)
    finally:
        await node.stop()
    assert samples["audit_saves_total"] == 7  # beside the node's own
    assert samples[f'{REQUESTS}{{method="GET",route="/v2/apps",status="200"}}'] == 1


async def test_an_lb_with_a_store_has_both_call_and_api_metrics(start):
    session = await start({})
    assert (await request(session, "POST", "/v2/apps", json={"name": "shop"}))[0] == 200
    assert (await request(session, "POST", "/invoke/01NOSUCHFN"))[0] == 404
    samples = await metrics(session)
    assert samples[f'{REQUESTS}{{method="POST",route="/v2/apps",status="200"}}'] == 1
    assert samples['fn_lb_invoke_rejected_total{status="404"}'] == 1
    assert not any('route="/invoke' in name for name in samples)  # invoke has the LB's own metrics


async def test_metrics_show_the_nodes_process_and_the_listed_commands(start, sleeper):
    """Fn's process collectors: ``fn_process_*`` for the node, ``<command>_process_*`` for each command of
    FN_PROCESS_COLLECTOR_LIST that runs; the default list has dockerd, which this suite runs."""
    process = sleeper()
    listed = await start({"FN_PROCESS_COLLECTOR_LIST": f"{sleeper.name} no-such-command"})
    samples = await metrics(listed)
    prefix = sleeper.name.replace("-", "_")
    assert samples["fn_process_resident_memory_bytes"] > 0
    assert samples["fn_process_open_fds"] > 0
    assert samples[f"{prefix}_process_resident_memory_bytes"] > 0
    assert abs(samples[f"{prefix}_process_start_time_seconds"] - time.time()) < 30
    assert not any(name.startswith(("dockerd_", "no_such_command")) for name in samples)
    process.kill()
    process.wait()
    assert not any(name.startswith(prefix) for name in await metrics(listed))

    by_default = await start({})
    samples = await metrics(by_default)
    assert samples["dockerd_process_cpu_seconds_total"] > 0
    assert samples["dockerd_process_resident_memory_bytes"] > 0
    assert not any(name.startswith(prefix) for name in samples)  # not in the default list


PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"  # the text format's, as Fn's promhttp sends it


async def test_metrics_are_sent_as_prometheus_text_by_the_api_node_the_lb_and_a_runners_http_port(api_node, start):
    from aiohttp import web

    from fn_core.api.admin import admin_app

    lb = await start({})
    runner_http = web.AppRunner(admin_app(load_config(env={}), [lambda: "# HELP x y\n# TYPE x gauge\nx 1\n"]))
    await runner_http.setup()  # what `fn-core runner` serves on FN_PORT
    site = web.TCPSite(runner_http, "127.0.0.1", 0)
    await site.start()
    port = runner_http.addresses[0][1]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as plain:
            async with plain.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert (r.status, r.headers["Content-Type"]) == (200, PROMETHEUS_TEXT)
                assert "\nx 1\n" in await r.text()
        for session in (api_node, lb):
            async with session.get("/metrics") as r:
                assert (r.status, r.headers["Content-Type"]) == (200, PROMETHEUS_TEXT)
                assert (await r.text()).startswith("# HELP ")
    finally:
        await runner_http.cleanup()
