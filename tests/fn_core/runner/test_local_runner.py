"""`LocalRunner`: the LB's in-process handle on a runner (`fn-core serve`), on real Docker."""

from __future__ import annotations

import asyncio

import aiohttp

from fn_core import hookimpl
from fn_core.config import load_config
from fn_core.lb.local_runner import LOCAL_ADDRESS, LocalRunner
from fn_core.lb.main import start_lb
from fn_core.models import slot_key
from fn_core.plugins import get_plugin_manager
from fn_core.runner.main import start_runner
from fn_core.testing import metric_samples
from fn_core.wire import CallOffer

MB = 1024 * 1024


def offer(call) -> CallOffer:
    return CallOffer(call, slot_key(call))


async def test_call_result_counters_and_status(start, rc):
    node = await start()
    local = LocalRunner(node.core)
    starts = []
    result = await local.try_exec(offer(rc.call()), b"hello local", on_start=starts.append)
    assert result is not None and result.error is None and result.finished.success
    assert (result.status, b"".join(result.chunks)) == (200, b"hello local")
    assert starts == [result]
    big = bytes(range(256)) * 4096  # 1 MiB: many data frames
    result = await local.try_exec(offer(rc.call()), big)
    assert result is not None and b"".join(result.chunks) == big
    status = await local.status()
    assert (status.requests_received, status.requests_handled, status.active) == (2, 2, 0)
    assert status.custom_status["runner.containers"] == "1"
    assert len(rc.containers()) == 1


async def test_a_call_the_runner_refuses_is_a_committed_error_not_a_nack(start, rc):
    node = await start(max_total_memory_bytes=256 * MB)
    result = await LocalRunner(node.core).try_exec(offer(rc.call(memory=512)), b"")
    assert result is not None and result.error is not None and result.error.status == 400
    assert result.error.message == "Requested CPU/Memory cannot be allocated"
    assert node.core.requests_handled == 1


async def test_nack_when_full_in_non_blocking_mode(start, rc):
    node = await start(max_total_memory_bytes=128 * MB, enable_nb_resource_tracker=True)
    local = LocalRunner(node.core)
    call = rc.call(memory=128)
    busy = asyncio.create_task(local.try_exec(offer(call), b'{"sleep_ms": 1500}'))
    while not node.agent.containers():
        await asyncio.sleep(0.01)
    assert await local.try_exec(offer(rc.call(memory=128)), b"second") is None
    first = await busy
    assert first is not None and first.error is None
    status = await local.status()
    assert (status.requests_received, status.requests_handled) == (2, 1)  # the NACK is not "handled"


async def test_serve_path_places_on_the_local_runner(label_tag, echo_image, tmp_path):
    outcomes = []

    class Listener:
        @hookimpl
        def call_finished(self, call, outcome):
            outcomes.append(outcome)

    config = load_config(env={}, overrides={"container_label_tag": label_tag, "iofs_path": "/tmp/fn-core-test-iofs", "db_url": f"sqlite3://{tmp_path}/fn.db"})
    pm = get_plugin_manager(config, load_entrypoints=False, extra_plugins=[("listener", Listener())])
    runner = await start_runner(config, pm, listen=False)
    assert runner.server is None
    lb = await start_lb(config, pm, host="127.0.0.1", port=0, runner_addresses=[], local_runners=[LocalRunner(runner.core)])
    try:
        async with aiohttp.ClientSession(lb.url) as s:
            async with s.post("/v2/apps", json={"name": "local"}) as r:
                app = await r.json()
            async with s.post("/v2/fns", json={"name": "echo", "app_id": app["id"], "image": echo_image}) as r:
                fn = await r.json()
            for body in (b"one", b"two"):
                async with s.post(f"/invoke/{fn['id']}", data=body) as r:
                    assert (r.status, await r.read()) == (200, body)
            # a many-frame response the LB holds whole goes out with its full Content-Length ...
            async with s.post(f"/invoke/{fn['id']}", json={"repeat": 15_000, "text": "ab"}) as r:
                assert (r.status, r.content_length, await r.read()) == (200, 30_000, b"ab" * 15_000)
                assert r.headers["Fn-Call-Id"] and "Transfer-Encoding" not in r.headers
            # ... a bigger one as it comes (chunked), from the local runner as from a remote one
            async with s.post(f"/invoke/{fn['id']}", json={"repeat": 300_000, "text": "ab"}) as r:
                assert (r.status, r.headers.get("Transfer-Encoding"), await r.read()) == (200, "chunked", b"ab" * 300_000)
                assert r.headers["Fn-Call-Id"] and r.content_length is None
            async with s.get("/metrics") as r:  # serve's /metrics has its local runner's beside the LB's
                samples = metric_samples(await r.text())
            assert samples['fn_runner_calls_total{result="success"}'] == 4  # counted before its answer leaves
            assert samples['fn_runner_container_launches_total{result="ok"}'] == 1
        assert [o.runner for o in outcomes] == [LOCAL_ADDRESS] * 4
        assert (runner.core.requests_received, runner.core.requests_handled) == (4, 4)
    finally:
        await lb.stop(grace=5)
        await runner.stop(grace=5)
