"""FN_ZIPKIN_URL and FN_JAEGER_URL: each call's LB and runner spans reach the collectors, in the client's trace.

The collectors are `zipkin_collector` and `jaeger_collector` (tests/conftest.py), real HTTP servers on
127.0.0.1 (Jaeger's Thrift decoded by thriftpy2); the platform is a real LB and runner over gRPC, with real Docker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging

import pytest

from fn_core.testing import metric_samples, wait_until
from fn_plugins_builtin.tracing import Parent, lb_span_id, parent_of, runner_span_id


@contextlib.asynccontextmanager
async def collector_server(path: str, take):
    """A collector on 127.0.0.1 answering POSTs to ``path`` with ``take``: its port."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post(path, take)
    server = web.AppRunner(app)
    await server.setup()
    await web.TCPSite(server, "127.0.0.1", 0).start()
    try:
        yield server.addresses[0][1]
    finally:
        await server.cleanup()


async def stopped(collector) -> None:
    """Cancel the collector's sending task, and see it end."""
    collector._task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await collector._task


TRACE = "463ac35c9f6413ad48485a3953bb6124"
CLIENT_SPAN = "a2fb4a1d1a96d312"


async def test_a_calls_lb_and_runner_spans_reach_zipkin_in_the_clients_trace(fn_platform, echo_image, zipkin_collector):
    platform = await fn_platform(env={"FN_ZIPKIN_URL": zipkin_collector.url})
    fn = await platform.deploy(echo_image)
    headers = {"X-B3-TraceId": TRACE, "X-B3-SpanId": CLIENT_SPAN, "X-B3-Sampled": "1"}
    result = await platform.invoke(fn["id"], b"traced", headers=headers)
    assert (result.status, result.body) == (200, b"traced")
    call_id = result.headers["Fn-Call-Id"]

    await wait_until(lambda: len(zipkin_collector.of_call(call_id)) == 2, "both spans reached the collector", timeout_s=10)
    spans = zipkin_collector.of_call(call_id)
    lb, runner = spans["fn-core-lb"], spans["fn-core-runner"]
    assert lb["traceId"] == runner["traceId"] == TRACE
    assert lb["parentId"] == CLIENT_SPAN  # the client's span is the LB's parent ...
    assert runner["parentId"] == lb["id"]  # ... and the LB's the runner's
    assert lb["kind"] == runner["kind"] == "SERVER"
    assert lb["name"] == runner["name"].replace("run", "invoke") == f"invoke {fn['id']}"
    assert lb["tags"]["http.status_code"] == runner["tags"]["http.status_code"] == "200"
    assert lb["tags"]["fn.runner"] == platform.runners[0].address and lb["tags"]["fn.attempts"] == "1"
    assert runner["tags"]["fn.image"] == echo_image and "error" not in lb["tags"]
    # the runner's part lies within the LB's
    assert lb["timestamp"] <= runner["timestamp"] and runner["duration"] <= lb["duration"]
    scraped = metric_samples((await platform.api("GET", "/metrics")).body.decode())
    assert scraped['fn_trace_spans_sent_total{collector="zipkin"}'] >= 2
    assert scraped['fn_trace_spans_dropped_total{collector="zipkin"}'] == 0


async def test_unsampled_calls_make_no_span_and_untraced_ones_start_a_trace(fn_platform, echo_image, zipkin_collector):
    platform = await fn_platform(env={"FN_ZIPKIN_URL": zipkin_collector.url})
    fn = await platform.deploy(echo_image)
    unsampled = await platform.invoke(fn["id"], b"not me", headers={"X-B3-Sampled": "0", "X-B3-TraceId": TRACE,
                                                                     "X-B3-SpanId": CLIENT_SPAN})
    untraced = await platform.invoke(fn["id"], b"new trace")
    assert unsampled.status == untraced.status == 200
    await wait_until(lambda: len(zipkin_collector.of_call(untraced.headers["Fn-Call-Id"])) == 2, "spans arrived", timeout_s=10)
    assert zipkin_collector.of_call(unsampled.headers["Fn-Call-Id"]) == {}
    spans = zipkin_collector.of_call(untraced.headers["Fn-Call-Id"])
    assert "parentId" not in spans["fn-core-lb"]  # a root span
    assert spans["fn-core-runner"]["traceId"] == spans["fn-core-lb"]["traceId"] != TRACE


async def test_an_error_is_tagged_and_a_collector_outage_costs_no_call(fn_platform, echo_image, zipkin_collector, caplog):
    caplog.set_level(logging.INFO, logger="fn_plugins_builtin.tracing")
    platform = await fn_platform(env={"FN_ZIPKIN_URL": zipkin_collector.url})
    fn = await platform.deploy(echo_image)
    failed = await platform.invoke(fn["id"], b'{"fail": "boom"}')
    assert failed.status == 502
    await wait_until(lambda: len(zipkin_collector.of_call(failed.headers["Fn-Call-Id"])) == 2, "spans arrived", timeout_s=10)
    for span in zipkin_collector.of_call(failed.headers["Fn-Call-Id"]).values():
        assert span["tags"]["http.status_code"] == "502" and span["tags"]["error"]

    zipkin_collector.status = 500
    lost = await platform.invoke(fn["id"], b"while Zipkin is down")
    assert lost.status == 200
    await wait_until(lambda: "did not take" in caplog.text, "the outage was logged", timeout_s=10)
    zipkin_collector.status = 202
    ok = await platform.invoke(fn["id"], b"after the outage")
    assert ok.status == 200
    await wait_until(lambda: len(zipkin_collector.of_call(ok.headers["Fn-Call-Id"])) == 2, "spans flow again", timeout_s=10)
    assert zipkin_collector.of_call(lost.headers["Fn-Call-Id"]) == {}  # lost with the outage, and said so
    assert caplog.text.count("did not take") == 1 and "HTTP 500" in caplog.text  # once per outage, not per batch
    assert metric_samples((await platform.api("GET", "/metrics")).body.decode())['fn_trace_spans_dropped_total{collector="zipkin"}'] == 2
    assert "takes spans again" in caplog.text


async def test_without_a_collector_url_the_tracer_is_not_there(make_plugin_manager):
    pm = make_plugin_manager()
    assert pm.get_plugin("tracing:tracer") is None
    assert not pm.hook.runner_call_finished.get_hookimpls()  # so a runner makes no outcome record per call


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-B3-Traceid": [TRACE], "X-B3-Spanid": [CLIENT_SPAN]}, Parent(TRACE, CLIENT_SPAN)),
        ({"X-B3-Traceid": [TRACE[16:]], "X-B3-Spanid": [CLIENT_SPAN], "X-B3-Sampled": ["0"]}, Parent(TRACE[16:], CLIENT_SPAN, False)),
        ({"B3": [f"{TRACE}-{CLIENT_SPAN}-1"]}, Parent(TRACE, CLIENT_SPAN)),
        ({"Traceparent": [f"00-{TRACE}-{CLIENT_SPAN}-00"]}, Parent(TRACE, CLIENT_SPAN, False)),
        ({"Fn-Http-H-Traceparent": [f"00-{TRACE}-{CLIENT_SPAN}-01"]}, Parent(TRACE, CLIENT_SPAN)),  # a trigger's
    ],
)
def test_the_clients_trace_context_is_read_from_b3_or_w3c_headers(headers, expected):
    assert parent_of("call-1", headers) == expected


@pytest.mark.parametrize("bad", [{"X-B3-Traceid": ["not-hex"], "X-B3-Spanid": [CLIENT_SPAN]}, {"Traceparent": ["00-0-0-01"]}, {}])
def test_a_missing_or_malformed_context_starts_a_trace_of_the_calls_own(bad):
    parent = parent_of("call-1", bad)
    assert parent == Parent(parent_of("call-1", {}).trace_id) and len(parent.trace_id) == 32
    assert parent.trace_id != parent_of("call-2", {}).trace_id and lb_span_id("call-1") != lb_span_id("call-2")


async def test_spans_left_at_shutdown_are_sent(zipkin_collector):
    from fn_core.models import Call
    from fn_core.records import CallOutcome
    from fn_plugins_builtin.tracing import Collector, Tracer
    from fn_plugins_builtin.tracing_formats import zipkin_json

    collector = Collector("zipkin", zipkin_collector.url, zipkin_json)
    Tracer([collector]).call_finished(Call(id="call-9", app_id="a", fn_id="f"), CallOutcome(status=200, duration_s=0.001))
    await asyncio.sleep(0)
    collector._task.cancel()  # as the node's loop ends, before the next flush
    with pytest.raises(asyncio.CancelledError):
        await collector._task
    assert [s["id"] for s in zipkin_collector.spans] == [lb_span_id("call-9")]


def _i64(hex_id: str) -> int:
    value = int(hex_id, 16)
    return value - (1 << 64) if value >= 1 << 63 else value


@pytest.mark.parametrize("jaeger_form", ["the collector's address, as Fn's", "the full endpoint"])
async def test_with_both_urls_a_calls_spans_reach_jaeger_and_zipkin_alike(fn_platform, echo_image, zipkin_collector,
                                                                          jaeger_collector, jaeger_form):
    jaeger_url = jaeger_collector.url.removesuffix("/api/traces") if jaeger_form.startswith("the collector") else jaeger_collector.url
    platform = await fn_platform(env={"FN_ZIPKIN_URL": zipkin_collector.url, "FN_JAEGER_URL": jaeger_url})
    fn = await platform.deploy(echo_image)
    headers = {"traceparent": f"00-{TRACE}-{CLIENT_SPAN}-01"}
    ok = await platform.invoke(fn["id"], b"traced", headers=headers)
    failed = await platform.invoke(fn["id"], b'{"fail": "boom"}', headers=headers)
    assert (ok.status, failed.status) == (200, 502)
    ok_id, failed_id = ok.headers["Fn-Call-Id"], failed.headers["Fn-Call-Id"]
    await wait_until(lambda: all(len(c.of_call(i)) == 2 for c in (zipkin_collector, jaeger_collector) for i in (ok_id, failed_id)),
                     "both calls' spans reached both collectors", timeout_s=10)

    spans = jaeger_collector.of_call(ok_id)
    (lb, lb_tags), (runner, runner_tags) = spans["fn-core-lb"], spans["fn-core-runner"]
    assert (lb.traceIdHigh, lb.traceIdLow) == (runner.traceIdHigh, runner.traceIdLow) == (_i64(TRACE[:16]), _i64(TRACE[16:]))
    assert (lb.spanId, lb.parentSpanId) == (_i64(lb_span_id(ok_id)), _i64(CLIENT_SPAN))  # the client's span is the LB's parent
    assert (runner.spanId, runner.parentSpanId) == (_i64(runner_span_id(ok_id)), lb.spanId)  # and the LB's the runner's
    assert lb.operationName == f"invoke {fn['id']}" and runner.operationName == f"run {fn['id']}"
    assert lb.flags == runner.flags == 1  # sampled
    assert lb.startTime <= runner.startTime and runner.duration <= lb.duration
    zipkin_lb = zipkin_collector.of_call(ok_id)["fn-core-lb"]
    assert (zipkin_lb["timestamp"], zipkin_lb["duration"]) == (lb.startTime, lb.duration)  # one span, two formats
    assert lb_tags == {"fn.call_id": ok_id, "fn.app_id": fn["app_id"], "fn.fn_id": fn["id"], "http.status_code": "200",
                       "fn.runner": platform.runners[0].address, "fn.attempts": "1", "span.kind": "server"}
    assert runner_tags["fn.image"] == echo_image and "error" not in runner_tags

    for _, tags in jaeger_collector.of_call(failed_id).values():
        assert tags["error"] is True and tags["error.message"] and tags["http.status_code"] == "502"
    scraped = metric_samples((await platform.api("GET", "/metrics")).body.decode())
    assert scraped['fn_trace_spans_sent_total{collector="jaeger"}'] == scraped['fn_trace_spans_sent_total{collector="zipkin"}'] >= 2
    assert scraped['fn_trace_spans_dropped_total{collector="jaeger"}'] == 0


@pytest.mark.parametrize(("given", "posted_to"), [
    ("http://jaeger:14268", "http://jaeger:14268/api/traces?format=jaeger.thrift"),  # Fn's form (its exporter adds the path)
    ("http://jaeger:14268/", "http://jaeger:14268/api/traces?format=jaeger.thrift"),
    ("http://jaeger:14268/api/traces", "http://jaeger:14268/api/traces"),
    ("http://jaeger:14268/api/traces?format=jaeger.thrift", "http://jaeger:14268/api/traces?format=jaeger.thrift"),
    ("https://proxy.example/jaeger", "https://proxy.example/jaeger/api/traces?format=jaeger.thrift"),
])
def test_fn_jaeger_url_is_the_collectors_address_as_in_fn_or_its_whole_endpoint(given, posted_to):
    from fn_plugins_builtin.tracing import jaeger_endpoint

    assert jaeger_endpoint(given) == posted_to


async def test_a_64_bit_trace_id_and_a_root_span_in_jaegers_format(jaeger_collector):
    from fn_core.models import Call
    from fn_core.records import CallOutcome
    from fn_plugins_builtin.tracing import Collector, Tracer
    from fn_plugins_builtin.tracing_formats import jaeger_thrift

    collector = Collector("jaeger", jaeger_collector.url, jaeger_thrift)
    tracer = Tracer([collector])
    tracer.call_finished(Call(id="c64", app_id="a", fn_id="f", headers={"X-B3-TraceId": ["ffffffffffffffff"],
                                                                         "X-B3-SpanId": [CLIENT_SPAN]}), CallOutcome(status=200))
    tracer.call_finished(Call(id="root", app_id="a", fn_id="f"), CallOutcome(status=200))
    collector._wake.set()
    await wait_until(lambda: collector.sent == 2, "both spans sent", timeout_s=10)
    (c64, _), (root, _) = jaeger_collector.of_call("c64")["fn-core-lb"], jaeger_collector.of_call("root")["fn-core-lb"]
    assert (c64.traceIdHigh, c64.traceIdLow, c64.parentSpanId) == (0, -1, _i64(CLIENT_SPAN))
    assert root.parentSpanId == 0 and (root.traceIdHigh, root.traceIdLow) != (0, 0)
    await stopped(collector)


async def test_when_jaeger_takes_one_services_spans_and_refuses_the_next_each_is_counted_once(jaeger_collector, caplog):
    from aiohttp import web

    from fn_core.metrics import exposition
    from fn_core.models import Call
    from fn_core.records import CallOutcome
    from fn_plugins_builtin.tracing import Collector, Tracer
    from fn_plugins_builtin.tracing_formats import jaeger_thrift

    async def first_post_only(request: web.Request) -> web.Response:
        # the thriftpy2 collector takes the first body (one service's spans), then Jaeger fails
        if jaeger_collector.batches:
            return web.Response(status=503, text="overloaded")
        return await jaeger_collector.take(request)

    async with collector_server("/api/traces", first_post_only) as port:
        collector = Collector("jaeger", f"http://127.0.0.1:{port}/api/traces", jaeger_thrift)
        tracer = Tracer([collector])
        call = Call(id="two-services", app_id="a", fn_id="f", image="example/echo:1")
        tracer.call_finished(call, CallOutcome(status=200))  # as on `fn-core serve`: the LB's span ...
        tracer.runner_call_finished(call, CallOutcome(status=200))  # ... and its local runner's, in one batch
        collector._wake.set()
        await wait_until(lambda: collector.sent + collector.dropped == 2, "the batch was sent", timeout_s=10)
        assert (collector.sent, collector.dropped) == (1, 1)
        assert list(jaeger_collector.of_call("two-services")) == ["fn-core-lb"]
        scraped = metric_samples(exposition(tracer.metric_families()))
        assert scraped['fn_trace_spans_sent_total{collector="jaeger"}'] == 1
        assert scraped['fn_trace_spans_dropped_total{collector="jaeger"}'] == 1
        assert "did not take 1 span(s): HTTP 503 overloaded" in caplog.text
        await stopped(collector)


async def one_span_at_a_time(tracer, collector, caplog, steps) -> None:
    """For each (call id, what the log then says): the LB's span of that call, sent at once, until the log says it."""
    from fn_core.models import Call
    from fn_core.records import CallOutcome

    for call_id, said in steps:
        tracer.call_finished(Call(id=call_id, app_id="a", fn_id="f"), CallOutcome(status=200))
        collector._wake.set()
        await wait_until(lambda said=said: said in caplog.text, said, timeout_s=10)


async def test_a_collector_behind_basic_auth_gets_its_password_but_the_log_never_shows_it(caplog):
    from aiohttp import web

    from fn_plugins_builtin.tracing import Collector, Tracer
    from fn_plugins_builtin.tracing_formats import zipkin_json

    caplog.set_level(logging.INFO, logger="fn_plugins_builtin.tracing")
    answers, auths = [500, 202], []

    async def take(request: web.Request) -> web.Response:
        auths.append(request.headers["Authorization"])
        return web.Response(status=answers.pop(0))

    async with collector_server("/api/v2/spans", take) as port:
        collector = Collector("zipkin", f"http://user:zippass@127.0.0.1:{port}/api/v2/spans", zipkin_json)
        await one_span_at_a_time(Tracer([collector]), collector, caplog, (("in-the-outage", "did not take"),
                                                                          ("after-it", "takes spans again")))
        assert auths == ["Basic " + base64.b64encode(b"user:zippass").decode()] * 2
        assert f"Zipkin at http://user:***@127.0.0.1:{port}/api/v2/spans did not take 1 span(s): HTTP 500" in caplog.text
        assert f"Zipkin at http://user:***@127.0.0.1:{port}/api/v2/spans takes spans again" in caplog.text
        assert "zippass" not in caplog.text
        await stopped(collector)


async def test_a_refusal_whose_body_is_not_text_is_said_and_the_sender_goes_on(caplog):
    """A proxy's error page in another encoding once ended the sender unseen: every later span waited for ever."""
    from aiohttp import web

    from fn_plugins_builtin.tracing import Collector, Tracer
    from fn_plugins_builtin.tracing_formats import zipkin_json

    caplog.set_level(logging.INFO, logger="fn_plugins_builtin.tracing")
    answers = [web.Response(status=502, body=b"\xff\xfe bad gateway"), web.Response(status=202)]

    async def take(request: web.Request) -> web.Response:
        return answers.pop(0)

    async with collector_server("/api/v2/spans", take) as port:
        collector = Collector("zipkin", f"http://127.0.0.1:{port}/api/v2/spans", zipkin_json)
        await one_span_at_a_time(Tracer([collector]), collector, caplog, (("refused", "did not take 1 span(s): HTTP 502"),
                                                                          ("taken", "takes spans again")))
        assert (collector.dropped, collector.sent) == (1, 1) and "bad gateway" in caplog.text
        await stopped(collector)


async def test_an_unusable_collector_url_is_logged_without_its_password(caplog):
    from fn_core.models import Call
    from fn_core.records import CallOutcome
    from fn_plugins_builtin.tracing import Collector, Tracer
    from fn_plugins_builtin.tracing_formats import zipkin_json

    collector = Collector("zipkin", "http://user:zippass@127.0.0.1:99999/api/v2/spans", zipkin_json)  # aiohttp: InvalidURL, quoting it
    Tracer([collector]).call_finished(Call(id="call-1", app_id="a", fn_id="f"), CallOutcome(status=200))
    collector._wake.set()
    await wait_until(lambda: "did not take" in caplog.text, "the failure was logged", timeout_s=10)
    assert "http://user:***@127.0.0.1:99999/api/v2/spans" in caplog.text and "zippass" not in caplog.text
    await stopped(collector)
