"""FN_HTTP_IDLE_TIMEOUT, FN_REQUEST_HEADER_READ_TIMEOUT, FN_REQUEST_BODY_READ_TIMEOUT and FN_RESPONSE_WRITE_TIMEOUT
on real nodes on 127.0.0.1, seen from a raw socket.

No runner is needed for the refusals: the body is read before a call is placed. Waits are bounded and
generous (a timeout of 0.3 s may take up to 5 s to show on a slow machine).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fn_core.api.connection import http_timeouts
from fn_core.config import load_config
from fn_core.lb.main import start_api
from fn_core.testing import metric_samples

SHORT = 0.3  # the timeout under test
PATIENCE = 5.0  # how long a test waits for something that must happen


@pytest.fixture
async def connect():
    """``reader, writer = await connect(url)``: a raw connection, kept open from our side until the test ends
    (a writer that is garbage collected closes it, which would hide whether the server closed it)."""
    writers: list[asyncio.StreamWriter] = []

    async def open_connection(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), PATIENCE)
        writers.append(writer)
        return reader, writer

    yield open_connection
    for writer in writers:
        writer.close()


def head(method: str, path: str, content_length: int | None = None) -> bytes:
    length = "" if content_length is None else f"Content-Length: {content_length}\r\nContent-Type: application/json\r\n"
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n{length}\r\n".encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    status_line, *lines = raw.decode().rstrip("\r\n").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), PATIENCE)
    return int(status_line.split()[1]), headers, body


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True once the server has closed the connection (EOF or reset) within ``seconds``; False if it is still open."""
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    assert data == b"", f"unexpected bytes from the server: {data!r}"
    return True


async def metrics(session) -> dict[str, float]:
    async with session.get("/metrics") as r:
        return metric_samples(await r.text())


@pytest.fixture
async def api_node(tmp_path):
    """``url = await api_node(**overrides)``: an API node (fn-core api) on 127.0.0.1, stopped after the test."""
    nodes = []

    async def make(**overrides) -> str:
        config = load_config(env={}, overrides={"db_url": f"sqlite3://{tmp_path}/api.db", **overrides})
        nodes.append(await start_api(config, host="127.0.0.1", port=0))
        return nodes[-1].url

    yield make
    for node in nodes:
        await node.stop(grace=1.0)


# --- FN_HTTP_IDLE_TIMEOUT --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lb", "api"])
async def test_an_idle_keep_alive_connection_is_closed_after_fn_http_idle_timeout(kind, lb_factory, api_node, connect):
    url = (await lb_factory([], http_idle_timeout_s=SHORT))[0].url if kind == "lb" else await api_node(http_idle_timeout_s=SHORT)
    reader, writer = await connect(url)
    writer.write(head("GET", "/version"))
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers.get("connection", "keep-alive").lower() != "close"  # kept alive, at first
    idle_since = time.monotonic()
    assert await closed_within(reader, PATIENCE), "the idle connection was not closed"
    assert time.monotonic() - idle_since >= SHORT * 0.5  # by the idle timer, not at once


async def test_an_idle_connection_stays_open_within_a_long_fn_http_idle_timeout(lb_factory, connect):
    node, _, _ = await lb_factory([], http_idle_timeout_s=30.0)
    reader, writer = await connect(node.url)
    writer.write(head("GET", "/version"))
    assert (await read_response(reader))[0] == 200
    assert not await closed_within(reader, 1.0)
    writer.write(head("GET", "/version"))  # the same connection serves the next request
    assert (await read_response(reader))[0] == 200


async def test_a_request_head_that_never_completes_is_cut_off_by_the_idle_timeout(lb_factory, connect):
    node, _, _ = await lb_factory([], http_idle_timeout_s=SHORT)
    reader, writer = await connect(node.url)
    writer.write(b"GET /version HTTP/1.1\r\nHost: test\r\n")  # slowloris: the head never ends
    assert await closed_within(reader, PATIENCE)


def test_unset_timeouts_are_a_75_s_keep_alive_and_aiohttps_lingering():
    # given, not aiohttp's: since 3.14 its keep-alive default is an hour (1000 idle connections outlived 80 s)
    assert http_timeouts(load_config(env={})) == {"keepalive_timeout": 75.0}  # lingering: aiohttp's 10 s
    config = load_config(env={"FN_HTTP_IDLE_TIMEOUT": "1m30s", "FN_REQUEST_BODY_READ_TIMEOUT": "500ms"})
    assert http_timeouts(config) == {"keepalive_timeout": 90.0, "lingering_time": 0.5}
    assert http_timeouts(load_config(env={"FN_REQUEST_BODY_READ_TIMEOUT": "1h"}))["lingering_time"] == 10.0


# --- FN_REQUEST_HEADER_READ_TIMEOUT ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lb", "api"])
async def test_a_request_head_not_whole_within_fn_request_header_read_timeout_is_408_and_the_connection_closes(
    kind, lb_factory, api_node, connect
):
    url = (await lb_factory([], request_header_read_timeout_s=SHORT))[0].url if kind == "lb" else await api_node(
        request_header_read_timeout_s=SHORT
    )
    reader, writer = await connect(url)
    started = time.monotonic()
    writer.write(b"GET /version HTTP/1.1\r\nHost: test\r\n")  # slowloris: the head never ends
    status, _, body = await read_response(reader)
    assert status == 408
    assert json.loads(body) == {"message": f"Timed out reading the request head: not all of it came within {SHORT:g} s"}
    assert time.monotonic() - started >= SHORT * 0.5
    assert await closed_within(reader, PATIENCE)


async def test_without_a_head_timeout_the_body_timeout_bounds_the_head_too_as_in_go(lb_factory, connect):
    node, _, _ = await lb_factory([], request_body_read_timeout_s=SHORT)
    reader, writer = await connect(node.url)
    writer.write(b"GET /version HTTP/1.1\r\nHost: test\r\n")
    status, _, body = await read_response(reader)
    assert status == 408 and json.loads(body)["message"].startswith("Timed out reading the request head")


async def test_a_connection_that_sends_nothing_is_closed_unanswered_after_the_header_read_timeout(lb_factory, connect):
    node, _, _ = await lb_factory([], request_header_read_timeout_s=SHORT)
    reader, _ = await connect(node.url)
    assert await closed_within(reader, PATIENCE)  # read(1) gave b"": no answer, as Go's server


async def test_the_header_read_timeout_counts_from_the_first_byte_of_each_later_request(lb_factory, connect):
    node, session, _ = await lb_factory([], request_header_read_timeout_s=SHORT, http_idle_timeout_s=30.0)
    reader, writer = await connect(node.url)
    writer.write(head("GET", "/version"))
    assert (await read_response(reader))[0] == 200
    assert not await closed_within(reader, SHORT * 4)  # idle between requests: FN_HTTP_IDLE_TIMEOUT's wait, not this one
    first, rest = head("GET", "/version")[:10], head("GET", "/version")[10:]
    writer.write(first)
    await asyncio.sleep(SHORT / 3)  # a head in two parts, whole within the limit
    writer.write(rest)
    assert (await read_response(reader))[0] == 200
    writer.write(first)  # and one that stops half-way
    status, _, body = await read_response(reader)
    assert status == 408 and json.loads(body)["message"].startswith("Timed out reading the request head")


async def test_a_slow_head_on_invoke_reaches_no_runner(fake_runners, lb_factory, deploy_fn, connect):
    runner = await fake_runners("echo")
    node, session, recorder = await lb_factory([runner.address], request_header_read_timeout_s=SHORT)
    ids = await deploy_fn(session)
    reader, writer = await connect(node.url)
    writer.write(head("POST", f"/invoke/{ids['fn']['id']}", content_length=2)[:-4])  # all but the blank line
    assert (await read_response(reader))[0] == 408
    assert runner.calls == [] and recorder.outcomes == []
    async with session.post(f"/invoke/{ids['fn']['id']}", data=b"ok") as r:  # a new connection is served
        assert r.status == 200 and await r.read() == b"ok"


# --- FN_RESPONSE_WRITE_TIMEOUT -------------------------------------------------------------------------------


async def test_a_response_not_written_within_fn_response_write_timeout_cuts_the_connection_and_ends_the_call(
    fake_runners, lb_factory, deploy_fn, connect
):
    runner = await fake_runners(lambda call, body: "hang" if body == b"slow" else "echo")
    # with a head timeout too: neither may fire while the other request's stages run
    node, session, recorder = await lb_factory([runner.address], response_write_timeout_s=SHORT, request_header_read_timeout_s=SHORT)
    ids = await deploy_fn(session)
    path = f"/invoke/{ids['fn']['id']}"
    reader, writer = await connect(node.url)
    writer.write(head("POST", path, content_length=4) + b"slow")
    started = time.monotonic()
    assert await closed_within(reader, PATIENCE), "the connection outlived FN_RESPONSE_WRITE_TIMEOUT"
    assert time.monotonic() - started >= SHORT * 0.5
    await asyncio.wait_for(_until(lambda: runner.cancelled == 1), PATIENCE)  # the call ends with its client
    # quick answers on a kept-alive connection: each request has its own clock
    reader, writer = await connect(node.url)
    for _ in range(3):
        writer.write(head("POST", path, content_length=4) + b"fast")
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"fast")
        await asyncio.sleep(SHORT * 0.6)  # together longer than the limit
    assert not await closed_within(reader, SHORT * 2)  # idle is not writing: FN_HTTP_IDLE_TIMEOUT's business
    for _ in range(3):  # aiohttp's client: head and body in separate writes, a connection kept in its pool
        async with session.post(path, data=b"fast") as r:
            assert (r.status, await r.read()) == (200, b"fast")
        await asyncio.sleep(SHORT * 1.5)


async def _until(check) -> None:
    while not check():
        await asyncio.sleep(0.02)


def test_the_head_and_write_timeouts_read_go_durations():
    config = load_config(env={"FN_REQUEST_HEADER_READ_TIMEOUT": "1m30s", "FN_RESPONSE_WRITE_TIMEOUT": "500ms"})
    assert (config.request_header_read_timeout_s, config.response_write_timeout_s) == (90.0, 0.5)
    assert (load_config(env={}).request_header_read_timeout_s, load_config(env={}).response_write_timeout_s) == (0.0, 0.0)


# --- FN_REQUEST_BODY_READ_TIMEOUT --------------------------------------------------------------------------


@pytest.fixture
def send_slow_body(connect):
    """``status, headers, json_body, reader = await send_slow_body(url, method, path)``: announce 100 bytes of
    body, send 10 and stall."""

    async def send(url: str, method: str, path: str) -> tuple[int, dict[str, str], dict, asyncio.StreamReader]:
        reader, writer = await connect(url)
        writer.write(head(method, path, content_length=100) + b'{"name": "')
        status, headers, body = await read_response(reader)
        return status, headers, json.loads(body), reader

    return send


@pytest.mark.parametrize("route", ["invoke", "trigger"])
async def test_a_slow_body_on_invoke_is_408_a_rejected_invoke_and_the_connection_closes(route, lb_factory, deploy_fn, send_slow_body):
    node, session, recorder = await lb_factory([], request_body_read_timeout_s=SHORT)  # no runners: none is needed
    ids = await deploy_fn(session, trigger_source="/hello")
    path = f"/invoke/{ids['fn']['id']}" if route == "invoke" else "/t/app1/hello"
    status, headers, body, reader = await send_slow_body(node.url, "POST", path)
    assert status == 408
    assert body["message"].startswith("Timed out reading the request body") and list(body) == ["message"]
    assert "fn-call-id" not in headers and headers["connection"].lower() == "close"
    assert await closed_within(reader, PATIENCE), "the connection was left open after the 408"
    samples = await metrics(session)
    assert samples['fn_lb_invoke_rejected_total{status="408"}'] == 1
    assert not [name for name in samples if name.startswith("fn_lb_calls_total")]  # not a call: none ran
    assert recorder.outcomes == []


async def test_a_slow_body_on_the_v2_api_is_408_and_nothing_is_created(lb_factory, api_node, send_slow_body):
    node, session, _ = await lb_factory([], request_body_read_timeout_s=SHORT)
    status, headers, body, reader = await send_slow_body(node.url, "POST", "/v2/apps")
    assert status == 408 and body["message"].startswith("Timed out reading the request body")
    assert headers["connection"].lower() == "close"
    assert await closed_within(reader, PATIENCE)
    async with session.get("/v2/apps") as r:
        assert (await r.json())["items"] == []
    samples = await metrics(session)
    assert samples['fn_api_requests_total{method="POST",route="/v2/apps",status="408"}'] == 1
    assert not [name for name in samples if name.startswith("fn_lb_invoke_rejected_total")]  # /v2 is no invoke
    # the same on an API node
    status, _, _, reader = await send_slow_body(await api_node(request_body_read_timeout_s=SHORT), "PUT", "/v2/apps/01NOPE")
    assert status == 408 and await closed_within(reader, PATIENCE)


async def test_bodies_sent_within_the_timeout_still_work(fake_runners, lb_factory, connect):
    runner = await fake_runners("echo")
    node, session, _ = await lb_factory([runner.address], request_body_read_timeout_s=3.0)
    async with session.post("/v2/apps", json={"name": "app1"}) as r:
        assert r.status == 200
        app = await r.json()
    async with session.post("/v2/fns", json={"name": "fn1", "app_id": app["id"], "image": "example/echo:1"}) as r:
        assert r.status == 200
        fn = await r.json()
    reader, writer = await connect(node.url)
    writer.write(head("POST", f"/invoke/{fn['id']}", content_length=10) + b"hello")
    await asyncio.sleep(0.2)  # a pause well within the limit
    writer.write(b"world")
    status, headers, body = await read_response(reader)
    assert (status, body) == (200, b"helloworld") and headers["fn-call-id"]
    writer.write(head("GET", "/version"))  # kept alive
    assert (await read_response(reader))[0] == 200
    assert len(runner.calls) == 1
