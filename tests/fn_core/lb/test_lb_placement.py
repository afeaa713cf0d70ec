"""Placement, NACK, retry and commit rules of the LB against fake gRPC runners."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from fn_core.proto import runner_pb2 as pb
from fn_core.records import RunnerStatus
from fn_core.testing import free_port, wait_until
from fn_core.transport import GrpcServer, ServerStream
from fn_core.transport.server import unary
from fn_core.wire import ENGAGE, MAX_DATA_CHUNK, REQUEST_ID_METADATA, STATUS, status_to_proto


async def test_invoke_round_trip_builds_fns_call(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners()
    _, session, recorder = await lb_factory([runner.address])
    ids = await deploy_fn(session)
    body = bytes(range(256)) * 100  # 25.6 KB: three frames
    async with session.post(f"/invoke/{ids['fn']['id']}", data=body, headers={"X-Custom": "v"}) as r:
        assert r.status == 200
        assert await r.read() == body
        assert r.headers["X-Echo"] == "yes"
        call_id = r.headers["Fn-Call-Id"]
    call = runner.calls[0]
    assert call["id"] == call_id
    assert call["fn_id"] == ids["fn"]["id"] and call["app_name"] == "app1"
    assert call["config"]["A"] == "app" and call["config"]["B"] == "fn"
    assert call["config"]["FN_MEMORY"] == "128" and call["config"]["FN_TYPE"] == "sync"
    assert call["config"]["FN_FN_ID"] == ids["fn"]["id"] and call["config"]["FN_APP_ID"] == ids["app"]["id"]
    assert call["headers"]["X-Custom"] == ["v"]
    assert len(runner.tries[0].slot_hash_id) == 64
    assert runner.metadata[0][REQUEST_ID_METADATA] == call_id
    frames = runner.frames[0]
    assert [len(f.data) for f in frames] == [MAX_DATA_CHUNK, MAX_DATA_CHUNK, len(body) - 2 * MAX_DATA_CHUNK]
    assert [f.eof for f in frames] == [False, False, True]
    outcome = recorder.outcomes[0][1]
    assert (outcome.status, outcome.runner, outcome.attempts) == (200, runner.address, 1)


async def test_empty_body_is_one_empty_eof_frame(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address])
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}") as r:
        assert r.status == 200 and await r.read() == b""
    assert [(f.data, f.eof) for f in runner.frames[0]] == [(b"", True)]


async def test_nack_moves_the_call_to_the_next_runner(fake_runners, lb_factory, deploy_fn):
    busy, free = await fake_runners("nack"), await fake_runners("echo")
    _, session, recorder = await lb_factory([busy.address, free.address], placer="naive")
    ids = await deploy_fn(session)
    for i in range(4):
        async with session.post(f"/invoke/{ids['fn']['id']}", data=f"call {i}") as r:
            assert r.status == 200 and await r.text() == f"call {i}"
    assert len(free.calls) == 4
    assert all(o.runner == free.address for _, o in recorder.outcomes)
    assert {o.attempts for _, o in recorder.outcomes} == {1, 2}  # naive starts on each runner in turn


async def test_fns_second_nack_form_a_grpc_status_503_moves_the_call_to_the_next_runner(fake_runners, lb_factory, deploy_fn):
    # Fn's pure runner answers a stream whose context ended before its TryCall with gRPC status code 503
    # (grpcio cannot send that code: our own server stands in for Fn's)
    from fn_core.transport import GrpcServer, RpcError
    from fn_core.wire import ENGAGE

    refused = []

    async def too_busy(stream) -> None:
        refused.append(await stream.read_message())
        raise RpcError(503, "too busy")

    busy = GrpcServer({ENGAGE: too_busy})
    busy_address = f"127.0.0.1:{await busy.start('127.0.0.1', 0)}"
    try:
        free = await fake_runners("echo")
        _, session, recorder = await lb_factory([busy_address, free.address], placer="naive")
        ids = await deploy_fn(session)
        for i in range(2):
            async with session.post(f"/invoke/{ids['fn']['id']}", data=f"call {i}") as r:
                assert r.status == 200 and await r.text() == f"call {i}"
    finally:
        await busy.stop(0)
    assert len(refused) == 1 and len(free.calls) == 2  # naive tried the busy one first once: not placed there
    assert {o.attempts for _, o in recorder.outcomes} == {1, 2}


async def test_unreachable_runner_is_skipped(fake_runners, lb_factory, deploy_fn):
    live = await fake_runners()
    dead = f"127.0.0.1:{free_port()}"
    _, session, recorder = await lb_factory([dead, live.address], placer="naive")
    ids = await deploy_fn(session)
    for _ in range(3):
        async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
            assert r.status == 200
    assert len(live.calls) == 3


async def test_an_unreachable_runner_is_warned_about_once_per_outage_and_its_return_is_said(
    fake_runners, lb_factory, deploy_fn, caplog
):
    caplog.set_level(logging.INFO, logger="fn_core.lb.runner_client")
    live = await fake_runners()
    port = free_port()
    _, session, _ = await lb_factory([f"127.0.0.1:{port}", live.address], placer="naive")
    ids = await deploy_fn(session)
    for _ in range(4):  # naive: the dead one is tried first for half of them
        async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
            assert r.status == 200
    down = [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING" and r.getMessage().startswith(f"runner unreachable, skipped until it answers runner=127.0.0.1:{port} ")]
    assert len(down) == 1, down  # not once a call: an outage is one line (a TLS mismatch, a runner down)
    back = await fake_runners(port=port)
    async with asyncio.timeout(10):  # once the channel's reconnect backoff (100 ms, growing) has passed
        while not back.calls:
            async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
                assert r.status == 200
            await asyncio.sleep(0.05)
    assert f"runner reachable again runner=127.0.0.1:{port}" in caplog.text


async def test_all_busy_until_placer_timeout_is_503_with_retry_after(fake_runners, lb_factory, deploy_fn):
    a, b = await fake_runners("nack"), await fake_runners("nack")
    node, session, recorder = await lb_factory([a.address, b.address], placer_timeout_s=0.3, retry_all_delay_ms=10)
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == "15"
        assert (await r.json())["message"] == "Timed out - server too busy"
        assert r.headers["Fn-Call-Id"]
    assert len(a.calls) >= 2 and len(b.calls) >= 2  # several passes, each re-sent in full
    assert node.agent.metrics.placement_retries == len(a.calls) + len(b.calls)
    assert recorder.outcomes[0][1].attempts == len(a.calls) + len(b.calls)


async def test_a_runner_host_that_accepts_and_never_answers_costs_the_placer_timeout_not_the_connect_timeout(
    lb_factory, deploy_fn, caplog
):
    """A frozen host takes the TCP connection and sends nothing: the dial waits for the connect timeout (5 s),
    but the call's search for a runner ends at the placer timeout, with Fn's 503; the runner is not called
    unreachable for that (it was not given its time)."""
    held: list[asyncio.StreamWriter] = []

    async def frozen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # no SETTINGS, ever

    server = await asyncio.start_server(frozen, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        _, session, recorder = await lb_factory([address], placer_timeout_s=0.3)
        ids = await deploy_fn(session)
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
            answered_s = loop.time() - began
            assert r.status == 503, await r.text()
            assert (await r.json())["message"] == "Timed out - server too busy"
    finally:
        server.close()
        for writer in held:
            writer.close()
    assert held, "the LB never dialled the runner"
    assert answered_s < 2.0  # the placer timeout (0.3 s) and the LB's work, far from the 5 s connect timeout
    assert recorder.outcomes[0][1].status == 503
    assert "runner unreachable" not in caplog.text


async def test_committed_error_is_never_resent(fake_runners, lb_factory, deploy_fn):
    failing, other = await fake_runners(("error", 502, "function failed")), await fake_runners()
    _, session, _ = await lb_factory([failing.address, other.address], placer="naive")
    ids = await deploy_fn(session)
    answers = []
    for _ in range(2):
        async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
            answers.append((r.status, await r.read()))
    # naive starts each call on another runner: one ran on the failing runner and was not re-sent
    assert sorted(answers) == [(200, b"x"), (502, b'{"message": "function failed"}')]
    assert len(failing.calls) == 1 and len(other.calls) == 1


async def test_runner_lost_after_commit_is_5xx_not_a_retry(fake_runners, lb_factory, deploy_fn):
    doomed, other = await fake_runners("hang"), await fake_runners()
    _, session, recorder = await lb_factory([doomed.address, other.address], placer="ch")
    ids = await deploy_fn(session, fn={"name": "fn-doomed"})
    # make sure ch puts this fn on the doomed runner first
    first = [doomed, other] if _ch_first(ids["fn"]["id"], 2) == 0 else [other, doomed]
    first[0].behaviour, first[1].behaviour = "hang", "echo"
    task = asyncio.create_task(session.post(f"/invoke/{ids['fn']['id']}", data="x"))
    await asyncio.wait_for(first[0].hanging.wait(), 10)
    await first[0].stop()
    r = await asyncio.wait_for(task, 10)
    assert 500 <= r.status < 600
    message = (await r.json())["message"]
    assert message in ("the runner was lost during the call", "the runner ended the call without a result")
    assert first[0].address.split(":")[1] not in message  # where the runner is stays the operator's (its log)
    assert first[1].calls == []
    assert recorder.outcomes[0][1].attempts == 1


def _start(status: int = 200, headers: dict[str, str] | None = None) -> pb.RunnerMsg:
    meta = pb.HttpRespMeta(status_code=status, headers=[pb.HttpHeader(key=k, value=v) for k, v in (headers or {}).items()])
    return pb.RunnerMsg(result_start=pb.CallResultStart(http=meta))


DATA = pb.RunnerMsg(data=pb.DataFrame(data=b"part of an answer"))
DONE = pb.RunnerMsg(finished=pb.CallFinished(success=True))
NACK = pb.RunnerMsg(finished=pb.CallFinished(success=False, errorCode=503, errorStr="Timed out - server too busy"))


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ([DATA, NACK], "an answer's data before its result_start"),  # a 503 after data: no NACK, it may have run
        ([_start(99), DATA, DONE], "result_start with status 99 is not a final HTTP status"),
        ([_start(100), DONE], "result_start with status 100 is not a final HTTP status"),
        ([_start(600), DONE], "result_start with status 600 is not a final HTTP status"),
        ([_start(200, {"Fn-Call-Id:spoof": "v"}), DONE], "result_start with a header name that is not an HTTP token"),
        ([_start(200, {"X-A": "a\r\nSet-Cookie: x"}), DONE], "result_start with a header value with a control character"),
        ([_start(), _start(), DONE], "a second result_start"),
    ],
)
async def test_a_runner_breaking_fns_protocol_fails_the_call_with_502_once_and_never_a_nack(
    fake_runners, lb_factory, deploy_fn, script, why
):
    broken, other = await fake_runners(("script", script)), await fake_runners()
    _, session, recorder = await lb_factory([broken.address, other.address], placer="naive")
    ids = await deploy_fn(session)
    answers = []
    for _ in range(2):  # naive starts each call on another runner: one of them on the broken one
        async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
            answers.append((r.status, await r.json() if r.status != 200 else await r.read()))
    assert sorted(answers, key=repr) == sorted([(200, b"x"), (502, {"message": f"the runner sent an invalid answer: {why}"})],
                                               key=repr)
    assert len(broken.calls) == 1 and len(other.calls) == 1  # never re-sent
    assert sorted(outcome.status for _, outcome in recorder.outcomes) == [200, 502]


async def test_an_unreadable_runner_message_or_error_status_is_an_error_answer_the_client_can_read(
    fake_runners, lb_factory, deploy_fn
):
    async def garbling(stream: ServerStream) -> None:  # a runner on our transport, which sends bytes as they are
        while (await stream.read_message()) is not None:
            pass  # the try and the body
        await stream.send(_start().SerializeToString())
        await stream.send(b"\xff\xff\xff\xff")  # no protobuf reads it
        stream.end()

    async def status(request: bytes) -> bytes:
        return status_to_proto(RunnerStatus()).SerializeToString()

    server = GrpcServer({ENGAGE: garbling, STATUS: unary(status)})
    port = await server.start("127.0.0.1", 0)
    try:
        _, session, _ = await lb_factory([f"127.0.0.1:{port}"])
        ids = await deploy_fn(session)
        async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
            assert (r.status, await r.json()) == (502, {"message": "the runner sent an invalid answer: an unreadable message"})
            assert r.headers["Fn-Call-Id"]
    finally:
        await server.stop(0)
    # a finished's error code outside 400-599 is no status for the client: the runner's message with a 500
    odd = await fake_runners(("script", [pb.RunnerMsg(finished=pb.CallFinished(success=False, errorCode=1000, errorStr="odd"))]))
    _, session, _ = await lb_factory([odd.address])
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
        assert (r.status, await r.json()) == (500, {"message": "odd"})


async def test_client_gone_cancels_the_runner_stream(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners("hang")
    node, _, recorder = await lb_factory([runner.address])
    async with aiohttp.ClientSession(node.url) as setup:
        ids = await deploy_fn(setup)
    client = aiohttp.ClientSession(node.url)
    task = asyncio.create_task(client.post(f"/invoke/{ids['fn']['id']}", data="x"))
    await asyncio.wait_for(runner.hanging.wait(), 10)
    task.cancel()
    await client.close()
    for _ in range(200):  # bounded: the cancellation travels LB -> gRPC -> fake runner
        if runner.cancelled and recorder.outcomes:
            break
        await asyncio.sleep(0.02)
    assert runner.cancelled == 1
    outcome = recorder.outcomes[0][1]
    assert outcome.status == 444
    # the call's line says where it was cut off, not "runner=- attempts=0"
    assert (outcome.runner, outcome.attempts) == (runner.address, 1)


def _ch_first(fn_id: str, n: int) -> int:
    from fn_plugins_builtin.placer_ch import fn_hash, jump_hash

    return jump_hash(fn_hash(fn_id), n)


async def test_ch_sticks_naive_spreads(fake_runners, lb_factory, deploy_fn):
    runners = [await fake_runners() for _ in range(3)]
    _, session, _ = await lb_factory([r.address for r in runners], placer="ch")
    ids = await deploy_fn(session)
    for _ in range(6):
        async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
            assert r.status == 200
    assert sorted(len(r.calls) for r in runners) == [0, 0, 6]


async def test_status_polling_feeds_a_status_placer(fake_runners, lb_factory, deploy_fn):
    from fn_core import Placer, hookimpl

    seen: list = []

    class StatusPlacer:
        @hookimpl
        def place_call(self, call, runners):
            seen.append([r.status for r in runners])
            return list(runners)

    class Plugin:
        @hookimpl
        def register_placers(self):
            return [Placer(name="status-test", hooks=StatusPlacer(), wants_runner_status=True)]

    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address], placer="status-test", status_poll_ms=20, plugins=(("sp", Plugin()),))
    ids = await deploy_fn(session)
    for _ in range(100):
        async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
            assert r.status == 200
        if seen[-1][0] is not None and seen[-1][0].requests_received >= 1:
            break
        await asyncio.sleep(0.02)
    assert seen[-1][0] is not None and seen[-1][0].requests_received >= 1


async def test_a_runner_that_does_not_answer_status_is_seen_failed_and_the_lb_hooks_see_why(fake_runners, lb_factory, deploy_fn):
    from fn_core import Placer, hookimpl

    seen: list = []
    heard: dict = {}

    class StatusPlacer:
        @hookimpl
        def place_call(self, call, runners):
            seen.append({r.address: r.status for r in runners})
            return list(runners)

    class Plugin:
        @hookimpl
        def register_placers(self):
            return [Placer(name="status-test", hooks=StatusPlacer(), wants_runner_status=True)]

        @hookimpl
        def runner_status(self, status, runner):
            heard[runner] = status

    class Broken:
        @hookimpl
        def runner_status(self, status, runner):
            raise RuntimeError("boom")

    live, gone = await fake_runners(), f"127.0.0.1:{free_port()}"
    plugins = (("sp", Plugin()), ("broken-watcher", Broken()))
    _, session, _ = await lb_factory([gone, live.address], placer="status-test", status_poll_ms=20, plugins=plugins)
    ids = await deploy_fn(session)
    await wait_until(lambda: gone in heard and live.address in heard, "both runners polled")
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
        assert r.status == 200
    statuses = seen[-1]
    assert statuses[gone].failed and statuses[gone].error_str.startswith("no answer to Status: ")
    assert not statuses[live.address].failed
    # an LB-side watcher that raises is reported as on the runner, and the others still ran
    assert heard[live.address].custom_status["plugin-error:broken-watcher"] == "RuntimeError: boom"


async def test_detached_is_202(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners(("status", 202, {}))
    _, session, recorder = await lb_factory([runner.address])
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x", headers={"Fn-Invoke-Type": "detached"}) as r:
        assert r.status == 202
        assert r.headers["Fn-Call-Id"]
    assert runner.calls[0]["type"] == "detached"
    assert json.loads(runner.tries[0].models_call_json)["config"]["FN_TYPE"] == "sync"


async def test_a_detached_call_waits_for_a_runner_only_the_detached_placer_timeout(fake_runners, lb_factory, deploy_fn):
    busy = await fake_runners("nack")
    _, session, recorder = await lb_factory([busy.address], placer_timeout_s=60.0, detached_placer_timeout_s=0.3)
    ids = await deploy_fn(session)
    began = asyncio.get_running_loop().time()
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x", headers={"Fn-Invoke-Type": "detached"}) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "15"
        assert (await r.json())["message"] == "Timed out - server too busy"
    assert asyncio.get_running_loop().time() - began < 10  # not the sync calls' 60 s
    assert recorder.outcomes[0][1].status == 503


async def test_a_detached_stream_is_cut_after_placement_fn_timeout_and_headroom(fake_runners, lb_factory, deploy_fn):
    stuck = await fake_runners("start-hang")  # started (202 to the client), then never finishes
    _, session, recorder = await lb_factory([stuck.address], detached_placer_timeout_s=0.2, execution_headroom_msecs=300)
    ids = await deploy_fn(session, fn={"timeout": 1})
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x", headers={"Fn-Invoke-Type": "detached"}) as r:
        assert r.status == 202
    await wait_until(lambda: stuck.cancelled == 1, "the runner's stream cancelled", timeout_s=15)  # after 0.2 + 1 + 0.3 s
    await wait_until(lambda: bool(recorder.outcomes), "the call reported")
    outcome = recorder.outcomes[0][1]
    # Fn: a deadline once the call is on a runner is the reservation failing, not the function timing out
    assert (outcome.status, outcome.error) == (500, "Unable to service the request")
    assert (outcome.runner, outcome.attempts) == (stuck.address, 1)  # where it was cut off


async def test_a_detached_call_a_runner_holds_unstarted_past_its_bound_is_an_error_answer_not_a_202(fake_runners, lb_factory, deploy_fn):
    full = await fake_runners("hang")  # a blocking runner at capacity: it holds the call waiting for a slot
    _, session, recorder = await lb_factory([full.address], detached_placer_timeout_s=0.2, execution_headroom_msecs=300)
    ids = await deploy_fn(session, fn={"timeout": 1})
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x", headers={"Fn-Invoke-Type": "detached"}) as r:
        assert r.status == 500 and await r.json() == {"message": "Unable to service the request"}
        assert r.headers["Fn-Call-Id"]
    await wait_until(lambda: full.cancelled == 1, "the runner's stream cancelled")
    assert recorder.outcomes[0][1].status == 500


@pytest.mark.parametrize("answer", ["addresses", "one ref", "none", "raises", "refs of its own"])
async def test_a_placer_that_breaks_its_contract_fails_the_call_naming_itself(fake_runners, lb_factory, deploy_fn, answer, caplog):
    from fn_core import Placer, hookimpl
    from fn_core.records import RunnerRef

    class Broken:
        @hookimpl
        def place_call(self, call, runners):
            if answer == "raises":
                raise RuntimeError("placer boom")
            if answer == "refs of its own":
                return [RunnerRef(address=r.address) for r in runners]
            return {"addresses": [r.address for r in runners], "one ref": runners[0], "none": None}[answer]

    class Plugin:
        @hookimpl
        def register_placers(self):
            return [Placer(name="broken", hooks=Broken())]

    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address], placer="broken", plugins=(("broken-placer", Plugin()),))
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
        assert (r.status, await r.json()) == (500, {"message": "internal server error (placer broken failed)"})
    assert runner.calls == []
    assert "placer 'broken' of plugin 'broken-placer' failed in place_call" in caplog.text
