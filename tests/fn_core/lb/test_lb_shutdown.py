"""Stopping an LB: the whole stop takes at most its grace, and a call the stop cuts is the server's error, not a client's
444: a 500 once a runner has it (it ran: not to be sent again), the 503 only for one never placed."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from fn_core.config import load_config
from fn_core.lb.main import start_lb
from fn_core.plugins import get_plugin_manager
from fn_core.testing import wait_until

from .conftest import Recorder, deploy

GRACE_S = 1.0


@pytest.mark.parametrize(
    ("grace_from", "grace"),
    # 13 s: aiohttp rounds waits over 5 s up to a whole second; "config": FN_SHUTDOWN_GRACE, what `fn-core lb` uses
    [("start", GRACE_S), ("stop", GRACE_S), ("stop", 13.0), ("config", GRACE_S)],
)
async def test_a_stop_cuts_a_call_on_a_runner_after_the_grace_once_and_reports_it_as_500_not_the_retryable_503(
    tmp_path, fake_runners, grace_from, grace
):
    runner = await fake_runners("hang")
    recorder = Recorder()
    env = {"FN_SHUTDOWN_GRACE": str(grace)} if grace_from == "config" else {}
    config = load_config(env=env, overrides={"db_url": f"sqlite3://{tmp_path}/fn.db", "placer_timeout_s": 5.0})
    pm = get_plugin_manager(config, load_entrypoints=False, extra_plugins=[("recorder", recorder)])
    # the grace given at start is the stop's default; one given to stop() wins over it
    given = {"start": grace, "stop": 30.0, "config": None}[grace_from]
    node = await start_lb(config, pm, host="127.0.0.1", port=0, runner_addresses=[runner.address], grace=given)
    async with aiohttp.ClientSession(node.url) as session:
        ids = await deploy(session)
        call = asyncio.create_task(session.post(f"/invoke/{ids['fn']['id']}", data="x"))
        await asyncio.wait_for(runner.hanging.wait(), 5)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await (node.stop(grace=grace) if grace_from == "stop" else node.stop())
        took = loop.time() - began
        with pytest.raises(aiohttp.ClientError):  # its connection was cut: nothing could be answered
            await call
    # within the grace (a second under it at most, where aiohttp's rounding is allowed for)
    assert min(grace * 0.9, grace - 2.1) <= took < grace + min(grace * 0.5, 0.3), f"the stop took {took:.2f} s for a grace of {grace} s"
    await wait_until(lambda: bool(recorder.outcomes), "the cut call reported")
    outcome = recorder.outcomes[0][1]
    # not 444 "Client cancelled context", nor the 503 a client would send again: the runner had the call
    assert (outcome.status, outcome.error) == (500, "call cut short: the LB is shutting down")
    assert outcome.runner == runner.address
    assert node.agent is not None and node.agent.metrics.calls_by_status == {500: 1}
    await wait_until(lambda: runner.cancelled == 1, "the runner's stream cancelled")


async def test_a_call_answered_while_the_lb_stops_says_connection_close(tmp_path, fake_runners):
    """Its keep-alive connection closes after it: the client must not send its next request into it (Go's Shutdown
    marks such answers the same way)."""
    runner = await fake_runners("hold")
    config = load_config(env={}, overrides={"db_url": f"sqlite3://{tmp_path}/fn.db", "placer_timeout_s": 5.0})
    node = await start_lb(config, get_plugin_manager(config, load_entrypoints=False), host="127.0.0.1", port=0,
                          runner_addresses=[runner.address], grace=5.0)
    async with aiohttp.ClientSession(node.url) as session:
        ids = await deploy(session)
        runner.release.set()
        async with session.post(f"/invoke/{ids['fn']['id']}", data="before") as before:
            assert before.status == 200 and "Connection" not in before.headers  # kept alive, as usual
        runner.release.clear()
        runner.hanging.clear()
        call = asyncio.create_task(session.post(f"/invoke/{ids['fn']['id']}", data="during"))
        await asyncio.wait_for(runner.hanging.wait(), 5)
        stopping = asyncio.create_task(node.stop())
        await wait_until(lambda: node.agent is not None and node.agent.closing, "the stop to begin")
        runner.release.set()
        answer = await asyncio.wait_for(call, 5)
        assert answer.status == 200 and await answer.read() == b"during"
        assert answer.headers["Connection"] == "close"
        await asyncio.wait_for(stopping, 10)


async def test_a_detached_call_the_stop_cuts_is_reported_as_cut_by_the_lb_not_as_its_runner_lost(
    tmp_path, fake_runners, caplog
):
    runner = await fake_runners("start-hang")  # started (the client has its 202), then runs on
    recorder = Recorder()
    config = load_config(env={}, overrides={"db_url": f"sqlite3://{tmp_path}/fn.db"})
    pm = get_plugin_manager(config, load_entrypoints=False, extra_plugins=[("recorder", recorder)])
    node = await start_lb(config, pm, host="127.0.0.1", port=0, runner_addresses=[runner.address], grace=GRACE_S)
    async with aiohttp.ClientSession(node.url) as session:
        ids = await deploy(session)
        async with session.post(f"/invoke/{ids['fn']['id']}", data="x", headers={"Fn-Invoke-Type": "detached"}) as r:
            assert r.status == 202
        await node.stop()
    await wait_until(lambda: bool(recorder.outcomes), "the cut call reported")
    outcome = recorder.outcomes[0][1]
    assert (outcome.status, outcome.error) == (500, "call cut short: the LB is shutting down")  # it ran: no 503
    assert node.agent is not None and node.agent.metrics.calls_by_status == {500: 1}
    await wait_until(lambda: runner.cancelled == 1, "the runner's stream cancelled")
    assert "lost during call" not in caplog.text  # the runner was fine: this LB cut the call


async def start_over_a_full_runner(tmp_path, fake_runners):
    """An LB whose one runner refuses every call (full, in non-blocking mode): a call waits for room until its stop."""
    runner = await fake_runners("nack")
    recorder = Recorder()
    # the placer would wait 60 s and the detached one 30 s: the stop ends the wait first
    settings = {"db_url": f"sqlite3://{tmp_path}/fn.db", "placer_timeout_s": 60.0, "detached_placer_timeout_s": 30.0}
    config = load_config(env={}, overrides=settings)
    pm = get_plugin_manager(config, load_entrypoints=False, extra_plugins=[("recorder", recorder)])
    node = await start_lb(config, pm, host="127.0.0.1", port=0, runner_addresses=[runner.address], grace=GRACE_S)
    return runner, recorder, node


@pytest.mark.parametrize("invoke_type", ["sync", "detached"])
async def test_a_call_still_waiting_for_a_runner_when_the_grace_ends_gets_the_503_before_its_connection_closes(
    tmp_path, fake_runners, invoke_type
):
    runner, recorder, node = await start_over_a_full_runner(tmp_path, fake_runners)
    async with aiohttp.ClientSession(node.url) as session:
        ids = await deploy(session)
        call = asyncio.create_task(session.post(f"/invoke/{ids['fn']['id']}", data="x", headers={"Fn-Invoke-Type": invoke_type}))
        await wait_until(lambda: len(runner.calls) >= 2, "the call refused by the runner, and tried again")
        loop = asyncio.get_running_loop()
        began = loop.time()
        await node.stop()
        took = loop.time() - began
        answer = await asyncio.wait_for(call, 5)  # not a connection closed with no answer
        assert (answer.status, await answer.json()) == (503, {"message": "Server is shutting down"})
        assert answer.headers["Retry-After"] == "15" and answer.headers["Fn-Call-Id"]  # never ran: to be sent again
        assert answer.headers["Connection"] == "close"
    assert took < GRACE_S + 0.3, f"the stop took {took:.2f} s for a grace of {GRACE_S} s"
    assert took > GRACE_S - 0.5  # it waited for room for most of the grace
    await wait_until(lambda: bool(recorder.outcomes), "the call reported")
    outcome = recorder.outcomes[0][1]
    assert (outcome.status, outcome.error, outcome.runner) == (503, "Server is shutting down", "")
    assert node.agent is not None and node.agent.metrics.calls_by_status == {503: 1}


async def test_a_client_still_sending_its_body_when_the_stop_waits_no_longer_gets_the_503_and_no_call_is_logged(
    tmp_path, fake_runners, caplog
):
    caplog.set_level(logging.INFO, logger="fn_core.calls")
    runner, recorder, node = await start_over_a_full_runner(tmp_path, fake_runners)
    async with aiohttp.ClientSession(node.url) as session:
        ids = await deploy(session)
    reader, writer = await asyncio.open_connection(node.host, node.port)
    writer.write(f"POST /invoke/{ids['fn']['id']} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + b"x" * 40)
    await writer.drain()
    await asyncio.sleep(0.1)  # its handler waits for the rest of the body
    stopping = asyncio.create_task(node.stop())
    answer = await asyncio.wait_for(reader.read(), 5)  # all of it: the connection closes after it
    writer.close()
    await stopping
    assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b'{"message": "Server is shutting down"}'), answer
    assert not runner.calls and not recorder.outcomes  # it never ran, nor was it a call
    assert f"invoke rejected method=POST path=/invoke/{ids['fn']['id']} status=503 " in caplog.text
