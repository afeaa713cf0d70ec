"""FN_RID_HEADER: the request id is the client's header or a new id, and comes back in the same header.

The API tests run a real LB with no runners; the invoke and trigger tests run real functions in Docker.
"""

from __future__ import annotations

import logging

import pytest

from fn_core import logfmt
from fn_core.config import load_config
from fn_core.errors import ConfigError

RID = "X-Request-Id"


async def send(session, method, path, **kwargs):
    async with session.request(method, path, **kwargs) as r:
        return r.status, r.headers


def is_generated(rid: str) -> bool:
    return len(rid) == 26 and rid.isalnum()  # a ULID, as Fn's ids


async def test_api_answers_echo_the_request_id_or_a_new_one(start):
    api = await start({"FN_RID_HEADER": RID})
    status, headers = await send(api, "POST", "/v2/apps", json={"name": "a"}, headers={RID: "rid-create-1"})
    assert status == 200 and headers[RID] == "rid-create-1"
    status, headers = await send(api, "GET", "/v2/apps/01NOPE", headers={"x-request-id": "rid-404"})  # any case
    assert status == 404 and headers[RID] == "rid-404"
    status, headers = await send(api, "PATCH", "/v2/apps", headers={RID: "rid-405"})
    assert status == 405 and headers[RID] == "rid-405"
    ids = []
    for _ in range(2):
        status, headers = await send(api, "GET", "/v2/apps")
        assert status == 200 and is_generated(headers[RID])
        ids.append(headers[RID])
    assert ids[0] != ids[1]
    status, headers = await send(api, "GET", "/version", headers={RID: ""})  # empty = absent, as in Fn
    assert status == 200 and is_generated(headers[RID])


async def test_no_header_when_unset(start):
    api = await start({})
    for method, path in [("GET", "/v2/apps"), ("GET", "/v2/apps/01NOPE"), ("POST", "/invoke/01NOPE")]:
        status, headers = await send(api, method, path, headers={RID: "rid-1"})
        assert status in (200, 404) and RID not in headers


async def test_a_refused_invoke_echoes_and_logs_the_request_id(start, caplog):
    caplog.set_level(logging.INFO, logger="fn_core.calls")
    api = await start({"FN_RID_HEADER": RID})
    status, headers = await send(api, "POST", "/invoke/01NOPE", headers={RID: "rid-refused"})
    assert status == 404 and headers[RID] == "rid-refused"
    status, headers = await send(api, "GET", "/t/noapp/x")
    assert status == 404 and is_generated(headers[RID])
    generated = headers[RID]
    status, headers = await send(api, "GET", "/t/noapp/y", headers={RID: "two words"})
    assert status == 404 and headers[RID] == "two words"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("invoke rejected")]
    assert lines[0].startswith("invoke rejected method=POST path=/invoke/01NOPE status=404 ")
    assert lines[0].endswith(' error="Fn not found" rid=rid-refused')
    assert lines[1].endswith(f" rid={generated}")  # the id the client got back
    assert lines[2].endswith(' rid="two words"')  # quoted: a client's value cannot fake other fields


async def test_with_cors_a_browser_may_read_the_request_id(start):
    api = await start({"FN_RID_HEADER": RID, "FN_API_CORS_ORIGINS": "*"})
    status, headers = await send(api, "GET", "/v2/apps", headers={"Origin": "https://ui.example.com", RID: "rid-ui"})
    assert status == 200 and headers[RID] == "rid-ui" and headers["Access-Control-Expose-Headers"] == RID
    preflight = {"Origin": "https://ui.example.com", "Access-Control-Request-Method": "GET", RID: "rid-pre"}
    status, headers = await send(api, "OPTIONS", "/v2/apps", headers=preflight)
    assert status == 204 and headers[RID] == "rid-pre"


def test_a_bad_header_name_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"rid_header \(from \$FN_RID_HEADER\): .X Request Id. is not an HTTP header name"):
        load_config(env={"FN_RID_HEADER": "X Request Id"})


async def test_invoke_and_trigger_answers_echo_the_request_id(fn_platform, echo_image, caplog):
    caplog.set_level(logging.INFO, logger="fn_core.calls")
    platform = await fn_platform(env={"FN_RID_HEADER": RID})
    fn = await platform.deploy(echo_image)
    trigger = {"name": "t", "app_id": fn["app_id"], "fn_id": fn["id"], "type": "http", "source": "/echo"}
    assert (await platform.api("POST", "/v2/triggers", trigger)).status == 200

    result = await platform.invoke(fn["id"], "hello", headers={RID: "rid-invoke-1"})
    assert (result.status, result.body) == (200, b"hello")
    assert result.headers[RID] == "rid-invoke-1" and result.headers["Fn-Call-Id"] != "rid-invoke-1"

    result = await platform.invoke(fn["id"], "hello")
    assert result.status == 200 and is_generated(result.headers[RID])
    generated = result.headers[RID]
    assert result.headers[RID] != result.headers["Fn-Call-Id"]  # the request's id, not the call's

    big = b"x" * 100_000  # many data frames: the LB streams this answer from its handler
    result = await platform.invoke(fn["id"], big, headers={RID: "rid-big"})
    assert (result.status, len(result.body)) == (200, len(big)) and result.headers[RID] == "rid-big"

    async with platform.session.post(f"{platform.url}/t/app/echo", data=b"hi", headers={RID: "rid-trigger"}) as r:
        assert (r.status, await r.read()) == (200, b"hi") and r.headers[RID] == "rid-trigger"
    async with platform.session.get(f"{platform.url}/t/app/echo") as r:
        assert r.status == 200 and is_generated(r.headers[RID])
    forged = 'r1 status=500 runner=elsewhere error="x"'  # a client's id trying to add fields to the call's line
    result = await platform.invoke(fn["id"], "hello", headers={RID: forged})
    assert result.status == 200 and result.headers[RID] == forged

    finished = [r.getMessage() for r in caplog.records if r.getMessage().startswith("call finished")]
    assert len(finished) == 6  # all ran as calls, and each line names its request, as the client sent it or got it
    assert finished[0].endswith(" rid=rid-invoke-1") and finished[1].endswith(f" rid={generated}")
    assert finished[3].endswith(" rid=rid-trigger")
    fields = logfmt.parse(finished[5])  # as a log collector splits it
    assert (fields["rid"], fields["status"], fields["call_id"]) == (forged, "200", result.headers["Fn-Call-Id"])
    assert "error" not in fields and fields["runner"] != "elsewhere"
