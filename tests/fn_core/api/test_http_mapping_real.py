"""How an HTTP request and its answer are mapped, end to end: the real LB, a real runner over gRPC, Docker and
the fdk-python echo function (its ``ctx`` operation answers with what the fdk's context shows).

`tests/fn_core/lb/test_lb_http.py` checks the LB's side of the same rules against fake runners; here the
function developer's view (ctx.Method(), ctx.RequestURL(), ctx.Headers(), ctx.HTTPHeaders()) and the HTTP
client's view are checked together, as Fn maps them:

- ``/t/{app}/{path}``: every client header X but Host reaches the function as Fn-Http-H-X (Content-Type as
  itself), with Fn-Http-Method, Fn-Http-Request-Url (the full URL, query included) and Fn-Intent:
  httprequest; the fdk takes that as an HTTP request and decapsulates them. The function's status and
  headers go back as Fn-Http-Status and Fn-Http-H-*, which the trigger turns into the client's status and
  headers (prefix stripped); only Content-Type, Fn-Call-Id and those reach the client.
- ``/invoke/{fn_id}``: the client's headers reach the function as they are (hop-by-hop ones and Fn's own
  Fn-Call-Id / Fn-Deadline excepted), with no HTTP intent; the answer is the fdk's own: its headers as the
  function set them, and 200 whatever status the function chose (the fdk sends only 200, 502 or 504).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fn_core.testing import InvokeResult, Platform

#: every byte value, twice: a body no text decoding survives
BINARY = bytes(range(256)) * 2
CTX = json.dumps({"ctx": True})
JSON_TYPE = {"Content-Type": "application/json"}


async def add_trigger(platform: Platform, fn: dict[str, Any], source: str, name: str) -> dict[str, Any]:
    body = {"name": name, "app_id": fn["app_id"], "fn_id": fn["id"], "type": "http", "source": source}
    created = await platform.api("POST", "/v2/triggers", body)
    assert created.status == 200, created.body
    return created.json()


async def call_trigger(
    platform: Platform, method: str, path: str, body: bytes | str = b"", headers: dict[str, str] | None = None
) -> InvokeResult:
    """``method`` on ``/t/app{path}`` (``path`` sent as written: already percent-encoded where it needs to be)."""
    data = body.encode() if isinstance(body, str) else body
    async with platform.session.request(method, f"{platform.url}/t/app{path}", data=data, headers=headers) as resp:
        return InvokeResult(resp.status, resp.headers, await resp.read())


@pytest.fixture
async def echo_fn(fn_platform, echo_image) -> tuple[Platform, dict[str, Any]]:
    """A platform with the echo function deployed as app "app", fn "echo", and a trigger ``/echo`` on it."""
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, name="echo")
    await add_trigger(platform, fn, "/echo", "echo")
    return platform, fn


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_a_trigger_gives_the_fdk_the_method_the_whole_url_and_the_clients_headers_decapsulated(echo_fn, method):
    platform, _ = echo_fn
    query = "?q=1&name=a%20b&q=2"
    sent = {"X-Custom": "one", "Authorization": "Bearer t0k", "Accept": "text/plain", **JSON_TYPE}
    r = await call_trigger(platform, method, f"/echo{query}", CTX, sent)
    assert r.status == 200, r.body
    seen = r.json()
    assert seen["method"] == method
    assert seen["request_url"] == f"{platform.url}/t/app/echo{query}"
    http = seen["http_headers"]  # ctx.HTTPHeaders(): the client's headers, prefix gone, lower-case as the fdk keeps them
    assert http["x-custom"] == "one" and http["authorization"] == "Bearer t0k" and http["accept"] == "text/plain"
    assert "host" not in http  # Go's server keeps Host out of the headers Fn maps
    assert "content-type" not in http  # Content-Type is passed as itself, not as Fn-Http-H-Content-Type
    headers = seen["headers"]  # ctx.Headers(): those merged with the ones Fn sends the function
    assert headers["content-type"] == "application/json"
    assert headers["x-custom"] == "one"
    assert headers["fn-intent"] == "httprequest"
    assert headers["fn-http-method"] == method
    assert headers["fn-http-request-url"] == f"{platform.url}/t/app/echo{query}"
    assert headers["fn-call-id"] == r.headers["Fn-Call-Id"]
    assert headers["fn-deadline"].endswith("Z")
    assert not any(name.startswith("fn-http-h-") for name in headers)  # the fdk decapsulated every one


async def test_the_request_url_is_built_from_the_host_header_as_sent_even_one_whose_port_no_url_parser_reads(echo_fn):
    # aiohttp's request.url parsed the Host and raised on such a port: every call so made was a 500
    platform, fn = echo_fn
    host = {"Host": "fn.example:99999", **JSON_TYPE}
    r = await call_trigger(platform, "POST", "/echo?ctx", CTX, host)
    assert r.status == 200, r.body
    assert r.json()["request_url"] == "http://fn.example:99999/t/app/echo?ctx"
    assert (await platform.invoke(fn["id"], CTX, headers=host)).status == 200


async def test_a_trigger_client_cannot_pose_as_fn_in_the_headers_the_fdk_reads(echo_fn):
    platform, _ = echo_fn
    forged = {"Fn-Intent": "other", "Fn-Http-Method": "PATCH", "Fn-Call-Id": "forged", "Fn-Deadline": "never", **JSON_TYPE}
    r = await call_trigger(platform, "POST", "/echo", CTX, forged)
    seen = r.json()
    # the fdk reads Fn's own headers; the client's arrive prefixed, as its HTTP headers
    assert seen["method"] == "POST"
    assert seen["call_id"] == r.headers["Fn-Call-Id"] != "forged"
    assert seen["deadline"] != "never" and seen["deadline"].endswith("Z")
    http = seen["http_headers"]
    assert http["fn-intent"] == "other" and http["fn-http-method"] == "PATCH"
    assert http["fn-call-id"] == "forged" and http["fn-deadline"] == "never"


async def test_invoke_gives_the_fdk_the_clients_headers_as_they_are_and_no_http_request(echo_fn):
    platform, fn = echo_fn
    sent = {"X-Custom": "one", "Fn-Invoke-Type": "sync", "Fn-Call-Id": "forged", "Fn-Deadline": "never",
            "Keep-Alive": "timeout=5", "Proxy-Authorization": "Basic eA==", **JSON_TYPE}
    r = await platform.invoke(fn["id"], CTX, headers=sent)
    assert r.status == 200, r.body
    seen = r.json()
    assert seen["method"] is None and seen["request_url"] is None  # no Fn-Http-Method / -Request-Url on /invoke
    assert seen["http_headers"] == {}  # not an HTTP request to the fdk: no Fn-Intent
    headers = seen["headers"]
    assert headers["x-custom"] == "one" and headers["content-type"] == "application/json"
    assert headers["fn-invoke-type"] == "sync"
    assert "fn-intent" not in headers and "fn-http-method" not in headers
    assert headers["fn-call-id"] == r.headers["Fn-Call-Id"] != "forged"  # Fn's own, not the client's
    assert headers["fn-deadline"] != "never" and headers["fn-deadline"].endswith("Z")
    assert "keep-alive" not in headers and "proxy-authorization" not in headers  # hop-by-hop: not passed on
    assert headers["host"] == "localhost"  # the runner's request to the container, not the client's Host


async def test_a_trigger_client_gets_the_functions_status_and_headers_and_nothing_of_fns_own(echo_fn):
    platform, _ = echo_fn
    for status in (201, 404, 500):
        ask = {"status": status, "headers": {"X-Made": "here", "Cache-Control": "no-store"}, "content_type": "text/plain; charset=utf-8"}
        r = await call_trigger(platform, "POST", "/echo", json.dumps(ask), JSON_TYPE)
        assert r.status == status
        assert json.loads(r.body) == ask  # the function's own body, not an error of Fn's
        assert r.headers["X-Made"] == "here" and r.headers["Cache-Control"] == "no-store"
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert r.headers["Fn-Call-Id"]
        leaked = [name for name in r.headers if name.lower().startswith(("fn-http-", "fn-fdk-"))]
        assert leaked == []


async def test_invoke_answers_200_with_the_functions_headers_whatever_status_the_function_set(echo_fn):
    platform, fn = echo_fn
    ask = {"status": 404, "headers": {"X-Made": "here"}, "content_type": "text/plain"}
    r = await platform.invoke(fn["id"], json.dumps(ask), headers=JSON_TYPE)
    assert r.status == 200  # the fdk sends Fn only 200, 502 or 504: a function's 404 shows only through a trigger
    assert r.json() == ask
    assert r.headers["X-Made"] == "here" and r.headers["Content-Type"] == "text/plain"
    assert r.headers["Fn-Fdk-Version"].startswith("fdk-python/")  # invoke passes the function's headers as they are
    assert "Fn-Http-Status" not in r.headers


@pytest.mark.parametrize("body", [b"", BINARY], ids=["empty", "every-byte"])
async def test_bodies_come_back_unchanged_through_invoke_and_a_trigger(echo_fn, body):
    platform, fn = echo_fn
    sent = {"Content-Type": "application/octet-stream"}
    by_invoke = await platform.invoke(fn["id"], body, headers=sent)
    by_trigger = await call_trigger(platform, "POST", "/echo", body, sent)
    for r in (by_invoke, by_trigger):
        assert r.status == 200
        assert r.body == body
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert int(r.headers["Content-Length"]) == len(body)


async def test_a_request_content_type_reaches_the_function_and_its_own_comes_back(echo_fn):
    platform, fn = echo_fn
    ask = json.dumps({"ctx": True, "content_type": "application/vnd.made+json"})
    typed = {"Content-Type": "application/json; charset=utf-8"}
    for r in (await platform.invoke(fn["id"], ask, headers=typed), await call_trigger(platform, "PATCH", "/echo", ask, typed)):
        assert r.status == 200, r.body
        assert r.json()["headers"]["content-type"] == "application/json; charset=utf-8"
        assert r.headers["Content-Type"] == "application/vnd.made+json"


async def test_trigger_paths_of_several_segments_and_encoded_characters_reach_their_own_function(fn_platform, echo_image):
    platform = await fn_platform()
    env = json.dumps({"env": True})
    fns = {}
    for name, sources in {"root": ["/"], "deep": ["/a/b/c"], "spaced": ["/with space/ü"], "short": ["/a"]}.items():
        fns[name] = await platform.deploy(echo_image, name=name)
        for i, source in enumerate(sources):
            await add_trigger(platform, fns[name], source, f"{name}{i}")

    async def reached(path: str) -> str:
        r = await call_trigger(platform, "POST", path, env, JSON_TYPE)
        assert r.status == 200, (path, r.status, r.body)
        return next(name for name, fn in fns.items() if fn["id"] == r.json()["FN_FN_ID"])

    assert await reached("") == "root"  # /t/app is the trigger of source "/"
    assert await reached("/") == "root"
    assert await reached("/a/b/c?x=/y") == "deep"
    assert await reached("/a") == "short"
    assert await reached("/with%20space/%C3%BC") == "spaced"
    assert await reached("/a%2Fb%2Fc") == "deep"  # as Go's router matches: on the decoded path
    r = await call_trigger(platform, "POST", "/with%20space/%C3%BC?ctx", CTX, JSON_TYPE)
    assert r.json()["request_url"] == f"{platform.url}/t/app/with%20space/%C3%BC?ctx"  # as the client sent it
    for unknown in ("/a/b", "/a/b/c/d", "/nope", "/A"):
        r = await call_trigger(platform, "GET", unknown)
        assert r.status == 404 and r.json() == {"message": "Trigger not found"}, unknown
        assert r.headers["Content-Type"].startswith("application/json")



async def test_a_chunked_trigger_request_reaches_the_fdk_whole_with_no_transfer_encoding_among_its_http_headers(echo_fn):
    platform, _ = echo_fn

    async def chunks():
        yield CTX[:5].encode()
        yield CTX[5:].encode()

    hop = {"Keep-Alive": "timeout=5", "Connection": "keep-alive"}
    async with platform.session.put(f"{platform.url}/t/app/echo", data=chunks(), headers={**hop, **JSON_TYPE}) as resp:
        assert resp.status == 200
        seen = await resp.json()
    # Go's server takes Transfer-Encoding out of the request's headers (the body the function gets is whole,
    # with a Content-Length), so Fn never maps it; the other headers of the client's are mapped as they came
    assert "transfer-encoding" not in seen["http_headers"] and "transfer-encoding" not in seen["headers"]
    assert seen["http_headers"]["keep-alive"] == "timeout=5" and seen["http_headers"]["connection"] == "keep-alive"
    assert seen["headers"]["content-length"] == str(len(CTX))
