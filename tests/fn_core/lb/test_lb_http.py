"""The LB's HTTP surface with a fake runner: triggers, hooks, limits, errors and admin routes."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest

from fn_core import APIError, hookimpl
from fn_core.lb.runner_client import RunnerClient
from fn_core.models import Call, slot_key
from fn_core.testing import wait_until


async def test_trigger_maps_headers_both_ways(fake_runners, lb_factory, deploy_fn):
    headers_out = {"Fn-Http-Status": "201", "Fn-Http-H-X-Made": "here", "Content-Type": "text/plain", "X-Internal": "no"}
    runner = await fake_runners(("status", 200, headers_out))
    _, session, _ = await lb_factory([runner.address])
    ids = await deploy_fn(session, trigger_source="/hello")
    assert ids["trigger"]["annotations"]["fnproject.io/trigger/httpEndpoint"].endswith("/t/app1/hello")
    async with session.put("/t/app1/hello?q=1", data="x", headers={"X-In": "1", "Content-Type": "text/plain"}) as r:
        assert r.status == 201
        assert r.headers["X-Made"] == "here" and r.headers["Content-Type"] == "text/plain"
        assert "X-Internal" not in r.headers and "Fn-Http-Status" not in r.headers
        assert r.headers["Fn-Call-Id"]
    call = runner.calls[0]
    assert call["headers"]["Fn-Http-H-X-In"] == ["1"]
    assert call["headers"]["Content-Type"] == ["text/plain"]
    assert call["headers"]["Fn-Http-Method"] == ["PUT"]
    assert call["headers"]["Fn-Http-Request-Url"][0].endswith("/t/app1/hello?q=1")
    assert call["headers"]["Fn-Intent"] == ["httprequest"]
    assert "Fn-Http-H-Host" not in call["headers"]  # Go keeps Host out of the headers Fn maps
    assert call["trigger_id"] == ids["trigger"]["id"]
    async with session.get("/t/app1/nope") as r:
        assert r.status == 404 and (await r.json())["message"] == "Trigger not found"
    async with session.get("/t/noapp/hello") as r:
        assert r.status == 404 and (await r.json())["message"] == "App not found"


async def test_a_compressed_body_reaches_the_function_as_sent_with_its_content_encoding(fake_runners, lb_factory, deploy_fn):
    """Fn passes a request's bytes on untouched; decoding them (and a 500 for a body that is not gzip) is the function's."""
    import gzip

    runner = await fake_runners("echo")
    _, session, _ = await lb_factory([runner.address])
    ids = await deploy_fn(session, trigger_source="/zip")
    for body in (gzip.compress(b"hello"), b"not gzip at all"):
        for path in (f"/invoke/{ids['fn']['id']}", "/t/app1/zip"):
            async with session.post(path, data=body, headers={"Content-Encoding": "gzip"}, auto_decompress=False) as r:
                assert (r.status, await r.read()) == (200, body)
    assert [call["headers"].get("Content-Encoding") for call in runner.calls[::2]] == [["gzip"]] * 2  # /invoke: as sent
    assert [call["headers"].get("Fn-Http-H-Content-Encoding") for call in runner.calls[1::2]] == [["gzip"]] * 2  # /t/: mapped
    async with session.post("/v2/apps", data=gzip.compress(b'{"name": "zipped"}'), headers={"Content-Encoding": "gzip"}) as r:
        assert (r.status, await r.json()) == (400, {"message": "Invalid JSON"})


async def test_trigger_error_status_wins(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners(("error", 504, "Timed out"))
    _, session, _ = await lb_factory([runner.address])
    await deploy_fn(session, trigger_source="/slow")
    async with session.post("/t/app1/slow", data="x") as r:
        assert r.status == 504 and (await r.json()) == {"message": "Timed out"}


async def test_unknown_fn_is_404(fake_runners, lb_factory):
    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address])
    async with session.post("/invoke/01NOPE", data="x") as r:
        assert r.status == 404 and (await r.json()) == {"message": "Fn not found"}
    assert runner.calls == []


async def test_max_request_size_is_413_before_the_body(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address], max_request_size=1000)
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data=b"x" * 1001) as r:
        assert r.status == 413
        assert (await r.json())["message"] == "Content-Length too large for this server, 1001 > max 1000"
    async with session.post(f"/invoke/{ids['fn']['id']}", data=b"x" * 1000) as r:
        assert r.status == 200
    assert len(runner.calls) == 1


async def _expect_continue(url: str, path: str, length: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Send a head with ``Expect: 100-continue`` and no body; what comes back first (up to 5 s)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    writer.write(head.encode())
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, first


async def test_an_expect_100_continue_over_the_size_limit_gets_413_and_no_invitation_to_send(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners()
    node, session, _ = await lb_factory([runner.address], max_request_size=1000)
    ids = await deploy_fn(session)
    path = f"/invoke/{ids['fn']['id']}"
    reader, writer, first = await _expect_continue(node.url, path, 5000)
    assert first.startswith(b"HTTP/1.1 413 ")  # not "100 Continue": curl would then send the 5000 bytes for nothing
    assert b"Connection: close" in first  # the body it announced will not be read: no next request here
    length = int(next(line for line in first.split(b"\r\n") if line.startswith(b"Content-Length:")).split(b":")[1])
    answer = await asyncio.wait_for(reader.readexactly(length), 5)
    assert json.loads(answer) == {"message": "Content-Length too large for this server, 5000 > max 1000"}
    writer.close()
    # within the limit, the client is invited to send, and the call runs
    reader, writer, first = await _expect_continue(node.url, path, 3)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"abc")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert len(runner.calls) == 1
    # the same on the v2 API
    reader, writer, first = await _expect_continue(node.url, "/v2/apps", 5000)
    assert first.startswith(b"HTTP/1.1 413 ")
    writer.close()


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_an_expectation_other_than_100_continue_is_417_in_fns_json_and_nothing_is_run_or_stored(
    fake_runners, lb_factory, deploy_fn, version
):
    runner = await fake_runners()
    node, session, _ = await lb_factory([runner.address])
    ids = await deploy_fn(session)
    parts = urlsplit(node.url)
    for method, path, body in (("POST", f"/invoke/{ids['fn']['id']}", b"abc"), ("POST", "/v2/apps", b'{"name": "new"}'),
                               ("GET", "/", b"")):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        head = f"{method} {path} HTTP/{version}\r\nHost: x\r\nContent-Length: {len(body)}\r\nExpect: x-later\r\n\r\n"
        writer.write(head.encode() + body)
        answer = await asyncio.wait_for(reader.read(), 5)  # all of it: the connection closes after it (Go's too)
        writer.close()
        head_back, _, json_back = answer.partition(b"\r\n\r\n")
        assert head_back.split(b"\r\n")[0].endswith(b" 417 Expectation Failed"), (path, answer)
        assert b"Content-Type: application/json" in head_back
        message = "Expectation Failed: unsupported Expect 'x-later'; only 100-continue is supported"
        assert json.loads(json_back) == {"message": message}, path
    assert runner.calls == []
    async with session.get("/v2/apps") as r:
        assert [app["name"] for app in (await r.json())["items"]] == ["app1"]


async def test_a_request_head_is_bounded_as_a_whole_by_fn_max_request_header_size_with_431(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners()
    big = {"Authorization": "Bearer " + "t" * 12000}  # a long token, as some identity providers issue
    _, session, _ = await lb_factory([runner.address])
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data=b"x", headers=big) as r:
        assert r.status == 200  # Fn's default is Go's: 1 MiB for the whole head
    assert len(runner.calls) == 1

    _, session, _ = await lb_factory([runner.address], max_request_header_size=8192)
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data=b"x", headers=big) as r:
        assert r.status == 431
        assert (await r.json()) == {"message": "Request Header Fields Too Large: a line of the head is over 8192 bytes"}
    # many headers, each short, add up to the same bound
    many = {f"X-Part-{i}": "v" * 200 for i in range(60)}
    async with session.post(f"/invoke/{ids['fn']['id']}", data=b"x", headers=many) as r:
        assert r.status == 431 and (await r.json())["message"].startswith("Request Header Fields Too Large")
    assert len(runner.calls) == 1  # neither reached a runner
    async with session.post(f"/invoke/{ids['fn']['id']}", data=b"x") as r:
        assert r.status == 200  # the node serves on


class Overrides:
    def __init__(self) -> None:
        self.mode = "ok"

    @hookimpl
    def override_call(self, call, extensions):
        if self.mode == "reject":
            raise APIError("no such thing here", status=403)
        if self.mode == "crash":
            raise RuntimeError("plugin bug")
        call.memory = 256
        extensions["example.com/x"] = "1"


class BrokenListener:
    @hookimpl
    def call_finished(self, call, outcome):
        raise RuntimeError("listener bug")


async def test_an_fn_update_reaches_the_next_call_with_a_new_slot_key(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address])
    ids = await deploy_fn(session)
    url = f"/invoke/{ids['fn']['id']}"
    for _ in range(2):
        async with session.post(url, data="x") as r:
            assert r.status == 200
    async with session.put(f"/v2/fns/{ids['fn']['id']}", json={"config": {"B": "updated"}, "memory": 256}) as r:
        assert r.status == 200, await r.text()
    async with session.post(url, data="x") as r:
        assert r.status == 200
    first, second, after = runner.tries
    assert first.slot_hash_id == second.slot_hash_id != after.slot_hash_id
    sent = [Call.from_json(t.models_call_json) for t in runner.tries]
    assert [slot_key(c).hex() for c in sent] == [t.slot_hash_id for t in runner.tries]
    assert (sent[2].config["B"], sent[2].memory) == ("updated", 256) and sent[0].config["B"] == "fn"
    assert len({c.id for c in sent}) == 3
    assert "Host" not in sent[0].headers and sent[0].headers["Content-Type"]  # as Go's req.Header: no Host


async def test_override_call_changes_rejects_or_fails(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners()
    plugin = Overrides()
    _, session, recorder = await lb_factory([runner.address], plugins=(("ov", plugin), ("broken", BrokenListener())))
    ids = await deploy_fn(session)
    url = f"/invoke/{ids['fn']['id']}"
    async with session.post(url, data="x") as r:
        assert r.status == 200  # the broken listener did not change the result
    assert runner.calls[0]["memory"] == 256
    assert dict(runner.tries[0].extensions) == {"example.com/x": "1"}
    plugin.mode = "reject"
    async with session.post(url, data="x") as r:
        assert r.status == 403 and (await r.json()) == {"message": "no such thing here"}
    plugin.mode = "crash"
    async with session.post(url, data="x") as r:
        assert r.status == 500 and "ov" in (await r.json())["message"]
    assert len(runner.calls) == 1
    assert [o.status for _, o in recorder.outcomes] == [200, 403, 500]


@pytest.mark.parametrize("invoke_type", ["sync", "detached"])
async def test_a_call_whose_placement_fails_unexpectedly_still_ends_once_for_the_listeners(
    fake_runners, lb_factory, deploy_fn, monkeypatch, invoke_type, caplog
):
    """A bug below the handler: the call is a 500, and `call_finished` hears it once (a quota plugin's count stays
    right); the detached path told nobody."""
    runner = await fake_runners()
    _, session, recorder = await lb_factory([runner.address])
    ids = await deploy_fn(session)

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug in the runner client")

    monkeypatch.setattr(RunnerClient, "try_exec", broken)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x", headers={"Fn-Invoke-Type": invoke_type}) as r:
        assert (r.status, await r.json()) == (500, {"message": "internal server error"})
    await wait_until(lambda: recorder.outcomes, "the call's end told to call_finished")
    await asyncio.sleep(0.1)  # and only once
    assert [o.status for _, o in recorder.outcomes] == [500]
    assert "a bug in the runner client" in caplog.text  # the traceback is logged


async def test_admin_routes_and_json_errors(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address])
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="x") as r:
        assert r.status == 200
    async with session.get("/") as r:
        assert r.status == 200
    async with session.get("/version") as r:
        assert "version" in await r.json()
    async with session.get("/metrics") as r:
        text = await r.text()
        assert 'fn_lb_calls_total{status="200"} 1' in text
        assert "fn_lb_call_duration_seconds_count 1" in text and "fn_lb_placement_retries_total 0" in text
    async with session.get("/nowhere") as r:
        assert r.status == 404 and (await r.json()) == {"message": "Path not found"}
    async with session.get(f"/invoke/{ids['fn']['id']}") as r:
        assert r.status == 405 and (await r.json()) == {"message": "Method not allowed"}
        assert r.headers["Allow"] == "POST"  # RFC 9110: a 405 names the methods there are


def test_the_start_up_line_says_a_wildcard_bind_is_every_interface_not_only_the_local_url():
    from fn_core.lb.main import LBNode

    def node(host: str) -> LBNode:
        return LBNode(runner=None, agent=None, store=None, host=host, port=8080, own_store=False, grace=1)  # type: ignore[arg-type]

    # the README warns that 0.0.0.0 opens the v2 API to every function container: the line must not say 127.0.0.1 alone
    assert node("0.0.0.0").listening == "0.0.0.0:8080, every interface (http://127.0.0.1:8080 from this host)"
    assert node("::").listening == "[::]:8080, every interface (http://127.0.0.1:8080 from this host)"
    assert node("127.0.0.1").listening == node("127.0.0.1").url == "http://127.0.0.1:8080"
