"""The status image (Fn's runner status checks): Status runs a real function container, cached and shared."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import empty_pb2, struct_pb2

from fn_core.proto import runner_pb2_grpc


async def status_of(address: str, payload: dict | None = None, times: int = 1):
    async with grpc.aio.insecure_channel(address) as channel:
        stub = runner_pb2_grpc.RunnerProtocolStub(channel)
        if payload is None:
            return await asyncio.gather(*(stub.Status(empty_pb2.Empty()) for _ in range(times)))
        struct = struct_pb2.Struct()
        struct.update(payload)
        return await asyncio.gather(*(stub.Status2(struct) for _ in range(times)))


async def test_status_runs_the_status_image_then_answers_from_its_cache(start, rc, echo_image):
    node = await start(status_image=echo_image)
    [first] = await status_of(node.address)
    assert (first.failed, first.errorCode, first.details, first.cached) == (False, 0, "{}", False)  # echo of Fn's {} payload
    assert first.id and first.createdAt and first.startedAt and first.completedAt
    [again] = await status_of(node.address)
    assert (again.id, again.cached) == (first.id, True)  # within 1.5 s: the same status call
    assert (again.requestsReceived, again.requestsHandled) == (0, 0)  # status calls are not user calls
    assert len(rc.containers()) == 1

    await asyncio.sleep(1.6)  # the cache has expired
    concurrent = await status_of(node.address, times=10)
    assert len({s.id for s in concurrent}) == 1 and concurrent[0].id != first.id  # ten asks, one call
    assert not any(s.failed for s in concurrent)


async def test_status2_hands_its_json_to_the_status_function_and_reports_its_failure(start, echo_image):
    node = await start(status_image=echo_image)
    [probe] = await status_of(node.address, {"probe": "zone-a"})
    assert (probe.failed, probe.details) == (False, '{"probe":"zone-a"}')
    [broken] = await status_of(node.address, {"fail": "disk full"})
    assert broken.failed and broken.errorCode == 502 and broken.id != probe.id
    assert broken.errorStr  # the function's error, as a user call would get it


async def test_a_status_image_that_cannot_start_marks_the_runner_failed(start):
    node = await start(status_image="fn-core-test/no-such-status-image:never", hot_pull_timeout_msecs=2000)
    [status] = await status_of(node.address)
    assert status.failed and status.id
    # no registry here: the pull fails at once (502 naming the image), or times out where one hangs (504)
    assert (status.errorCode == 502 and "no-such-status-image" in status.errorStr) or status.errorCode == 504, status


async def test_calls_that_use_the_status_image_are_refused(start, rc, echo_image):
    node = await start(status_image=echo_image)
    result = await rc.run(node.address, rc.call(), b"x")
    assert (result.finished.success, result.finished.errorCode, result.finished.errorStr) == (False, 400, "Invalid image")
    assert rc.containers() == []  # refused before anything started


async def test_a_runner_status_plugin_that_fails_the_runner_skips_the_status_image(start, rc, echo_image):
    """Fn skips its status call when the custom health checker failed: no container for a runner already unwell."""
    from fn_core import hookimpl

    class DiskCheck:
        @hookimpl
        def runner_status(self, status):
            status.failed, status.error_str = True, "disk /var/lib/docker 99% full"

    node = await start(status_image=echo_image, plugins=[("disk-check", DiskCheck())])
    [status] = await status_of(node.address)
    assert (status.failed, status.errorStr) == (True, "disk /var/lib/docker 99% full")
    assert rc.containers() == []  # the status image never ran
