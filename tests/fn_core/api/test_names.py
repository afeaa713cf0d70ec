"""Names with a trailing newline are refused: `$` alone would let them through, into every log line and /metrics label."""

from __future__ import annotations

import pytest

from .conftest import call


@pytest.mark.parametrize("name", ["evil\n", "evil\r\n", "\nevil"])
async def test_an_app_name_with_a_newline_is_refused_with_fns_message(start, name):
    api = await start({})
    status, body = await call(api, "POST", "/v2/apps", json={"name": name})
    assert (status, body) == (400, {"message": "Invalid app name"})
    status, body = await call(api, "GET", "/v2/apps")
    assert status == 200 and body["items"] == []


async def test_fn_and_trigger_names_with_a_trailing_newline_are_refused(start):
    api = await start({})
    status, app = await call(api, "POST", "/v2/apps", json={"name": "shop"})
    assert status == 200
    fn = {"app_id": app["id"], "image": "fn-core-test/echo:latest"}
    status, body = await call(api, "POST", "/v2/fns", json={**fn, "name": "echo\n"})
    assert (status, body) == (400, {"message": "name must be a valid string"})

    status, created = await call(api, "POST", "/v2/fns", json={**fn, "name": "echo"})
    assert status == 200
    trigger = {"app_id": app["id"], "fn_id": created["id"], "type": "http", "source": "/echo"}
    status, body = await call(api, "POST", "/v2/triggers", json={**trigger, "name": "t\n"})
    assert (status, body) == (400, {"message": "Invalid name for Trigger"})
    assert (await call(api, "POST", "/v2/triggers", json={**trigger, "name": "t"}))[0] == 200
