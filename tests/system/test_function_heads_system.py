"""What a function's answer head becomes for the client, with real processes: `fn-core lb` + `fn-core runner` +
Docker + the fdk echo fn (its ``status`` and ``headers`` keys choose the answer's; through a trigger the fdk sends
them as Fn-Http-Status and Fn-Http-H-*)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from fn_core.errors import FunctionResponseHeaderTooBig
from fn_core.testing import wait_until

TIMEOUT = aiohttp.ClientTimeout(total=20)  # bounded: a hang fails the test, it does not hold it
#: the test's client takes heads as big as the function's (aiohttp's own bounds are 8190 bytes a line, 128 headers)
BIG_HEADS = {"max_line_size": 1 << 20, "max_field_size": 1 << 20, "max_headers": 10_000}


async def deploy_with_trigger(session: aiohttp.ClientSession, deploy_echo, image: str, source: str) -> dict:
    ids = await deploy_echo(session, image)
    trigger = {"name": "t", "app_id": ids["app"]["id"], "fn_id": ids["fn"]["id"], "type": "http", "source": source}
    async with session.post("/v2/triggers", json=trigger) as r:
        assert r.status == 200, await r.text()
    return ids


async def raw_post(url: str, path: str, body: bytes) -> bytes:
    """POST ``path`` on a plain connection and read the answer up to the LB's close: every byte, interim ones too."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (path.encode(), host.encode(), len(body), body))
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()


async def test_a_trigger_whose_function_answers_with_a_1xx_status_gets_a_final_502_at_once(platform, deploy_echo):
    """A 1xx Fn-Http-Status is no final answer: sent as the client's status it would be an interim response (103
    Early Hints), after which the client waits for one that never comes. It is the function's bad answer, 502."""
    runner = await platform.runner()
    lb = await platform.lb([runner])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        await deploy_with_trigger(s, deploy_echo, platform.image, "/early")
        async with s.post("/t/sysapp/early", json={"status": 201}) as r:  # warm, and the usual case
            assert r.status == 201
        ids = []
        for status in (100, 101, 103, 199):
            began = time.monotonic()
            async with s.post("/t/sysapp/early", json={"status": status, "headers": {"Link": "</a.css>; rel=preload"}}) as r:
                assert r.status == 502, status
                assert await r.json() == {
                    "message": f"invalid function response: Fn-Http-Status '{status}' is not a final HTTP status (200-599)"
                }
                assert "Link" not in r.headers  # the function's headers are not the answer's
                ids.append(r.headers["Fn-Call-Id"])
            assert time.monotonic() - began < 10, f"{status}: the 502 came only after {time.monotonic() - began:.1f} s"

        # on the wire: the first status line the client gets is the final 502, no interim 1xx before it
        answer = await raw_post(lb.url, "/t/sysapp/early", json.dumps({"status": 103}).encode())
        assert answer.startswith(b"HTTP/1.1 502 "), answer[:200]
        assert answer.count(b"HTTP/1.1 ") == 1

        async with s.post("/t/sysapp/early", json={"status": 204}) as r:  # the container served on: no harm done
            assert r.status == 204
    # the LB's call line says 502, not a success
    await wait_until(lambda: {c for c, *_ in lb.proc.call_lines()} >= set(ids), "the LB's call lines")
    statuses = {call_id: status for call_id, _, _, status, _ in lb.proc.call_lines()}
    assert [statuses[call_id] for call_id in ids] == [502] * 4


async def test_by_default_big_function_headers_reach_the_client_whole_as_on_fn(platform, deploy_echo):
    """Fn's FN_MAX_HDR_RESPONSE_SIZE=0 takes a head up to Go's 10 MiB: a 9 KB token, 130 headers pass. So do they here."""
    runner = await platform.runner()
    lb = await platform.lb([runner])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT, **BIG_HEADS) as s:
        ids = await deploy_with_trigger(s, deploy_echo, platform.image, "/big")
        fn_id = ids["fn"]["id"]
        token = "t" * 9000
        many = {f"X-H{i}": f"value-{i}" for i in range(130)}
        for path in (f"/invoke/{fn_id}", "/t/sysapp/big"):  # through a trigger each is Fn-Http-H-<name> to the runner
            async with s.post(path, json={"headers": {"X-Token": token}}) as r:
                assert r.status == 200, (path, await r.text())
                assert r.headers["X-Token"] == token
            async with s.post(path, json={"headers": many}) as r:
                assert r.status == 200, (path, await r.text())
                got = {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("x-h")}  # the fdk sends them lower-case
                assert got == {k.lower(): v for k, v in many.items()}
    await wait_until(lambda: len(lb.proc.call_lines()) == 4, "the LB's four call lines")
    assert [status for *_, status, _ in lb.proc.call_lines()] == [200] * 4


async def test_a_configured_bound_on_function_headers_is_still_a_502(platform, deploy_echo):
    runner = await platform.runner(FN_MAX_HDR_RESPONSE_SIZE="4096")
    lb = await platform.lb([runner])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT, **BIG_HEADS) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        for headers in ({"X-Token": "t" * 9000}, {f"X-H{i}": "v" * 40 for i in range(130)}):  # a line; the whole head
            async with s.post(f"/invoke/{fn_id}", json={"headers": headers}) as r:
                assert (r.status, await r.json()) == (502, {"message": FunctionResponseHeaderTooBig.message})
        async with s.post(f"/invoke/{fn_id}", json={"headers": {"X-Small": "fits"}}) as r:  # a fresh container serves on
            assert (r.status, r.headers["X-Small"]) == (200, "fits")
