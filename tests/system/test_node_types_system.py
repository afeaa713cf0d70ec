"""Start-up choices as an operator makes them, on real `fn-core` processes (and real Docker for the calls).

* ``FN_NODE_TYPE`` through `fn-core start`, Fn's deployment style: the node is picked and configured by
  ``FN_*`` variables alone, no flags (`pure-runner` + `lb` as two processes; `full`).
* ``FN_STRICT_CONFIG`` with ``--config``: a mistyped key in the file stops the node.
* ``FN_DISABLE_PLUGINS`` on a running LB: a disabled built-in does nothing any more.
* ``FN_HOT_PULL_TIMEOUT_MSECS`` through LB + runner: a registry that never answers is Fn's 504.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from fn_core.testing import free_port, metric_samples, wait_until

FN_CORE = str(Path(sys.executable).parent / "fn-core")
TIMEOUT = aiohttp.ClientTimeout(total=60)
IOFS = "/tmp/fn-core-sys-iofs"
NO_RUNNER = "127.0.0.1:9"  # nothing listens there: for LBs that never place a call


def operator_env(**env: str) -> dict[str, str]:
    """The test's environment without any FN_* of its own (the node reads only what the test sets), plus ``env``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("FN_")}, **env}


async def deploy_and_invoke(url: str, image: str, body: bytes) -> tuple[str, int, bytes]:
    """Create an app and an fn of ``image`` through ``url``'s v2 API, invoke it once: (fn id, status, body)."""
    async with aiohttp.ClientSession(url, timeout=TIMEOUT) as s:
        async with s.post("/v2/apps", json={"name": "nodeapp"}) as r:
            assert r.status == 200, await r.text()
            app_id = (await r.json())["id"]
        async with s.post("/v2/fns", json={"name": "echo", "app_id": app_id, "image": image}) as r:
            assert r.status == 200, await r.text()
            fn_id = (await r.json())["id"]
        async with s.post(f"/invoke/{fn_id}", data=body) as r:
            return fn_id, r.status, await r.read()


# ---------------------------------------------------------------------------------------------------------
# FN_NODE_TYPE through `fn-core start`: FN_* variables only
# ---------------------------------------------------------------------------------------------------------
async def test_fn_node_type_pure_runner_and_lb_started_by_fn_core_start_run_a_call(platform, echo_image, tmp_path):
    grpc_port, runner_http, lb_port = free_port(), free_port(), free_port()
    runner_address = f"127.0.0.1:{grpc_port}"
    runner = platform.start(
        "pure-runner", ["start"], FN_NODE_TYPE="pure-runner", FN_HOST="127.0.0.1", FN_GRPC_PORT=str(grpc_port),
        FN_PORT=str(runner_http), FN_CONTAINER_LABEL_TAG=platform.tag(), FN_IOFS_PATH=IOFS, FN_LOG_LEVEL="info",
    )
    await platform.wait_runner(runner, runner_address)  # the RunnerProtocol, on FN_GRPC_PORT
    await platform.wait_http(runner, f"http://127.0.0.1:{runner_http}")  # and the pure runner's HTTP port, on FN_PORT
    lb = platform.start(
        "lb", ["start"], FN_NODE_TYPE="lb", FN_HOST="127.0.0.1", FN_PORT=str(lb_port), FN_RUNNER_ADDRESSES=runner_address,
        FN_DB_URL=f"sqlite3://{tmp_path}/lb.db", FN_LOG_LEVEL="info",
    )
    lb_url = f"http://127.0.0.1:{lb_port}"
    await platform.wait_http(lb, lb_url)

    fn_id, status, body = await deploy_and_invoke(lb_url, echo_image, b"through fn-core start")
    assert (status, body) == (200, b"through fn-core start"), lb.log()

    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.get(f"http://127.0.0.1:{runner_http}/metrics") as r:  # the call ran on that runner
            assert metric_samples(await r.text())['fn_runner_calls_total{result="success"}'] == 1
        async with s.get(f"http://127.0.0.1:{runner_http}/v2/apps") as r:  # a pure runner serves no v2 API
            assert r.status == 404
    assert (lb.stop(), runner.stop()) == (0, 0), lb.log() + runner.log()
    assert f"fn_id={fn_id} runner={runner_address} status=200" in lb.log()
    assert f"runner listening on {runner_address} (gRPC RunnerProtocol, plaintext) and on 127.0.0.1:{runner_http} (HTTP: /, /version, /metrics, /debug/stacks)" in runner.log()


@pytest.mark.parametrize("node_type", ["full", None], ids=["full", "unset"])
async def test_fn_node_type_full_serves_the_v2_api_and_invoke_in_one_process(platform, echo_image, tmp_path, node_type):
    port = free_port()
    env = {"FN_HOST": "127.0.0.1", "FN_PORT": str(port), "FN_DB_URL": f"sqlite3://{tmp_path}/full.db",
           "FN_CONTAINER_LABEL_TAG": platform.tag(), "FN_IOFS_PATH": IOFS}
    if node_type:
        env["FN_NODE_TYPE"] = node_type
    node = platform.start(f"full-{node_type}", ["start"], **env)
    url = f"http://127.0.0.1:{port}"
    await platform.wait_http(node, url)

    _, status, body = await deploy_and_invoke(url, echo_image, b"all in one")
    assert (status, body) == (200, b"all in one"), node.log()
    async with aiohttp.ClientSession(url, timeout=TIMEOUT) as s, s.get("/v2/apps") as r:
        assert r.status == 200 and [a["name"] for a in (await r.json())["items"]] == ["nodeapp"]
    assert node.stop() == 0, node.log()


# ---------------------------------------------------------------------------------------------------------
# FN_STRICT_CONFIG: `fn-core --config f.toml lb ...` with a mistyped key
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["FN_STRICT_CONFIG=1", "strict = true in the file"])
def test_a_mistyped_config_file_key_under_strict_config_stops_the_lb_with_one_clear_line(tmp_path, how):
    config_file = tmp_path / "f.toml"
    config_file.write_text(("strict = true\n" if how.endswith("file") else "") + 'placer = "naive"\nrunner_adresses = ["127.0.0.1:9190"]\n')
    env = {"FN_STRICT_CONFIG": "1"} if how.startswith("FN_") else {}
    with socket.socket() as taken:  # were the key let through, the LB would stop on this port, with another line
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = [FN_CORE, "--config", str(config_file), "lb", "--host", "127.0.0.1", "--port", str(taken.getsockname()[1]),
                "--runner", NO_RUNNER, "--db", f"sqlite3://{tmp_path}/strict.db"]
        result = subprocess.run(args, env=operator_env(**env), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()  # the node never got as far as logging
    assert line == f"fn-core: error: config file {config_file}: unknown key 'runner_adresses': did you mean 'runner_addresses'?"


async def test_without_strict_config_the_mistyped_key_is_a_warning_and_the_lb_serves(platform, tmp_path):
    """The same file, FN_STRICT_CONFIG=0 (which outranks the file's own `strict`): the node starts and says what it ignored."""
    config_file = tmp_path / "f.toml"
    config_file.write_text('strict = true\nplacer = "naive"\nrunner_adresses = ["127.0.0.1:9190"]\n[plugins.cpu-share]\n')
    port = free_port()
    lb = platform.start("lb-lax", ["--config", str(config_file), "lb", "--host", "127.0.0.1", "--port", str(port),
                                "--runner", NO_RUNNER, "--db", f"sqlite3://{tmp_path}/lax.db"], FN_STRICT_CONFIG="0")
    await platform.wait_http(lb, f"http://127.0.0.1:{port}")
    assert lb.stop() == 0, lb.log()
    assert f"WARNING fn_core.config: config file {config_file}: unknown key 'runner_adresses'" in lb.log()
    assert "WARNING fn_core.plugins: config file: [plugins.cpu-share] names no installed plugin (plugins: " in lb.log()


def test_a_plugins_table_no_plugin_has_under_strict_config_stops_the_lb_with_one_clear_line(tmp_path):
    """A mistyped plugin name in a table header (`cpu-share` for `cpu-shares`): its settings would be read by nobody."""
    config_file = tmp_path / "f.toml"
    config_file.write_text('strict = true\n[plugins.cpu-share]\nshares_per_mb = 2\n')
    args = [FN_CORE, "--config", str(config_file), "lb", "--host", "127.0.0.1", "--port", str(free_port()),
            "--runner", NO_RUNNER, "--db", f"sqlite3://{tmp_path}/strict.db"]
    result = subprocess.run(args, env=operator_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "error" in line]
    assert line.startswith("fn-core: error: config file: [plugins.cpu-share] names no installed plugin (plugins: ")
    assert "fn-metrics" in line.split("(plugins: ")[1]


# ---------------------------------------------------------------------------------------------------------
# FN_DISABLE_PLUGINS on a running platform
# ---------------------------------------------------------------------------------------------------------
async def scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(url + "/metrics") as r:
        assert r.status == 200
        return metric_samples(await r.text())


async def test_disabled_fn_metrics_and_call_log_leave_no_per_fn_series_and_no_call_line(platform, deploy_echo):
    """Two LBs on one runner, one with FN_DISABLE_PLUGINS=fn-metrics,call-log: the same call, what each shows of it."""
    runner = await platform.runner()
    plain = await platform.lb([runner])
    trimmed = await platform.lb([runner], FN_DISABLE_PLUGINS="fn-metrics,call-log")
    for lb in (plain, trimmed):
        async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
            lb.fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
            async with s.post(f"/invoke/{lb.fn_id}", data=b"counted?") as r:
                assert (r.status, await r.read()) == (200, b"counted?")
        # the LB counts a call and runs its call_finished listeners in one step: once it is counted, they have run
        for _ in range(200):  # bounded: 10 s
            lb.metrics = await scrape(lb.url)
            if lb.metrics.get('fn_lb_calls_total{status="200"}') == 1:
                break
            await asyncio.sleep(0.05)
        assert lb.metrics['fn_lb_calls_total{status="200"}'] == 1  # the call did happen on each

    [series] = [k for k in plain.metrics if k.startswith("fn_function_calls_total")]  # the control: fn-metrics' series
    assert f'fn_id="{plain.fn_id}"' in series and 'status="200"' in series
    assert not [k for k in trimmed.metrics if k.startswith("fn_function_")], trimmed.metrics
    assert [fn for _, fn, _, _, _ in plain.proc.call_lines()] == [plain.fn_id]  # the control: call-log's line
    assert "call finished" not in trimmed.proc.log()
    assert "FN_DISABLE_PLUGINS names no installed plugin" not in trimmed.proc.log()


async def test_disabling_a_name_no_plugin_has_is_named_at_start_with_the_known_ones(platform, tmp_path):
    """As documented (README "Write a plugin"): a warning through the node's log, naming the plugins there are; the
    LB starts with every plugin on, the mistyped one included (fn-metrics' series are there)."""
    port = free_port()
    lb = platform.start("lb-typo", ["lb", "--host", "127.0.0.1", "--port", str(port), "--runner", NO_RUNNER,
                                 "--db", f"sqlite3://{tmp_path}/typo.db"], FN_DISABLE_PLUGINS="fn-metric", FN_LOG_FORMAT="json")
    await platform.wait_http(lb, f"http://127.0.0.1:{port}")
    assert lb.stop() == 0, lb.log()
    entries = [json.loads(line) for line in lb.log().splitlines()]  # in the node's log format, not bare stderr
    [warning] = [e for e in entries if "FN_DISABLE_PLUGINS" in e["msg"]]
    assert warning["level"] == "warning"
    assert warning["msg"].startswith("FN_DISABLE_PLUGINS names no installed plugin: fn-metric (plugins: ")
    known = warning["msg"].split("(plugins: ")[1].split(")")[0].split(", ")
    assert {"fn-metrics", "call-log", "tracing", "driver-docker", "placer-ch"} <= set(known)


# ---------------------------------------------------------------------------------------------------------
# FN_HOT_PULL_TIMEOUT_MSECS through LB + runner processes
# ---------------------------------------------------------------------------------------------------------
async def test_an_image_on_a_registry_that_never_answers_is_fns_504_through_the_lb(platform, deploy_echo):
    """A "registry" on 127.0.0.1 that takes connections and never answers (Docker trusts loopback registries)."""
    connections: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()  # until the engine gives up

    registry = await asyncio.start_server(hang, "127.0.0.1", 0)
    image = f"127.0.0.1:{registry.sockets[0].getsockname()[1]}/fn-core-test/hangs:1"
    try:
        runner = await platform.runner(FN_HOT_PULL_TIMEOUT_MSECS="1000")
        lb = await platform.lb([runner])
        async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
            fn_id = (await deploy_echo(s, image))["fn"]["id"]
            loop = asyncio.get_running_loop()
            began = loop.time()
            async with s.post(f"/invoke/{fn_id}", data=b"x") as r:
                status, body = r.status, await r.read()
            waited = loop.time() - began
        assert (status, json.loads(body)) == (504, {"message": "Image pull timed out"}), lb.proc.log() + runner.proc.log()
        assert 1.0 <= waited < 8.0
        assert connections, "the engine never reached the registry"
        await wait_until(lambda: any(line[1] == fn_id for line in lb.proc.call_lines()), "the LB's call line")
        assert [(fn, status) for _, fn, _, status, _ in lb.proc.call_lines()] == [(fn_id, 504)]
        # the pull still hangs (the registry answers nothing): the runner's stop does not wait for it (it waited
        # until the engine gave up on the registry, ~25 s, as the SDK's pull asks for no timeout)
        began = loop.time()
        assert await asyncio.to_thread(runner.proc.stop) == 0, runner.proc.log()
        assert loop.time() - began < 8.0, runner.proc.log()
    finally:
        for writer in connections:
            writer.close()
        registry.close()
