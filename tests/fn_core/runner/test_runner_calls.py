"""Calls through a real runner: the outcomes of issue 3, each with Fn's code."""

from __future__ import annotations

import asyncio

import pytest

from fn_core.models import slot_key
from fn_core.testing import wait_until


async def test_echo(start, rc, echo_image):
    node = await start()
    result = await rc.run(node.address, rc.call(), b"hello runner")
    assert result.finished.success, result.finished
    assert (result.status, result.body) == (200, b"hello runner")
    assert result.headers["fn-fdk-version"].startswith("fdk-python/")
    assert result.finished.image == echo_image
    assert len(rc.containers()) == 1
    again = await rc.run(node.address, rc.call(), b"again")
    assert again.body == b"again"
    assert len(rc.containers()) == 1  # reused, not a second container
    await node.stop()
    assert rc.containers() == []


async def test_empty_and_big_bodies_and_multi_frame_response(start, rc):
    node = await start()
    empty = await rc.run(node.address, rc.call(), b"")
    assert empty.finished.success and empty.body == b""
    big = bytes(range(256)) * 4096  # 1 MiB, binary
    result = await rc.run(node.address, rc.call(), big)
    assert result.finished.success and result.body == big
    assert result.frames >= len(big) // (10 * 1024)
    text = await rc.run(node.address, rc.call(), {"repeat": 50000, "text": "ab"})
    assert text.body == b"ab" * 50000 and text.frames >= 10


async def test_headers_and_env(start, rc):
    node = await start()
    spoofed = {"Fn-Call-Id": ["SPOOFED"], "Fn-Deadline": ["2000-01-01T00:00:00Z"]}  # the runner's own win (as Fn's Set)
    # FN_MEMORY as the LB put it in the config before an override_call plugin changed the call's memory
    call = rc.call(config={"GREETING": "hi", "FN_MEMORY": "64"}, headers={"X-Custom-In": ["abc"], "Content-Type": ["application/json"], **spoofed})
    result = await rc.run(node.address, call, {"headers": {"X-Custom": "yes"}})
    assert result.finished.success
    assert result.headers["x-custom"] == "yes" and result.headers["content-type"] == "application/json"
    env = (await rc.run(node.address, call, {"env": True})).json()
    assert env["GREETING"] == "hi"
    assert (env["FN_APP_ID"], env["FN_FN_ID"], env["FN_MEMORY"], env["FN_TYPE"]) == ("app1", "fn1", "128", "sync")
    assert (env["FN_LISTENER"], env["FN_FORMAT"]) == ("unix:/tmp/iofs/lsnr.sock", "http-stream")
    seen = (await rc.run(node.address, call, {"headers_echo": True})).json()
    assert seen["x-custom-in"] == "abc" and seen["fn-call-id"] == call.id
    assert isinstance(seen["fn-deadline"], str) and not seen["fn-deadline"].startswith("2000")


async def test_a_call_sent_with_another_calls_slot_key_never_joins_its_containers(start, rc):
    # whoever reaches the gRPC port names the slot: a key must not let one fn's call into another's containers
    node = await start()
    victim = rc.call(config={"DB_PASSWORD": "hunter2"})
    key = slot_key(victim).hex()
    assert (await rc.run(node.address, victim, {"env": True}, slot=key)).json()["DB_PASSWORD"] == "hunter2"
    intruder = rc.call(app_id="intruder", fn_id="intruder-fn", idle_timeout=3600)
    env = (await rc.run(node.address, intruder, {"env": True}, slot=key)).json()
    assert (env["FN_APP_ID"], "DB_PASSWORD" in env) == ("intruder", False)  # a container of its own
    assert len(rc.containers()) == 2
    # the victim's next call is served by the victim's container, not one started from the intruder's call
    again = rc.call(config={"DB_PASSWORD": "hunter2"})
    env = (await rc.run(node.address, again, {"env": True}, slot=key)).json()
    assert (env["FN_APP_ID"], env["DB_PASSWORD"]) == ("app1", "hunter2")
    assert len(rc.containers()) == 2


async def test_a_slot_key_taken_first_by_another_call_does_not_capture_the_calls_it_names(start, rc):
    node = await start()
    victim = rc.call(config={"DB_PASSWORD": "hunter2"})
    key = slot_key(victim).hex()
    squatter = rc.call(app_id="intruder", fn_id="intruder-fn")
    assert (await rc.run(node.address, squatter, {"env": True}, slot=key)).json()["FN_APP_ID"] == "intruder"
    env = (await rc.run(node.address, victim, {"env": True}, slot=key)).json()
    assert (env["FN_APP_ID"], env["DB_PASSWORD"]) == ("app1", "hunter2")
    assert len(rc.containers()) == 2
    # a key that is no SHA-256 is not taken as one: the runner's own
    assert (await rc.run(node.address, rc.call(config={"DB_PASSWORD": "hunter2"}), {"env": True}, slot="ab")).finished.success
    assert len(rc.containers()) == 2


async def test_function_error_keeps_the_container(start, rc):
    node = await start()
    result = await rc.run(node.address, rc.call(), {"fail": "boom"})
    assert not result.started
    assert (result.finished.success, result.finished.errorCode, result.finished.errorStr) == (False, 502, "function failed")
    assert result.finished.errorUser
    [before] = rc.containers()
    assert (await rc.run(node.address, rc.call(), b"ok")).body == b"ok"
    assert [c.id for c in rc.containers()] == [before.id]


async def test_timeout_kills_the_container(start, rc):
    node = await start()
    call = rc.call(timeout=1)
    result = await rc.run(node.address, call, {"sleep_ms": 2500})
    assert (result.finished.success, result.finished.errorCode, result.finished.errorStr) == (False, 504, "Timed out")
    assert node.agent.containers() == []  # retired (and killed) before the 504 was sent
    after = await rc.run(node.address, call, b"fresh")  # served by a new container, no late write leaks in
    assert after.finished.success and after.body == b"fresh"
    assert len(node.agent.containers()) == 1


async def test_crash_reports_exit_code_and_is_replaced(start, rc):
    node = await start()
    result = await rc.run(node.address, rc.call(), {"exit": 3})
    assert (result.finished.errorCode, result.finished.errorStr) == (502, "container exit code 3")
    assert (await rc.run(node.address, rc.call(), b"alive")).body == b"alive"


async def test_out_of_memory(start, rc):
    node = await start()
    result = await rc.run(node.address, rc.call(memory=32), {"allocate_mb": 128})
    assert (result.finished.errorCode, result.finished.errorStr) == (502, "container out of memory")


async def test_a_container_killed_from_outside_is_its_exit_code_not_out_of_memory(start, rc, docker_client):
    """Fn reads 137 (SIGKILL) as the OOM killer's; Docker says whether it was (OOMKilled), so an operator's
    `docker kill` during a call is told apart from a function that ran out of memory."""
    node = await start()
    running = asyncio.create_task(rc.run(node.address, rc.call(timeout=30), {"sleep_ms": 20000}))
    await wait_until(lambda: [c.state for c in node.agent.containers()] == ["busy"] and node.agent.containers()[0].calls == 1,
                     "the call to reach its container", timeout_s=30)
    docker_client.containers.get(node.agent.containers()[0].id).kill()
    result = await asyncio.wait_for(running, 15)
    assert (result.finished.errorCode, result.finished.errorStr) == (502, "container exit code 137")


async def test_response_too_large(start, rc):
    node = await start(max_response_size=1000)
    result = await rc.run(node.address, rc.call(), {"repeat": 2000, "text": "x"})
    assert (result.finished.success, result.finished.errorCode) == (False, 502)
    assert result.finished.errorStr == "function response body too large"
    assert (await rc.run(node.address, rc.call(), b"small")).body == b"small"


async def test_response_header_too_large(start, rc):
    node = await start(max_hdr_response_size=4096)  # FN_MAX_HDR_RESPONSE_SIZE
    result = await rc.run(node.address, rc.call(), {"headers": {"X-Big": "v" * 9000}})
    assert (result.finished.success, result.finished.errorCode) == (False, 502)
    assert result.finished.errorStr == "function response header too large"
    assert (await rc.run(node.address, rc.call(), b"next call")).body == b"next call"  # on a fresh container
    many = {f"X-H{i}": "v" * 40 for i in range(130)}  # ~7 KB: each line fits, the head does not
    result = await rc.run(node.address, rc.call(), {"headers": many})
    assert (result.finished.errorCode, result.finished.errorStr) == (502, "function response header too large")
    await node.stop()

    node = await start(max_hdr_response_size=64 * 1024)
    result = await rc.run(node.address, rc.call(), {"headers": {"X-Big": "v" * 20000}})
    assert result.finished.success and result.headers["x-big"] == "v" * 20000


async def test_by_default_a_response_head_may_be_as_big_as_fns_default_takes(start, rc):
    """Fn's FN_MAX_HDR_RESPONSE_SIZE=0 is Go's 10 MiB a head, with no bound on a line or a count; ours is 1 MiB a head,
    and neither a line nor the count is bounded tighter: a big token and many headers pass whole."""
    node = await start()
    token = {"X-Big": "v" * 9000}
    result = await rc.run(node.address, rc.call(), {"headers": token})
    assert result.finished.success, result.finished
    assert (result.status, result.headers["x-big"], result.body) == (200, "v" * 9000, b'{"headers": {"X-Big": "' + b"v" * 9000 + b'"}}')
    many = {f"X-H{i}": f"value-{i}" for i in range(130)}
    result = await rc.run(node.address, rc.call(), {"headers": many})
    assert result.finished.success, result.finished
    assert {k: v for k, v in result.headers.items() if k.startswith("x-h")} == {k.lower(): v for k, v in many.items()}
    assert len(rc.containers()) == 1  # one container served both: neither was a bad answer


async def test_garbage_call_json_is_a_clean_error(start, rc):
    node = await start()
    for garbage in ("not json", "[]", '{"id": 5}', '{"id": "x", "memory": "lots"}',
                    # a container without a memory limit, outside the budget; a call that may run no time at all
                    rc.call(memory=0).to_json(), rc.call(timeout=0).to_json(), rc.call(memory=-1).to_json()):
        result = await rc.engage(node.address, garbage, b"")
        assert not result.started
        assert (result.finished.success, result.finished.errorCode) == (False, 400), garbage
    assert (await rc.run(node.address, rc.call(), b"still serving")).body == b"still serving"


async def test_a_body_over_fn_max_request_size_is_refused_by_the_runner_before_any_container(start, rc):
    # whoever reaches the gRPC port sends the body: the runner bounds it too, not only the LB
    node = await start(max_request_size=64 * 1024)
    result = await rc.run(node.address, rc.call(), b"x" * (200 * 1024))  # 20 frames; refused at the 7th
    assert not result.started
    assert (result.finished.success, result.finished.errorCode) == (False, 413)
    assert result.finished.errorStr == "request body too large for this runner (over 65536 bytes)"
    assert rc.containers() == []  # nothing started for it
    assert node.servicer.core.requests_handled == 1  # an answer, not a NACK: the LB does not try the next runner
    exact = b"y" * (64 * 1024)
    assert (await rc.run(node.address, rc.call(), exact)).body == exact


async def test_call_bigger_than_the_runner_is_400(start, rc):
    node = await start(max_total_memory_bytes=256 * 1024 * 1024)
    result = await rc.run(node.address, rc.call(memory=512))
    assert (result.finished.errorCode, result.finished.errorStr) == (400, "Requested CPU/Memory cannot be allocated")


async def test_first_message_must_be_try(start, rc):
    import grpc

    from fn_core.proto import runner_pb2 as pb
    from fn_core.proto import runner_pb2_grpc

    node = await start()
    async with grpc.aio.insecure_channel(node.address) as channel:
        stream = runner_pb2_grpc.RunnerProtocolStub(channel).Engage()
        await stream.write(pb.ClientMsg(data=pb.DataFrame(data=b"x", eof=True)))
        messages = [msg async for msg in stream]
    assert [m.WhichOneof("body") for m in messages] == ["finished"]
    assert messages[0].finished.errorCode == 400 and not messages[0].finished.success
    assert (await rc.run(node.address, rc.call(), b"fine")).body == b"fine"


@pytest.mark.parametrize("where", ["try", "body"])
async def test_a_message_that_is_no_clientmsg_is_a_400_finished_not_a_broken_stream(start, rc, where):
    import grpc

    from fn_core.proto import runner_pb2 as pb

    node = await start()
    garbage = b"\xff\xff\xff\xff"  # no protobuf reads it
    first = garbage if where == "try" else pb.ClientMsg(**{"try": pb.TryCall(models_call_json=rc.call().to_json())}).SerializeToString()
    async with grpc.aio.insecure_channel(node.address) as channel:
        engage = channel.stream_stream("/RunnerProtocol/Engage", request_serializer=lambda raw: raw,
                                       response_deserializer=pb.RunnerMsg.FromString)
        stream = engage()
        await stream.write(first)
        if where == "body":
            await stream.write(garbage)
        messages = [msg async for msg in stream]  # the stream ends OK: an Fn LB reads the finished, not a lost runner
    assert [m.WhichOneof("body") for m in messages] == ["finished"]
    assert (messages[0].finished.errorCode, messages[0].finished.errorStr) == (400, "invalid message: not a ClientMsg")
    assert (await rc.run(node.address, rc.call(), b"fine")).body == b"fine"


async def test_a_header_value_no_container_request_can_carry_is_a_400_and_the_warm_container_stays(start, rc):
    node = await start()
    assert (await rc.run(node.address, rc.call(), b"warm")).body == b"warm"
    [container] = node.agent.containers()
    for value, why in ((1, "invalid value for header 'X-A': int, not a string"), ("a\0b", "invalid value for header 'X-A'"),
                       ("a\x1bb", "invalid value for header 'X-A'")):
        result = await rc.run(node.address, rc.call(headers={"X-A": [value]}), b"x")
        assert not result.started and (result.finished.errorCode, result.finished.errorStr) == (400, why), value
    refused = await rc.run(node.address, rc.call(id="call\x7f1"), b"x")  # a call id goes in a header too
    assert (refused.finished.errorCode, refused.finished.errorStr) == (400, "invalid call id")
    again = await rc.run(node.address, rc.call(headers={"X-A": ["tab\tis fine"]}), b"again")
    assert again.body == b"again"
    assert node.agent.containers() == [container]  # the refusals never reached it, and did not retire it


async def test_idle_containers_are_paused_and_thawed(start, rc, docker_client):
    import asyncio

    node = await start(freeze_idle_msecs=0)
    await rc.run(node.address, rc.call(), b"one")
    [container] = node.agent.containers()
    for _ in range(200):
        if container.paused:
            break
        await asyncio.sleep(0.01)
    assert docker_client.api.inspect_container(container.id)["State"]["Paused"]
    assert (await rc.run(node.address, rc.call(), b"two")).body == b"two"
    assert [c.id for c in node.agent.containers()] == [container.id]
    await node.stop()
    assert rc.containers() == []  # a paused container is removed too


async def test_a_caller_gone_mid_call_leaves_the_container_warm_for_the_next_call(start, rc):
    import asyncio

    node = await start()
    assert (await rc.run(node.address, rc.call(), b"warm")).body == b"warm"
    [container] = node.agent.containers()
    abandoned = asyncio.create_task(rc.run(node.address, rc.call(), {"sleep_ms": 800, "repeat": 3, "text": "late"}))
    for _ in range(200):  # bounded: until the runner is running it
        if node.servicer.active:
            break
        await asyncio.sleep(0.01)
    assert node.servicer.active  # else the cancel below would not be "gone mid-call"
    abandoned.cancel()  # the LB's stream is cancelled: the client went away
    await asyncio.gather(abandoned, return_exceptions=True)
    for _ in range(300):  # bounded: the container finishes the abandoned request unseen
        if container.state == "idle":
            break
        await asyncio.sleep(0.01)
    assert container.state == "idle" and node.agent.containers() == [container]  # kept, not killed
    after = await rc.run(node.address, rc.call(), b"next")
    assert after.finished.success and after.body == b"next"  # nothing of the abandoned call leaks in
    assert node.agent.containers() == [container]  # the same warm container: no cold start


async def test_a_caller_gone_while_the_response_streams_leaves_the_container_warm(start, rc):
    import asyncio
    import json

    import grpc

    from fn_core.proto import runner_pb2 as pb
    from fn_core.proto import runner_pb2_grpc

    node = await start()
    assert (await rc.run(node.address, rc.call(), b"warm")).body == b"warm"
    [container] = node.agent.containers()
    big = json.dumps({"repeat": 4_000_000, "text": "x"}).encode()  # ~400 data frames: still streaming when cancelled
    async with grpc.aio.insecure_channel(node.address) as channel:
        stream = runner_pb2_grpc.RunnerProtocolStub(channel).Engage()
        await stream.write(pb.ClientMsg(**{"try": pb.TryCall(models_call_json=rc.call().to_json())}))
        await stream.write(pb.ClientMsg(data=pb.DataFrame(data=big, eof=True)))
        assert (await stream.read()).WhichOneof("body") == "result_start"
        stream.cancel()  # the LB's client went away while the runner writes the body to it
    for _ in range(300):  # bounded: the runner drains the container's answer and keeps it
        if container.state == "idle" and not node.servicer.active:
            break
        await asyncio.sleep(0.01)
    assert container.state == "idle" and node.agent.containers() == [container]  # kept, not killed
    after = await rc.run(node.address, rc.call(), b"next")
    assert after.finished.success and after.body == b"next"
    assert node.agent.containers() == [container]


async def test_a_container_that_died_while_idle_is_replaced_not_a_502(start, rc, docker_client, caplog):
    """Fn's first call after idle got a 502 from a dead hot container (fn#1470); here it takes a fresh one."""
    import docker.errors

    caplog.set_level("WARNING", logger="fn_core.runner.agent")
    node = await start()
    assert (await rc.run(node.address, rc.call(), b"first")).body == b"first"
    [hot] = node.agent.containers()
    docker_client.containers.get(hot.id).kill()  # OOM killer, a crash in a background thread, an operator...
    await wait_until(lambda: not hot.conn.open, "the runner sees the connection drop")

    result = await rc.run(node.address, rc.call(), b"second")

    assert result.finished.success and result.body == b"second"
    [fresh] = node.agent.containers()
    assert fresh.id != hot.id

    def removed() -> bool:
        try:
            docker_client.containers.get(hot.id)
        except docker.errors.NotFound:
            return True
        return False

    await wait_until(removed, "the dead container is removed")
    assert f"hot container {hot.id[:12]} of fn {rc.call().fn_id} exited with code 137 while idle" in caplog.text


async def test_a_closed_keep_alive_connection_to_a_live_container_is_reopened(start, rc):
    """fdk closes a connection idle for 75 s: the container is fine, so the next call uses it."""
    node = await start()
    assert (await rc.run(node.address, rc.call(), b"first")).body == b"first"
    [hot] = node.agent.containers()
    await hot.conn.close()

    assert (await rc.run(node.address, rc.call(), b"second")).body == b"second"
    assert node.agent.containers() == [hot] and hot.conn.open


async def test_an_lb_that_stops_reading_a_big_answer_holds_the_call_no_longer_than_its_timeout_and_a_grace(
    start, rc, monkeypatch
):
    """The LB reads a big answer only as fast as its client does; a client that stops reading must not pin the
    call (nor the container, nor a shutdown's grace) on the runner for ever: after the call's timeout, its `finished`
    waits FINISH_GRACE_S for the LB, then the stream is ended with an error status (a reset if a message was cut)."""
    import asyncio
    import json

    import grpc

    from fn_core.proto import runner_pb2 as pb
    from fn_core.proto import runner_pb2_grpc
    from fn_core.runner import servicer

    monkeypatch.setattr(servicer, "FINISH_GRACE_S", 1.0)
    node = await start()
    big = json.dumps({"repeat": 40_000_000, "text": "x"}).encode()  # 40 MB: far more than any window holds
    async with grpc.aio.insecure_channel(node.address) as channel:
        stream = runner_pb2_grpc.RunnerProtocolStub(channel).Engage()
        await stream.write(pb.ClientMsg(**{"try": pb.TryCall(models_call_json=rc.call(timeout=2, memory=512).to_json())}))
        await stream.write(pb.ClientMsg(data=pb.DataFrame(data=big, eof=True)))
        assert (await stream.read()).WhichOneof("body") == "result_start"
        # ... and reads no more: the runner's sends wait for window
        for _ in range(120):  # bounded: 2 s of timeout + 1 s of grace, and the container's removal
            if not node.servicer.active:
                break
            await asyncio.sleep(0.1)
        assert node.servicer.active == 0, "the call is still held on the runner by an LB that does not read"
        assert node.agent.containers() == []  # killed at its timeout: a late write must never reach the next call
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while (await stream.read()) is not grpc.aio.EOF:
                pass
        assert ended.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL)
    after = await rc.run(node.address, rc.call(), b"next")
    assert after.finished.success and after.body == b"next"
