"""Concurrency, reuse, idle reaping, the NACK, graceful shutdown, Status: a real runner over real gRPC."""

from __future__ import annotations

import asyncio
import logging
import time

import attrs
import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2

from fn_core.proto import runner_pb2, runner_pb2_grpc

MB = 1024 * 1024


async def test_parallel_calls_get_one_container_each_then_reuse(start, rc):
    node = await start()
    call = rc.call()
    results = await asyncio.gather(*(rc.run(node.address, call, {"sleep_ms": 600}) for _ in range(3)))
    assert all(r.finished.success for r in results)
    first_ids = {c.id for c in rc.containers()}
    assert len(first_ids) == 3
    again = await asyncio.gather(*(rc.run(node.address, call, {"sleep_ms": 300}) for _ in range(3)))
    assert all(r.finished.success for r in again)
    assert {c.id for c in rc.containers()} == first_ids  # reused, no new launches


async def test_idle_containers_are_reaped(start, rc):
    node = await start()
    await rc.run(node.address, rc.call(idle_timeout=1), b"x")
    assert len(rc.containers()) == 1
    for _ in range(100):  # reaping is the behaviour under test, not its speed
        if not node.agent.containers():
            break
        await asyncio.sleep(0.05)
    assert node.agent.containers() == []
    for _ in range(100):
        if not rc.containers():
            break
        await asyncio.sleep(0.05)
    assert rc.containers() == []


async def test_nack_when_full_in_non_blocking_mode(start, rc):
    node = await start(max_total_memory_bytes=128 * MB, enable_nb_resource_tracker=True)
    call = rc.call(memory=128)
    busy = asyncio.create_task(rc.run(node.address, call, {"sleep_ms": 1500}))
    while not node.agent.containers():
        await asyncio.sleep(0.01)
    refused = await rc.run(node.address, call, b"second")
    assert not refused.started
    assert (refused.finished.success, refused.finished.errorCode) == (False, 503)
    assert refused.finished.errorStr == "Timed out - server too busy"
    assert (await busy).finished.success


async def test_idle_container_of_another_fn_is_evicted_once_it_has_gone_cold(start, rc):
    node = await start(max_total_memory_bytes=128 * MB, enable_nb_resource_tracker=True, evict_min_idle_msecs=300)
    await rc.run(node.address, rc.call(fn_id="fn-a", memory=128), b"a")
    [a] = rc.containers()
    refused = await rc.run(node.address, rc.call(fn_id="fn-b", memory=128), b"b")
    assert (refused.started, refused.finished.errorCode) == (False, 503)  # fn-a's container is still warm: NACK
    await asyncio.sleep(0.35)
    result = await rc.run(node.address, rc.call(fn_id="fn-b", memory=128), b"b")
    assert result.finished.success and result.body == b"b"
    assert a.id not in {c.id for c in node.agent.containers()}


async def test_blocking_mode_waits_for_capacity(start, rc):
    node = await start(max_total_memory_bytes=128 * MB)
    call = rc.call(memory=128)
    results = await asyncio.gather(*(rc.run(node.address, call, {"sleep_ms": 300}) for _ in range(2)))
    assert all(r.finished.success for r in results)  # the second waited for the first's container
    assert len(rc.containers()) == 1


async def test_blocking_mode_gives_a_starved_fn_room_while_another_keeps_the_runner_busy(start, rc):
    """fn-a keeps the runner's one container busy with always a call waiting for it: each freed container used
    to go to fn-a's next call, and fn-b waited for as long as fn-a's load lasted. Now fn-b, once it has waited
    two cold starts, gets the room of fn-a's container when that finishes a call; fn-a's calls then wait their turn."""
    node = await start(max_total_memory_bytes=128 * MB)
    call_a, call_b = rc.call(fn_id="fn-a", memory=128), rc.call(fn_id="fn-b", memory=128)
    b_answered = asyncio.Event()
    a_results = []

    async def keep_busy() -> None:
        for _ in range(100):  # bounded; ends once fn-b was answered
            if b_answered.is_set():
                return
            a_results.append(await rc.run(node.address, call_a, {"sleep_ms": 150}))

    load = [asyncio.create_task(keep_busy()) for _ in range(2)]
    while not node.agent.containers():
        await asyncio.sleep(0.01)
    result_b = await asyncio.wait_for(rc.run(node.address, call_b, b"b at last"), 60)
    a_still_running = not any(task.done() for task in load)
    b_answered.set()
    await asyncio.gather(*load)
    assert result_b.finished.success and result_b.body == b"b at last"
    assert a_still_running  # fn-b was served during fn-a's load, not after it
    assert a_results and all(r.finished.success for r in a_results)  # fn-a's calls waited, none failed
    assert node.agent.metrics.retired_by_reason["evicted"] >= 1


async def test_graceful_shutdown_finishes_in_flight_calls_and_nacks_new_ones(start, rc, caplog):
    caplog.set_level(logging.INFO, logger="fn_core.runner.main")
    node = await start()
    in_flight = asyncio.create_task(rc.run(node.address, rc.call(), {"sleep_ms": 800}))
    while not node.servicer.active or not node.agent.containers():
        await asyncio.sleep(0.01)
    stopping = asyncio.create_task(node.stop(grace=10))
    await asyncio.sleep(0.05)
    late = await rc.run(node.address, rc.call(), b"too late")
    assert not late.started and late.finished.errorCode == 503
    assert (await in_flight).finished.success
    await stopping
    assert rc.containers() == []
    said = [r.getMessage() for r in caplog.records if r.name == "fn_core.runner.main"]
    assert any(line.startswith("waited ") and line.endswith(" s for the calls in flight (1 at the stop, 0 still running)") for line in said)
    assert not any("cutting" in line for line in said)


async def test_a_stop_past_its_grace_ends_a_running_call_with_its_finished_never_the_nack(start, rc, caplog):
    """The call was sent to its container: cut at the grace's end, it ends with an error of its own (a cut stream
    left the LB a 500 naming the runner; a 503 would be the NACK, and the call would run again elsewhere)."""
    caplog.set_level(logging.INFO, logger="fn_core.runner.main")
    node = await start()
    in_flight = asyncio.create_task(rc.run(node.address, rc.call(timeout=30), {"sleep_ms": 20000}))
    while not node.servicer.active or not node.agent.containers():
        await asyncio.sleep(0.01)
    began = time.monotonic()
    await node.stop(grace=0.3)
    assert time.monotonic() - began < 5
    result = await in_flight
    assert (result.started, result.finished.success, result.finished.errorCode) == (False, False, 500)
    assert result.finished.errorStr == "call cut short: the runner is shutting down"
    assert rc.containers() == []
    assert "the stop's grace of 0.3 s is over: cutting the calls still running (1; each ends as 500, never re-sent)" in [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    ]


async def test_a_stop_does_not_wait_for_a_container_nobody_waits_for_any_more(start, rc, slow_start_image):
    """Its call got the NACK when the stop began: the start (20 s here) is cut, and nothing it made is left."""
    node = await start()
    slow = attrs.evolve(rc.call(config={"START_DELAY_MS": "20000"}, annotations={"fn-core/start-timeout-msecs": "60000"}),
                        image=slow_start_image)
    waiting = asyncio.create_task(rc.run(node.address, slow, b"x"))
    while not node.agent.container_states()["starting"]:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # created and started: its fdk sleeps
    began = time.monotonic()
    await node.stop(grace=30)
    assert time.monotonic() - began < 10
    refused = await waiting
    assert (refused.started, refused.finished.errorCode) == (False, 503)  # the NACK: it may run elsewhere
    assert rc.containers() == []


async def test_status_counts_calls_and_runs_status_plugins(start, rc):
    class Broken:
        from fn_core import hookimpl

        @hookimpl
        def runner_status(self, status, runner):
            raise RuntimeError("status plugin bug")

    node = await start(plugins=[("broken-status", Broken())])
    await rc.run(node.address, rc.call(), b"x")
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = runner_pb2_grpc.RunnerProtocolStub(channel)
        for _ in range(200):  # the docker probe answers from a cache refreshed off-loop
            status = await stub.Status(empty_pb2.Empty())
            if status.customStatus["docker"] != "checking":
                break
            await asyncio.sleep(0.02)
    assert (status.requestsReceived, status.requestsHandled, status.active) == (1, 1, 0)
    assert status.customStatus["plugin-error:broken-status"] == "RuntimeError: status plugin bug"
    assert status.customStatus["docker"] == "ok" and not status.failed
    assert int(status.customStatus["host.mem_available_bytes"]) > 0
    assert int(status.customStatus["runner.containers"]) == 1


async def test_a_status_plugin_that_keeps_failing_is_logged_once_and_again_when_it_works(start, caplog):
    """Status runs on every poll of every LB (twice a second each): a broken plugin must not flood the log."""
    from fn_core import hookimpl

    class Flaky:
        broken = True

        @hookimpl
        def runner_status(self, status, runner):
            if self.broken:
                raise RuntimeError("disk probe bug")

    caplog.set_level("WARNING", logger="fn_core.hook_calls")
    flaky = Flaky()
    node = await start(plugins=[("flaky-status", flaky)])
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = runner_pb2_grpc.RunnerProtocolStub(channel)
        polls = [await stub.Status(empty_pb2.Empty()) for _ in range(5)]
        flaky.broken = False
        healed = [await stub.Status(empty_pb2.Empty()) for _ in range(3)]
    assert all(p.customStatus["plugin-error:flaky-status"] == "RuntimeError: disk probe bug" for p in polls)
    assert not any("plugin-error:flaky-status" in p.customStatus for p in healed)
    said = [(r.getMessage(), r.exc_info is not None) for r in caplog.records if "flaky-status" in r.getMessage()]
    assert said == [
        ("runner_status plugin flaky-status failed: disk probe bug (said again when it works)", True),  # with its traceback
        ("runner_status plugin flaky-status works again", False),
    ]


async def test_the_other_rpcs_answer_as_fns_pure_runner_without_status_image_or_log_streamer(start, rc):
    node = await start()
    await rc.run(node.address, rc.call(), b"x")
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = runner_pb2_grpc.RunnerProtocolStub(channel)
        status2 = await stub.Status2(struct_pb2.Struct())
        assert (status2.requestsReceived, status2.requestsHandled, status2.active) == (1, 1, 0)
        assert await stub.ConfigureRunner(runner_pb2.ConfigMsg(config={"k": "v"})) == runner_pb2.ConfigStatus()
        logs = stub.StreamLogs()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await logs.read()
    assert refused.value.code() == grpc.StatusCode.UNKNOWN
    assert refused.value.details() == "runner not configured with logStreamer"


async def test_runner_call_finished_hears_each_call_it_ran_once_not_its_nacks_and_a_failing_listener_costs_nothing(start, rc):
    from fn_core import hookimpl
    from fn_core.testing import wait_until

    heard: list = []

    class Ledger:
        @hookimpl
        def runner_call_finished(self, call, outcome):
            heard.append((call.id, outcome))

    class Broken:
        @hookimpl
        def runner_call_finished(self, call, outcome):
            raise RuntimeError("ledger down")

    node = await start(plugins=[("ledger", Ledger()), ("broken", Broken())], max_total_memory_bytes=128 * MB,
                       enable_nb_resource_tracker=True)
    busy_call = rc.call(memory=128)
    busy = asyncio.create_task(rc.run(node.address, busy_call, {"sleep_ms": 1000}))
    while not node.agent.containers():
        await asyncio.sleep(0.01)
    nacked_call = rc.call(memory=128)
    refused = await rc.run(node.address, nacked_call, b"second")
    assert refused.finished.errorCode == 503 and not refused.started  # placed elsewhere by the LB: not this runner's
    assert (await busy).finished.success
    await wait_until(lambda: bool(heard), "the ran call heard")
    await asyncio.sleep(0.2)  # anything more would come now
    [(call_id, outcome)] = heard
    assert call_id == busy_call.id and call_id != nacked_call.id
    assert (outcome.status, outcome.error, outcome.runner, outcome.attempts) == (200, "", "", 0)
    assert outcome.duration_s >= 1.0  # the function's second of sleep is in it
