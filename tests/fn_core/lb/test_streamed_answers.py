"""A sync call's answer bigger than the LB holds (`STREAM_AFTER_BYTES`) leaves the LB as it comes, chunked;
a failure after it began cuts the client's connection. Real LB, gRPC, runner and Docker."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from fn_core.lb.runner_client import STREAM_AFTER_BYTES
from fn_core.testing import metric_samples, wait_until


async def test_a_big_answer_is_streamed_chunked_and_a_small_one_keeps_its_length(fn_platform, echo_image):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image)
    small = await platform.invoke(fn["id"], b'{"repeat": 20000, "text": "s"}')
    assert (small.status, small.headers["Content-Length"], small.body) == (200, "20000", b"s" * 20000)
    assert "Transfer-Encoding" not in small.headers

    big = await platform.invoke(fn["id"], b'{"repeat": 1000000, "text": "ab"}')
    assert (big.status, big.headers.get("Transfer-Encoding"), big.body) == (200, "chunked", b"ab" * 1_000_000)
    assert "Content-Length" not in big.headers and big.headers["Fn-Call-Id"]
    assert big.headers["Content-Type"] == "application/json"  # the function's headers, as without streaming


async def test_a_trigger_streams_its_big_answer_with_the_functions_status_and_headers(fn_platform, echo_image):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, app="web")
    trigger = await platform.api("POST", "/v2/triggers", {"name": "big", "app_id": fn["app_id"], "fn_id": fn["id"],
                                                          "type": "http", "source": "/big"})
    assert trigger.status == 200, trigger.body
    body = b'{"repeat": 200000, "text": "xyz", "status": 201, "headers": {"X-Made-By": "echo"}}'
    async with platform.session.post(f"{platform.url}/t/web/big", data=body) as r:
        assert (r.status, r.headers["X-Made-By"], r.headers.get("Transfer-Encoding")) == (201, "echo", "chunked")
        assert await r.read() == b"xyz" * 200_000


async def test_a_runner_lost_after_the_answer_began_cuts_the_clients_connection(fn_platform, echo_image):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, memory=384)  # the function holds its 48 MB answer twice (str, bytes)
    size = 48 * 1024 * 1024  # far more than the LB <-> runner window (4 MiB): the runner is mid-answer when it dies
    async with platform.session.post(f"{platform.url}/invoke/{fn['id']}", data=f'{{"repeat": {size}}}') as r:
        assert r.status == 200 and r.headers["Transfer-Encoding"] == "chunked"  # the function's status: sent already
        first = await r.content.readexactly(STREAM_AFTER_BYTES)
        assert first == b"x" * STREAM_AFTER_BYTES
        await platform.runners[0].stop(grace=0)  # the runner goes, its connection to the LB with it
        with pytest.raises(aiohttp.ClientPayloadError):  # the body ends short, and the client can tell
            await r.read()

    async def lb_counted_the_failure() -> bool:
        samples = metric_samples((await platform.api("GET", "/metrics")).body.decode())
        return samples.get('fn_lb_calls_total{status="500"}') == 1

    for _ in range(100):  # the LB records the call just after it cut the connection
        if await lb_counted_the_failure():
            break
        await asyncio.sleep(0.05)
    assert await lb_counted_the_failure()
    await wait_until(lambda: platform.containers(fn["id"]) == [], "the stopped runner removed its container", timeout_s=30)


async def test_an_http_1_0_client_gets_a_big_answer_whole_with_its_head(fn_platform, echo_image):
    """HTTP/1.0 has no chunked encoding (nginx proxies with it by default): the body ends with the connection."""
    platform = await fn_platform()
    fn = await platform.deploy(echo_image)
    body = b'{"repeat": 100000, "text": "ab"}'
    host, port = platform.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /invoke/%s HTTP/1.0\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (fn["id"].encode(), len(body), body))
    async with asyncio.timeout(30):
        answer = await reader.read()  # to the end: the LB closes the connection after the body
    writer.close()
    head, _, got = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"Transfer-Encoding" not in head
    assert got == b"ab" * 100000


async def test_a_big_answer_with_a_status_that_has_no_body_sends_the_head_alone(fn_platform, echo_image):
    """A trigger's function answering 204 with a big body: the client gets the 204 alone, and the next request
    on the same keep-alive connection gets its own answer (the body would have desynchronised it)."""
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, app="web")
    trigger = await platform.api("POST", "/v2/triggers", {"name": "none", "app_id": fn["app_id"], "fn_id": fn["id"],
                                                          "type": "http", "source": "/none"})
    assert trigger.status == 200, trigger.body
    connector = aiohttp.TCPConnector(limit=1)  # one connection for both requests
    async with aiohttp.ClientSession(platform.url, connector=connector) as session:
        async with session.post("/t/web/none", data=b'{"repeat": 200000, "status": 204}') as r:
            assert (r.status, await r.read()) == (204, b"")
        async with session.get("/version") as r:
            assert r.status == 200 and "version" in await r.json()
