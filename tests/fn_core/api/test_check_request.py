"""`check_request`: a plugin refuses HTTP requests before fn-core handles them (real nodes, real HTTP, real Docker)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fn_core import APIError, hookimpl
from fn_core.testing import metric_samples

TOKEN = "Bearer s3cret"
NEEDS_TOKEN = {"message": "a valid bearer token is needed"}


class BearerToken:
    """Every request but the ping needs the token. Records what it was shown."""

    def __init__(self) -> None:
        self.seen: list = []

    @hookimpl
    def check_request(self, request):
        self.seen.append(request)
        if request.path != "/" and request.headers.get("authorization") != TOKEN:  # headers: any case
            raise APIError(NEEDS_TOKEN["message"], status=401, headers={"WWW-Authenticate": "Bearer"})


class Broken:
    @hookimpl
    def check_request(self, request):
        raise KeyError("token cache not filled yet")


@pytest.fixture
def node(start):
    """``session = await node(plugin, api_node=False)``: `start`'s node with ``plugin`` installed as 'bearer-token'."""
    return lambda plugin, api_node=False: start({}, plugins=[('bearer-token', plugin)], api_node=api_node)


async def answer(session, method, path, *, token=None, **kwargs):
    headers = {"Authorization": token} if token else {}
    async with session.request(method, path, headers=headers, **kwargs) as r:
        return r.status, r.headers, (await r.json() if r.status != 204 else None)


@pytest.mark.parametrize("api_node", [False, True], ids=["lb-with-store", "api-node"])
async def test_the_v2_api_needs_what_the_plugin_asks_and_a_refused_request_changes_nothing(node, api_node):
    session = await node(BearerToken(), api_node=api_node)
    status, headers, body = await answer(session, "POST", "/v2/apps", json={"name": "a"})
    assert (status, body, headers["WWW-Authenticate"]) == (401, NEEDS_TOKEN, "Bearer")
    status, _, body = await answer(session, "GET", "/v2/apps", token=TOKEN)
    assert (status, body["items"]) == (200, [])  # nothing was created
    status, _, app = await answer(session, "POST", "/v2/apps", token=TOKEN, json={"name": "a"})
    assert status == 200 and app["name"] == "a"
    assert (await answer(session, "DELETE", f"/v2/apps/{app['id']}"))[0] == 401
    assert (await answer(session, "GET", f"/v2/apps/{app['id']}", token=TOKEN))[0] == 200
    assert (await answer(session, "GET", "/metrics"))[0] == 401
    assert (await answer(session, "GET", "/"))[0] == 200  # the plugin lets the ping through


async def test_a_v2_client_that_expects_100_continue_is_invited_only_once_the_plugin_let_it_in(node):
    session = await node(BearerToken())
    async with session.get("/") as r:
        host, port = r.url.host, r.url.port

    async def post_expecting(token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        auth = f"Authorization: {token}\r\n" if token else ""
        writer.write(f"POST /v2/apps HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 12\r\nExpect: 100-continue\r\n\r\n".encode())
        return reader, writer, await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)

    reader, writer, first = await post_expecting("")
    writer.close()
    assert first.startswith(b"HTTP/1.1 401 ")  # not "100 Continue": the body would be sent for nothing
    assert b"Connection: close" in first  # the announced body is not coming: no next request on this connection
    reader, writer, first = await post_expecting(TOKEN)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b'{"name":"a"}')
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert [a["name"] for a in (await answer(session, "GET", "/v2/apps", token=TOKEN))[2]["items"]] == ["a"]


async def test_an_invoke_is_refused_before_its_fn_is_looked_up_or_its_body_read(node):
    plugin = BearerToken()
    session = await node(plugin)
    # an unknown fn and an unknown app are the plugin's 401, not the 404 that would tell them apart
    for path in ("/invoke/01NOSUCHFN0000000000000000", "/t/nosuchapp/hook"):
        status, headers, body = await answer(session, "POST", path, data=b"x" * 100_000)
        assert (status, body, headers["WWW-Authenticate"]) == (401, NEEDS_TOKEN, "Bearer"), path
    seen = plugin.seen[-1]
    assert (seen.method, seen.path, seen.query) == ("POST", "/t/nosuchapp/hook", "")
    assert seen.remote == "127.0.0.1" and seen.headers["Content-Length"] == "100000"
    status, _, body = await answer(session, "POST", "/invoke/01NOSUCHFN0000000000000000", token=TOKEN)
    assert (status, body) == (404, {"message": "Fn not found"})
    # counted as rejected invokes, with their status, beside the 404
    metrics = await session.get("/metrics", headers={"Authorization": TOKEN})
    samples = metric_samples(await metrics.text())
    assert samples['fn_lb_invoke_rejected_total{status="401"}'] == 2
    assert samples['fn_lb_invoke_rejected_total{status="404"}'] == 1


async def test_the_path_and_query_are_given_as_sent(node):
    plugin = BearerToken()
    session = await node(plugin)
    await answer(session, "GET", "/v2/fns?app_id=a%20b&per_page=5", token=TOKEN)
    assert (plugin.seen[-1].path, plugin.seen[-1].query) == ("/v2/fns", "app_id=a%20b&per_page=5")


async def test_a_plugin_that_fails_refuses_with_a_500_naming_it(node, caplog):
    session = await node(Broken())
    with caplog.at_level(logging.ERROR, logger="fn_core.hook_calls"):
        status, _, body = await answer(session, "GET", "/v2/apps")
    assert (status, body) == (500, {"message": "internal server error (plugin bearer-token failed)"})
    assert "plugin 'bearer-token' failed in check_request" in caplog.text and "token cache not filled yet" in caplog.text


async def test_a_call_with_the_token_runs_in_its_container_and_one_without_never_reaches_it(fn_platform, echo_image):
    platform = await fn_platform(plugins=(BearerToken(),))
    platform.session.headers["Authorization"] = TOKEN  # the test kit's API calls carry it
    fn = await platform.deploy(echo_image)
    result = await platform.invoke(fn["id"], "hello")
    assert (result.status, result.body) == (200, b"hello")
    refused = await platform.invoke(fn["id"], "hello", headers={"Authorization": "Bearer wrong"})
    assert (refused.status, refused.json()) == (401, NEEDS_TOKEN)
    assert len(platform.containers(fn["id"])) == 1  # the one the first call started
