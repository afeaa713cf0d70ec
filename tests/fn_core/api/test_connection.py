"""fn_core.api.connection on 127.0.0.1: what a client gets when aiohttp itself refuses a request, or a handler fails.

The head and write bounds through real LB and API nodes are in tests/fn_core/lb/test_http_timeouts.py,
test_lb_http.py and tests/system/test_lb_system.py.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest
from aiohttp import web

from fn_core import logfmt
from fn_core.api.connection import MAX_LOGGED_ERROR, ConnectionLimits, FnAppRunner


@pytest.fixture
async def serve_app():
    """``port = await serve_app(app, limits)``: the app behind `FnAppRunner` on 127.0.0.1, cleaned up after the test."""
    runners: list[FnAppRunner] = []

    async def start(app: web.Application, limits: ConnectionLimits = ConnectionLimits()) -> int:
        runner = FnAppRunner(app, limits, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1]

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_handlers_bug_is_fns_500_json_and_its_traceback_is_logged(serve_app, caplog):
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a bug in a handler")

    app = web.Application()
    app.router.add_get("/boom", boom)
    port = await serve_app(app)
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/boom") as r:
        assert r.status == 500 and r.content_type == "application/json"
        assert await r.json() == {"message": "internal server error"}
    assert "a bug in a handler" in caplog.text  # the operator sees the traceback; the client does not


async def test_a_malformed_request_is_400_json_saying_what_was_wrong_and_the_connection_closes(serve_app):
    port = await serve_app(web.Application())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost test\r\n\r\n")  # a header line without its colon
    answer = await asyncio.wait_for(reader.read(), 5)  # all of it, up to the close
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["message"].startswith("Bad Request: Invalid header token")


async def test_refusals_are_one_log_line_each_not_a_traceback(serve_app, caplog):
    caplog.set_level(logging.INFO, logger="fn_core.api.connection")
    port = await serve_app(web.Application(), ConnectionLimits(head_bytes=1024))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 2000 + b"\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert b" 431 Request Header Fields Too Large\r\n" in answer
    refusals = [logfmt.parse(r.getMessage()) for r in caplog.records if r.name == "fn_core.api.connection"]
    assert [(r["client"], r["status"]) for r in refusals] == [("127.0.0.1", "431")]
    assert not [r for r in caplog.records if r.exc_info]


async def _send(port: int, raw: bytes) -> bytes:
    """``raw`` on a connection of its own; the answer, up to the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


def _refusal_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fn_core.api.connection"]


async def test_a_malformed_request_is_logged_on_one_line_with_the_clients_bytes_escaped_and_cut(serve_app, caplog):
    caplog.set_level(logging.INFO, logger="fn_core.api.connection")
    port = await serve_app(web.Application())
    assert b" 400 Bad Request\r\n" in await _send(port, b"FOO1 /invoke/abc HTTP/1.1\r\nHost: x\r\n\r\n")  # curl -X FOO1
    assert b" 400 Bad Request\r\n" in await _send(port, b"GET /" + b"\x1b[2J" * 300 + b" HTTP/1.1\r\nHost test\r\n\r\n")
    first, second = _refusal_lines(caplog)
    assert "\n" not in first + second
    fields = logfmt.parse(first)
    assert (fields["client"], fields["status"]) == ("127.0.0.1", "400")
    assert fields["error"].startswith("Bad Request: Invalid method encountered:") and "FOO1 /invoke/abc" in fields["error"]
    assert len(logfmt.parse(second)["error"]) <= MAX_LOGGED_ERROR + 3


async def test_a_client_repeating_a_bad_request_is_logged_once_per_reason_then_again_with_the_count(serve_app, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="fn_core.api.connection")
    port = await serve_app(web.Application())
    for method in (b"FOO1", b"FOO2", b"FOO3"):
        await _send(port, method + b" /invoke/abc HTTP/1.1\r\n\r\n")
    await _send(port, b"GET / HTTP/1.1\r\nHost test\r\n\r\n")  # another reason: said
    assert [logfmt.parse(line)["error"].split(":")[1] for line in _refusal_lines(caplog)] == [
        " Invalid method encountered", " Invalid header token"
    ]
    monkeypatch.setattr("fn_core.api.connection.REFUSAL_QUIET_S", 0.0)  # as when the quiet time is over
    await _send(port, b"FOO4 /invoke/abc HTTP/1.1\r\n\r\n")
    last = logfmt.parse(_refusal_lines(caplog)[-1])
    assert "FOO4" in last["error"] and last["not_logged"] == "2"  # FOO2 and FOO3


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"identity, chunked"])
async def test_a_transfer_coding_other_than_chunked_alone_is_501_and_reaches_no_handler(serve_app, coding):
    # aiohttp would dechunk "gzip, chunked" and hand the gzip-coded bytes on as the body; Go refuses every such coding
    # (a coding that does not end in chunked, aiohttp's parser already refuses with 400)
    seen: list[bytes] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(body=seen[-1])

    app = web.Application()
    app.router.add_post("/echo", echo)
    port = await serve_app(app)
    chunked = b"5\r\nhello\r\n0\r\n\r\n"
    answer = await _send(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + coding + b"\r\n\r\n" + chunked
                         + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")  # pipelined: never read
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b" 501 Not Implemented")  # and the connection closed: read to its end
    assert json.loads(body) == {"message": f"Unsupported transfer encoding: {coding.decode()}"}
    assert seen == []
    ok = await _send(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n" + chunked)
    assert ok.startswith(b"HTTP/1.1 200 OK") and ok.endswith(b"hello") and seen == [b"hello"]  # chunked alone: any case
