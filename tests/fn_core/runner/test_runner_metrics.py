"""A runner's HTTP port, as Fn's pure runner has: `/`, `/version` and `/metrics` with what its calls ended
as and what its containers did (and `/debug/stacks`), read over real HTTP from a real runner driven over real gRPC."""

from __future__ import annotations

import asyncio

import aiohttp
import attrs

from fn_core import __version__
from fn_core.testing import metric_samples, wait_until

MB = 1024 * 1024


async def scrape(node) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{node.http_port}/metrics") as r:
        assert (r.status, r.content_type) == (200, "text/plain")
        return metric_samples(await r.text())


async def test_metrics_count_calls_by_result_and_containers_by_fate(start, rc):
    node = await start(http=True, freeze_idle_msecs=-1)
    assert (await rc.run(node.address, rc.call(), b"one")).finished.success
    assert (await rc.run(node.address, rc.call(), b"two")).finished.success
    assert (await rc.run(node.address, rc.call(), {"fail": "boom"})).finished.errorCode == 502  # container kept
    assert (await rc.run(node.address, rc.call(timeout=1), {"sleep_ms": 2500})).finished.errorCode == 504  # killed
    assert (await rc.run(node.address, rc.call(), {"exit": 3})).finished.errorStr == "container exit code 3"
    await wait_until(lambda: node.agent.containers() == [] and not node.agent._tasks, "the dead container removed")

    samples = await scrape(node)
    assert [samples[f'fn_runner_calls_total{{result="{r}"}}'] for r in ("success", "error", "refused")] == [2, 3, 0]
    assert samples['fn_runner_call_errors_total{status="502"}'] == 2
    assert samples['fn_runner_call_errors_total{status="504"}'] == 1
    assert samples["fn_runner_call_duration_seconds_count"] == 5
    assert samples['fn_runner_call_duration_seconds_bucket{le="0.5"}'] <= 4 < samples['fn_runner_call_duration_seconds_bucket{le="2.5"}']
    # one container for the first four calls (the timeout killed it), a second one for the crash
    assert samples['fn_runner_container_launches_total{result="ok"}'] == 2
    assert samples["fn_runner_container_launch_seconds_count"] == 2
    assert samples["fn_runner_container_launch_seconds_sum"] > 0
    assert samples['fn_runner_containers_retired_total{reason="call_timeout"}'] == 1
    assert samples['fn_runner_containers_retired_total{reason="exited"}'] == 1
    assert samples['fn_runner_containers_retired_total{reason="idle_timeout"}'] == 0
    assert samples['fn_runner_container_exits_total{code="3"}'] == 1
    assert samples['fn_runner_driver_seconds_count{operation="launch"}'] == 2
    assert samples['fn_runner_driver_seconds_count{operation="remove"}'] == 2
    assert [samples[f'fn_runner_containers{{state="{s}"}}'] for s in ("starting", "busy", "idle", "paused")] == [0, 0, 0, 0]
    assert (samples["fn_runner_calls_running"], samples["fn_runner_calls_waiting"]) == (0, 0)
    # Prometheus' process figures of the runner itself, as on every fn-core HTTP node
    assert samples["fn_process_resident_memory_bytes"] > 0


async def test_how_each_call_got_its_container_and_how_long_it_waited_show_in_metrics_and_in_finished(start, rc):
    """Why was this call slow: a cold start (a new container), a wait for a busy one, or the function itself. The
    runner counts each call's container by how it came and its wait, and says the wait in Fn's `finished` timings."""
    node = await start(http=True, freeze_idle_msecs=-1)
    cold = (await rc.run(node.address, rc.call(), b"cold")).finished
    warm = (await rc.run(node.address, rc.call(), b"warm")).finished
    launch_s = (await scrape(node))["fn_runner_container_launch_seconds_sum"]
    assert cold.success and warm.success
    # Fn's timings: the wait for a container, then the time in it; startedAt between createdAt and completedAt
    assert cold.schedulerDuration / 1e9 >= launch_s > warm.schedulerDuration / 1e9
    assert cold.createdAt <= cold.startedAt <= cold.completedAt
    assert warm.executionDuration > 0

    # a call that comes while the fn's only container is busy waits for it rather than start a second one
    busy = asyncio.ensure_future(rc.run(node.address, rc.call(), {"sleep_ms": 300}))
    await wait_until(lambda: node.agent.container_states()["busy"] == 1, "the first call in its container")
    waited = (await rc.run(node.address, rc.call(), b"after the busy one")).finished
    assert (await busy).finished.success and waited.success
    assert waited.schedulerDuration > warm.schedulerDuration

    samples = await scrape(node)
    assert [samples[f'fn_runner_call_starts_total{{container="{c}"}}'] for c in ("idle", "freed", "new")] == [2, 1, 1]
    assert samples["fn_runner_call_wait_seconds_count"] == 4
    assert samples["fn_runner_call_wait_seconds_sum"] >= launch_s
    assert samples['fn_runner_container_launches_total{result="ok"}'] == 1


async def test_refusals_evictions_and_idle_containers_show(start, rc):
    node = await start(http=True, freeze_idle_msecs=-1, max_total_memory_bytes=128 * MB, enable_nb_resource_tracker=True,
                       evict_min_idle_msecs=300)
    assert (await rc.run(node.address, rc.call(fn_id="fn-a", memory=128), b"a")).finished.success
    refused = await rc.run(node.address, rc.call(fn_id="fn-b", memory=128), b"b")
    assert (refused.started, refused.finished.errorCode) == (False, 503)  # fn-a's container is still warm: NACK
    samples = await scrape(node)
    assert samples['fn_runner_calls_total{result="refused"}'] == 1
    assert samples['fn_runner_containers{state="idle"}'] == 1
    assert samples["fn_runner_memory_free_bytes"] == 0

    await asyncio.sleep(0.35)
    assert (await rc.run(node.address, rc.call(fn_id="fn-b", memory=128), b"b")).finished.success
    samples = await scrape(node)
    assert samples['fn_runner_containers_retired_total{reason="evicted"}'] == 1
    assert samples['fn_runner_calls_total{result="success"}'] == 2
    assert samples['fn_runner_containers{state="idle"}'] == 1


async def test_paused_containers_and_status_polls_show(start, rc):
    node = await start(http=True, freeze_idle_msecs=0)
    assert (await rc.run(node.address, rc.call(), b"x")).finished.success
    await wait_until(lambda: all(c.paused for c in node.agent.containers()), "the idle container paused")
    await node.servicer.status(b"")
    samples = await scrape(node)
    assert samples['fn_runner_containers{state="paused"}'] == 1
    assert samples['fn_runner_containers{state="idle"}'] == 0
    assert samples['fn_runner_driver_seconds_count{operation="pause"}'] == 1
    assert samples["fn_runner_status_requests_total"] == 1


async def test_the_http_port_answers_ping_version_and_json_errors(start):
    node = await start(http=True)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{node.http_port}") as session:
        async with session.get("/") as r:
            assert r.status == 200 and (await r.json())["hello"] == "world!"
        async with session.get("/version") as r:
            assert (r.status, await r.json()) == (200, {"version": __version__})
        async with session.get("/v2/apps") as r:  # a runner serves no API
            assert (r.status, await r.json()) == (404, {"message": "Path not found"})
        async with session.post("/metrics") as r:
            assert (r.status, await r.json()) == (405, {"message": "Method not allowed"})
    await node.stop()
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(f"http://127.0.0.1:{node.http_port}/metrics") as r:
                raise AssertionError(f"a stopped runner still answers: {r.status}")
        except aiohttp.ClientConnectionError:
            pass


async def test_a_runner_without_an_http_port_starts_none(start):
    node = await start()  # what `serve` and library users get unless they ask for one
    assert (node.http, node.http_port) == (None, 0)


async def test_a_container_is_recycled_after_max_calls(start, rc):
    """FN_MAX_CALLS_PER_CONTAINER: a leaking function starts afresh every N calls; no call fails for it."""
    node = await start(http=True, max_calls_per_container=2)
    in_service = []
    for i in range(5):
        result = await rc.run(node.address, rc.call(), f"call {i}".encode())
        assert result.finished.success and result.body == f"call {i}".encode()
        in_service.append([c.id for c in node.agent.containers()])
    # calls 1-2 in one container, retired as the 2nd is answered; 3-4 in a second; 5 in a third
    assert [len(ids) for ids in in_service] == [1, 0, 1, 0, 1]
    assert len({in_service[0][0], in_service[2][0], in_service[4][0]}) == 3
    samples = await scrape(node)
    assert samples['fn_runner_containers_retired_total{reason="recycled"}'] == 2
    assert samples['fn_runner_container_launches_total{result="ok"}'] == 3
    await wait_until(lambda: len(rc.containers()) == 1, "the two recycled containers removed from Docker")


async def test_a_launch_that_fails_is_counted(start, rc):
    node = await start(http=True, hot_pull_timeout_msecs=2000)
    call = attrs.evolve(rc.call(), image="fn-core-test/no-such-image:never")
    result = await rc.run(node.address, call, b"x")
    assert not result.finished.success and result.finished.errorCode in (502, 504)  # no registry here: either
    samples = await scrape(node)
    assert samples['fn_runner_container_launches_total{result="failed"}'] == 1
    assert samples['fn_runner_container_launches_total{result="ok"}'] == 0
    assert samples[f'fn_runner_call_errors_total{{status="{result.finished.errorCode}"}}'] == 1


async def test_calls_waiting_for_a_container_that_cannot_start_fail_with_the_first_launch(start, rc):
    """Its image cannot be pulled: the calls waiting with the first one get its error, rather than each launching
    (and on a full runner evicting another function's warm container) to fail the same way."""
    node = await start(http=True, max_total_memory_bytes=256 * MB)
    warm = rc.call(fn_id="fn-warm", memory=128)
    assert (await rc.run(node.address, warm, b"warm")).finished.success
    image = "127.0.0.1:9/fn-core-test/no-such-image:never"  # nothing listens there: the pull fails at once
    calls = [attrs.evolve(rc.call(fn_id="fn-missing", memory=128), image=image) for _ in range(6)]
    results = await asyncio.gather(*(rc.run(node.address, call, b"x") for call in calls))
    assert {(r.finished.success, r.finished.errorCode) for r in results} == {(False, 502)}
    samples = await scrape(node)
    assert samples['fn_runner_container_launches_total{result="failed"}'] == 1
    assert samples['fn_runner_containers_retired_total{reason="evicted"}'] == 0
    assert (await rc.run(node.address, warm, b"still warm")).finished.success
    assert samples['fn_runner_container_launches_total{result="ok"}'] == 1


async def test_the_http_port_shows_where_the_runner_waits(start, rc):
    """/debug/stacks: a call in its container shows as a task waiting on the container's socket."""
    node = await start(http=True)
    slow = asyncio.create_task(rc.run(node.address, rc.call(), {"sleep_ms": 1500}))
    await wait_until(lambda: node.agent.container_states()["busy"] == 1, "the call is in its container", timeout_s=15)
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{node.http_port}/debug/stacks") as r:
        assert r.status == 200
        dump = await r.text()
    assert (await slow).finished.success
    assert "task 'call " in dump and "in _exchange" in dump and "fn_core/runner/uds.py" in dump


async def test_a_call_the_lb_drops_midway_is_counted_cancelled_and_told_to_listeners_when_its_container_is_done(start, rc):
    """Fn's client cancel (444): the LB cancels the stream when its client goes away; the runner took the call, so
    its metrics count it at once, and its listeners hear of it when the container has finished it (it runs on
    unseen, then serves the next call): a ledger bills the container's time, not the client's."""
    from fn_core import hookimpl

    heard = []

    class Listener:
        @hookimpl
        def runner_call_finished(self, call, outcome):
            busy = node.agent.container_states()["busy"]
            heard.append((call.id, outcome.status, outcome.error, outcome.duration_s, outcome.wait_s, busy))

    node = await start(http=True, plugins=[("listener", Listener())])
    call = rc.call()
    engaged = asyncio.ensure_future(rc.run(node.address, call, {"sleep_ms": 3000}))
    await wait_until(lambda: node.agent.container_states().get("busy") == 1, "the call running in its container", timeout_s=20)
    [container] = node.agent.containers()
    engaged.cancel()  # the channel closes under the stream: the runner sees it reset
    await asyncio.gather(engaged, return_exceptions=True)
    await wait_until(lambda: node.core.active == 0, "the runner let the stream go")
    samples = await scrape(node)
    assert [samples[f'fn_runner_calls_total{{result="{r}"}}'] for r in ("success", "error", "refused", "cancelled")] == [0, 0, 0, 1]
    assert samples["fn_runner_calls_running"] == 0
    assert container.state == "busy" and heard == []  # the function still sleeps: nothing to bill yet

    await wait_until(lambda: heard, "the listener told of the dropped call", timeout_s=15)
    [(call_id, status, error, duration_s, wait_s, busy_when_told)] = heard
    assert (call_id, status, error) == (call.id, 444, "Client cancelled context")
    assert duration_s >= 3.0  # the function's whole sleep, not the ~0 s until the client left
    assert wait_s is not None and 0 <= wait_s < duration_s  # the cold start it waited for, within its time
    assert busy_when_told == 0 and container.state == "idle"  # told once the container was free again
    after = await rc.run(node.address, rc.call(), b"after")
    assert (after.finished.success, after.body) == (True, b"after")
