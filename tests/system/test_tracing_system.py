"""FN_ZIPKIN_URL across processes: `fn-core lb` and `fn-core runner` each send their span of a call."""

from __future__ import annotations

import asyncio

import aiohttp

from fn_core.testing import metric_samples, wait_until

TIMEOUT = aiohttp.ClientTimeout(total=60)


async def test_an_lb_and_a_runner_process_each_send_their_span_of_a_call(platform, deploy_echo, zipkin_collector):
    runner = await platform.runner(FN_ZIPKIN_URL=zipkin_collector.url)
    lb = await platform.lb([runner], FN_ZIPKIN_URL=zipkin_collector.url)
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        async with s.post(f"/invoke/{fn_id}", data=b"traced", headers={"traceparent": traceparent}) as r:
            assert (r.status, await r.read()) == (200, b"traced")
            call_id = r.headers["Fn-Call-Id"]

    await wait_until(lambda: len(zipkin_collector.of_call(call_id)) == 2, "a span from each process", timeout_s=15)
    spans = zipkin_collector.of_call(call_id)
    lb_span, runner_span = spans["fn-core-lb"], spans["fn-core-runner"]
    assert lb_span["traceId"] == runner_span["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert (lb_span["parentId"], runner_span["parentId"]) == ("b7ad6b7169203331", lb_span["id"])
    assert lb_span["tags"]["fn.runner"] == runner.address
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(runner.url + "/metrics") as r:  # the runner's FN_PORT
        assert metric_samples(await r.text())['fn_trace_spans_sent_total{collector="zipkin"}'] == 1


async def test_spans_still_waiting_for_their_batch_are_sent_as_the_nodes_stop(platform, deploy_echo, zipkin_collector):
    runner = await platform.runner(FN_ZIPKIN_URL=zipkin_collector.url)
    lb = await platform.lb([runner], FN_ZIPKIN_URL=zipkin_collector.url)
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        async with s.post(f"/invoke/{fn_id}", data=b"last call") as r:
            assert r.status == 200
            call_id = r.headers["Fn-Call-Id"]
    # SIGTERM at once, before the next batch is due; in threads, so that the collector (on this loop) can answer
    codes = await asyncio.gather(asyncio.to_thread(lb.proc.stop), asyncio.to_thread(runner.proc.stop))
    assert codes == [0, 0], lb.proc.log() + runner.proc.log()
    assert set(zipkin_collector.of_call(call_id)) == {"fn-core-lb", "fn-core-runner"}
