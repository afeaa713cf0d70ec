"""Invoke/trigger requests refused before a call exists: Fn's answer unchanged, plus a log line and a counter.

A real LB on 127.0.0.1 with no runners (nothing here gets as far as a container).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from fn_core.config import load_config
from fn_core.lb.main import start_lb
from fn_core.plugins import get_plugin_manager
from fn_core.testing import wait_until

from .conftest import metrics, request

MAX = 1000  # FN_MAX_REQUEST_SIZE of the LB under test
REJECTED = "fn_lb_invoke_rejected_total"


@pytest.fixture
async def lb_node(tmp_path, caplog, request):
    """(node, session): for the tests that talk to it over a socket of their own. FN_MAX_REQUEST_SIZE: MAX, or the
    test's parameter."""
    caplog.set_level(logging.INFO, logger="fn_core.calls")
    max_size = getattr(request, "param", MAX)
    settings = {"db_url": f"sqlite3://{tmp_path}/fn.db", "max_request_size": max_size, "placer_timeout_s": 0.1}
    config = load_config(env={}, overrides=settings)
    node = await start_lb(
        config, get_plugin_manager(config, load_entrypoints=False), host="127.0.0.1", port=0, runner_addresses=[]
    )
    session = aiohttp.ClientSession(node.url, timeout=aiohttp.ClientTimeout(total=30))
    yield node, session
    await session.close()
    await node.stop()


@pytest.fixture
def lb(lb_node):
    return lb_node[1]


def rejection_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fn_core.calls" and r.getMessage().startswith("invoke rejected")]


async def deploy(session, source="/hello"):
    _, app, _ = await request(session, "POST", "/v2/apps", json={"name": "app1"})
    _, fn, _ = await request(session, "POST", "/v2/fns", json={"name": "fn1", "app_id": app["id"], "image": "example/echo:1"})
    trigger = {"name": "t1", "app_id": app["id"], "fn_id": fn["id"], "type": "http", "source": source}
    assert (await request(session, "POST", "/v2/triggers", json=trigger))[0] == 200
    return fn


async def test_unknown_fn_is_404_counted_and_logged(lb, caplog):
    for _ in range(2):  # the second answer comes from the not-found cache: counted all the same
        status, body, headers = await request(lb, "POST", "/invoke/01NOPE", data=b"x")
        assert (status, body) == (404, {"message": "Fn not found"})
        assert "Fn-Call-Id" not in headers  # no call exists, so no id is made up
    samples = await metrics(lb)
    assert samples[f'{REJECTED}{{status="404"}}'] == 2
    assert not [name for name in samples if name.startswith("fn_lb_calls_total")]  # not a call
    lines = rejection_lines(caplog)
    assert len(lines) == 2
    assert lines[0].startswith("invoke rejected method=POST path=/invoke/01NOPE status=404 duration_ms=")
    assert lines[0].endswith(' error="Fn not found"')
    assert not [r for r in caplog.records if r.getMessage().startswith("call finished")]


async def test_trigger_unknown_app_or_source_is_404_counted_and_logged(lb, caplog):
    await deploy(lb)
    assert (await request(lb, "GET", "/t/noapp/hello"))[:2] == (404, {"message": "App not found"})
    assert (await request(lb, "PUT", "/t/app1/nope", data=b"x"))[:2] == (404, {"message": "Trigger not found"})
    assert (await metrics(lb))[f'{REJECTED}{{status="404"}}'] == 2
    lines = rejection_lines(caplog)
    assert lines[0].startswith("invoke rejected method=GET path=/t/noapp/hello status=404 ")
    assert lines[1].startswith("invoke rejected method=PUT path=/t/app1/nope status=404 ")
    assert lines[1].endswith(' error="Trigger not found"')
    assert (await request(lb, "GET", "/t/no%0Aapp/x"))[:2] == (404, {"message": "App not found"})
    assert rejection_lines(caplog)[2].startswith("invoke rejected method=GET path=/t/no%0Aapp/x ")  # one line, still encoded


async def test_content_length_over_the_limit_is_413_counted_and_logged(lb, caplog):
    fn = await deploy(lb)
    status, body, headers = await request(lb, "POST", f"/invoke/{fn['id']}", data=b"x" * (MAX + 1))
    assert (status, body) == (413, {"message": f"Content-Length too large for this server, {MAX + 1} > max {MAX}"})
    assert "Fn-Call-Id" not in headers
    status, body, _ = await request(lb, "POST", "/t/app1/hello", data=b"x" * (MAX + 1))
    assert status == 413
    samples = await metrics(lb)
    assert samples[f'{REJECTED}{{status="413"}}'] == 2
    assert not [name for name in samples if name.startswith("fn_lb_calls_total")]
    lines = rejection_lines(caplog)
    assert lines[0].startswith(f"invoke rejected method=POST path=/invoke/{fn['id']} status=413 ")
    assert lines[1].startswith("invoke rejected method=POST path=/t/app1/hello status=413 ")


async def test_chunked_body_over_the_limit_is_413_and_not_a_call(lb, caplog):
    fn = await deploy(lb)

    async def chunks():
        for _ in range(3):
            yield b"x" * 600

    status, body, headers = await request(lb, "POST", f"/invoke/{fn['id']}", data=chunks())
    assert (status, body) == (413, {"message": f"request body too large for this server, max {MAX}"})
    assert "Fn-Call-Id" not in headers
    samples = await metrics(lb)
    assert samples[f'{REJECTED}{{status="413"}}'] == 1
    # cut off while reading, before anything ran: no call line, no call metric (it used to count as a 500 call)
    assert not [name for name in samples if name.startswith("fn_lb_calls_total")]
    assert not [r for r in caplog.records if r.getMessage().startswith("call finished")]
    assert rejection_lines(caplog)[0].startswith(f"invoke rejected method=POST path=/invoke/{fn['id']} status=413 ")


async def test_wrong_method_on_invoke_is_counted(lb, caplog):
    assert (await request(lb, "GET", "/invoke/01NOPE"))[:2] == (405, {"message": "Method not allowed"})
    assert (await metrics(lb))[f'{REJECTED}{{status="405"}}'] == 1
    assert rejection_lines(caplog)[0].startswith("invoke rejected method=GET path=/invoke/01NOPE status=405 ")


async def test_v2_api_errors_are_not_rejected_invokes(lb, caplog):
    assert (await request(lb, "GET", "/v2/apps/01NOPE"))[:2] == (404, {"message": "App not found"})
    assert (await request(lb, "GET", "/v2/fns/01NOPE"))[:2] == (404, {"message": "Fn not found"})
    assert (await request(lb, "GET", "/nowhere"))[:2] == (404, {"message": "Path not found"})
    assert (await request(lb, "POST", "/v2/apps", data=b"x" * (MAX + 1)))[0] == 413
    async with lb.get("/metrics") as r:
        text = await r.text()
    assert f"# TYPE {REJECTED} counter" in text  # the counter is declared even before its first sample
    assert f"{REJECTED}{{" not in text
    assert rejection_lines(caplog) == []


async def test_a_placed_call_is_a_call_not_a_rejection(lb, caplog):
    fn = await deploy(lb)
    status, body, headers = await request(lb, "POST", f"/invoke/{fn['id']}", data=b"x")  # no runners: 503 after 0.1 s
    assert (status, body) == (503, {"message": "Timed out - server too busy"}) and headers["Fn-Call-Id"]
    samples = await metrics(lb)
    assert samples['fn_lb_calls_total{status="503"}'] == 1
    assert not [name for name in samples if name.startswith(REJECTED)]
    assert rejection_lines(caplog) == []
    assert [r for r in caplog.records if r.getMessage().startswith("call finished") and "status=503" in r.getMessage()]


async def test_a_client_that_hangs_up_mid_body_is_a_refused_invoke_not_a_call(lb_node, caplog):
    node, session = lb_node
    fn = await deploy(session)
    _, writer = await asyncio.open_connection(node.host, node.port)
    writer.write(f"POST /invoke/{fn['id']} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + b"x" * 40)
    await writer.drain()
    await asyncio.sleep(0.1)  # the handler waits for the rest
    writer.close()
    await wait_until(lambda: bool(rejection_lines(caplog)), "the refused invoke logged")
    assert rejection_lines(caplog)[0].startswith(f"invoke rejected method=POST path=/invoke/{fn['id']} status=444 ")
    samples = await metrics(session)
    assert samples[f'{REJECTED}{{status="444"}}'] == 1
    # nothing ran and nobody saw the call: no call line, no call metric (it was a 444 call with attempts=0)
    assert not [name for name in samples if name.startswith("fn_lb_calls_total")]
    assert not [r for r in caplog.records if r.getMessage().startswith("call finished")]


async def expecting(node, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sent a POST head with `Expect: 100-continue` and waits, its 5-byte body unsent."""
    reader, writer = await asyncio.open_connection(node.host, node.port)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize("lb_node", [MAX, 0], indirect=True, ids=["max-size", "no-max-size"])
async def test_expect_100_continue_to_an_unknown_fn_or_trigger_gets_the_404_without_being_invited_to_send_its_body(lb_node):
    node, session = lb_node
    await deploy(session)
    for path in ("/invoke/01NOPE", "/t/app1/nope", "/t/noapp/hello"):
        reader, writer = await expecting(node, path)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 404 "), (path, head)  # no "HTTP/1.1 100 Continue" before it
        assert b"Connection: close" in head  # the body it announced is not coming: no next request on it


@pytest.mark.parametrize("lb_node", [MAX, 0], indirect=True, ids=["max-size", "no-max-size"])
async def test_expect_100_continue_to_a_known_fn_invites_the_body_and_runs_the_call(lb_node):
    node, session = lb_node
    fn = await deploy(session)
    for path in (f"/invoke/{fn['id']}", "/t/app1/hello"):
        reader, writer = await expecting(node, path)
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 503 ") and b"Fn-Call-Id: " in head  # a call, placed: no runners here


async def test_a_body_in_a_transfer_coding_go_refuses_is_501_and_saves_nothing(lb_node):
    node, session = lb_node
    body = b'{"name": "gzipped"}'
    reader, writer = await asyncio.open_connection(node.host, node.port)
    writer.write(b"POST /v2/apps HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                 + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)  # all of it: the connection closes after
    writer.close()
    assert answer.startswith(b"HTTP/1.0 501 Not Implemented\r\n")
    assert answer.endswith(b'{"message": "Unsupported transfer encoding: gzip, chunked"}')
    status, apps, _ = await request(session, "GET", "/v2/apps")
    assert (status, apps["items"]) == (200, [])
