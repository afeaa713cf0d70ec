"""Every node's `/metrics`, after real calls, passes what `promtool check metrics` checks: Prometheus's own parser
and linter (`go/promlint`), not ours. A scrape that Prometheus cannot parse loses all of a node's series at once."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from fn_core.testing import free_port

TIMEOUT = aiohttp.ClientTimeout(total=60)


async def promlint(binary, url: str) -> tuple[str, int, str]:
    """(the scrape, promlint's exit status, what it said) for ``url``'s /metrics."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await r.text()
    proc = await asyncio.create_subprocess_exec(str(binary), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    said, _ = await proc.communicate(text.encode())
    return text, proc.returncode or 0, said.decode()


async def test_the_linter_finds_what_prometheus_would_refuse_or_frown_at(go_tools):
    """promlint itself, so that its silence above means something."""
    for text, status, said in [
        ("# HELP jobs Jobs.\n# TYPE jobs counter\njobs 1\n", 1, 'jobs: counter metrics should have "_total" suffix'),
        ("# TYPE x gauge\nx{a=\"1\" 1\n", 2, "does not parse"),
    ]:
        proc = await asyncio.create_subprocess_exec(str(go_tools.promlint), stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate(text.encode())
        assert proc.returncode == status and said in out.decode(), out


async def some_calls(session: aiohttp.ClientSession, fn_id: str) -> None:
    """Calls that answer 200, the function's 502, and fn-core's 404: series of every kind get samples."""
    for body in (b"one", b"two", json.dumps({"fail": "on purpose"}).encode()):
        async with session.post(f"/invoke/{fn_id}", data=body) as r:
            await r.read()
    async with session.post("/invoke/01NOSUCHFN0000000000000000", data=b"x") as r:
        assert r.status == 404


@pytest.mark.parametrize("topology", ["serve", "split"])
async def test_every_nodes_metrics_pass_prometheus_own_lint(platform, deploy_echo, go_tools, topology, tmp_path):
    if topology == "serve":
        serve = await platform.serve()
        nodes = {"serve": serve.url}
        url = serve.url
    else:
        runner = await platform.runner()
        lb = await platform.lb([runner])
        api_port = free_port()
        api = platform.start("api", ["api", "--host", "127.0.0.1", "--port", str(api_port), "--db",
                                     f"sqlite3://{tmp_path}/api.db"])
        await platform.wait_http(api, f"http://127.0.0.1:{api_port}")
        nodes = {"lb": lb.url, "runner": runner.url, "api": f"http://127.0.0.1:{api_port}"}
        url = lb.url
    async with aiohttp.ClientSession(url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        await some_calls(s, fn_id)
    for name, node_url in nodes.items():
        text, status, said = await promlint(go_tools.promlint, node_url)
        assert (status, said) == (0, ""), f"{name}'s /metrics:\n{said}"
        assert text.count("\n# TYPE ") >= 10, f"{name}'s /metrics has hardly any families:\n{text}"
    if topology == "serve":
        assert 'fn_lb_calls_total{status="200"}' in text and "fn_runner_calls_total" in text  # both sides were linted
