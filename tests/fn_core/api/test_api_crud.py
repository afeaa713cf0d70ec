"""Fn's v2 CRUD over a real in-process server and SQLite: names, defaults, codes and messages."""

from __future__ import annotations

import aiohttp
import pytest

from fn_core.config import load_config
from fn_core.lb.main import start_lb
from fn_core.plugins import get_plugin_manager


@pytest.fixture
async def api(tmp_path):
    config = load_config(env={}, overrides={"db_url": f"sqlite3://{tmp_path}/fn.db", "public_lb_url": "http://lb.example"})
    node = await start_lb(config, get_plugin_manager(config, load_entrypoints=False), host="127.0.0.1", port=0, runner_addresses=[])
    session = aiohttp.ClientSession(node.url)
    yield session
    await session.close()
    await node.stop()


async def call(session, method, path, **kwargs):
    async with session.request(method, path, **kwargs) as r:
        return r.status, (await r.json() if r.status != 204 else None)


async def test_app_lifecycle(api):
    status, app = await call(api, "POST", "/v2/apps", json={"name": "myapp", "config": {"K": "v"}, "annotations": {"a/b": 1}})
    assert status == 200 and app["name"] == "myapp" and len(app["id"]) == 26
    assert app["config"] == {"K": "v"} and app["created_at"] and app["updated_at"]
    assert (await call(api, "POST", "/v2/apps", json={"name": "myapp"})) == (409, {"message": "App already exists"})
    status, got = await call(api, "GET", f"/v2/apps/{app['id']}")
    assert status == 200 and got == app
    status, updated = await call(api, "PUT", f"/v2/apps/{app['id']}", json={"config": {"K": "", "N": "1"}})
    assert status == 200 and updated["config"] == {"N": "1"}
    status, body = await call(api, "PUT", f"/v2/apps/{app['id']}", json={"name": "other"})
    assert status == 409 and body["message"] == "Could not update - name is immutable"
    assert (await call(api, "DELETE", f"/v2/apps/{app['id']}"))[0] == 204
    assert await call(api, "GET", f"/v2/apps/{app['id']}") == (404, {"message": "App not found"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Missing app name"),
        ({"name": "bad name"}, "App name may only contain characters from the set [a-zA-Z0-9_-]"),
        ({"name": "x" * 256}, "App name must be 255 characters or less"),
        ({"name": "a", "id": "X"}, "App ID cannot be supplied on create"),
        ({"name": "a", "config": {"k": 1}}, "Invalid JSON"),
    ],
)
async def test_app_validation(api, body, message):
    assert await call(api, "POST", "/v2/apps", json=body) == (400, {"message": message})


async def test_bad_json_is_400(api):
    assert await call(api, "POST", "/v2/apps", data=b"{not json") == (400, {"message": "Invalid JSON"})


async def test_fn_defaults_validation_and_update(api):
    _, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    status, fn = await call(api, "POST", "/v2/fns", json={"name": "f", "app_id": app["id"], "image": "img:1"})
    assert status == 200
    assert (fn["memory"], fn["timeout"], fn["idle_timeout"]) == (128, 30, 30)
    assert fn["annotations"]["fnproject.io/fn/invokeEndpoint"] == f"http://lb.example/invoke/{fn['id']}"
    dup = await call(api, "POST", "/v2/fns", json={"name": "f", "app_id": app["id"], "image": "img:1"})
    assert dup == (409, {"message": "Fn with specified name already exists"})
    for body, message in [
        ({"name": "g", "app_id": app["id"]}, "Missing image"),
        ({"name": "g", "image": "i"}, "Missing AppID on Fn"),
        ({"name": "g", "app_id": app["id"], "image": "i", "memory": 9000}, "memory value is out of range. It should be between 0 and 8192"),
        ({"name": "g", "app_id": app["id"], "image": "i", "timeout": 301}, "timeout value is out of range. Sync should be between 0 and 300"),
    ]:
        assert await call(api, "POST", "/v2/fns", json=body) == (400, {"message": message})
    assert (await call(api, "POST", "/v2/fns", json={"name": "g", "app_id": "01NOAPP", "image": "i"}))[0] == 404
    status, updated = await call(api, "PUT", f"/v2/fns/{fn['id']}", json={"memory": 256, "config": {"X": "1"}})
    assert status == 200 and updated["memory"] == 256 and updated["image"] == "img:1" and updated["config"] == {"X": "1"}
    assert await call(api, "GET", "/v2/fns/01NOPE") == (404, {"message": "Fn not found"})


async def test_lists_page_with_cursor(api):
    _, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    for i in range(5):
        await call(api, "POST", "/v2/fns", json={"name": f"f{i}", "app_id": app["id"], "image": "i"})
    names, cursor = [], ""
    for _ in range(5):  # bounded
        _, page = await call(api, "GET", "/v2/fns", params={"app_id": app["id"], "per_page": "2", "cursor": cursor})
        names += [f["name"] for f in page["items"]]
        cursor = page.get("next_cursor", "")
        if not cursor:
            break
    assert names == [f"f{i}" for i in range(5)]
    _, apps = await call(api, "GET", "/v2/apps", params={"name": "a"})
    assert [a["name"] for a in apps["items"]] == ["a"]


async def test_triggers(api):
    _, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    _, fn = await call(api, "POST", "/v2/fns", json={"name": "f", "app_id": app["id"], "image": "i"})
    base = {"name": "t", "app_id": app["id"], "fn_id": fn["id"], "type": "http", "source": "/hook"}
    status, trigger = await call(api, "POST", "/v2/triggers", json=base)
    assert status == 200 and trigger["source"] == "/hook"
    assert trigger["annotations"]["fnproject.io/trigger/httpEndpoint"] == "http://lb.example/t/a/hook"
    assert (await call(api, "POST", "/v2/triggers", json={**base, "name": "t2"}))[0] == 409
    assert await call(api, "POST", "/v2/triggers", json={**base, "name": "t3", "type": "cron"}) == (
        400,
        {"message": "Trigger Type Not Supported"},
    )
    assert await call(api, "POST", "/v2/triggers", json={**base, "name": "t3", "source": "x"}) == (
        400,
        {"message": "Missing trigger Source prefix '/'"},
    )
    assert await call(api, "GET", "/v2/triggers") == (400, {"message": "Missing App ID"})
    _, page = await call(api, "GET", "/v2/triggers", params={"app_id": app["id"]})
    assert [t["id"] for t in page["items"]] == [trigger["id"]]
    status, moved = await call(api, "PUT", f"/v2/triggers/{trigger['id']}", json={"source": "/moved"})
    assert status == 200 and moved["source"] == "/moved"
    assert (await call(api, "DELETE", f"/v2/fns/{fn['id']}"))[0] == 204
    assert (await call(api, "GET", f"/v2/triggers/{trigger['id']}"))[0] == 404
    assert (await call(api, "GET", f"/v2/fns/{fn['id']}/calls"))[0] == 410


async def test_a_max_calls_annotation_that_is_not_a_whole_number_is_refused_and_changes_nothing(api):
    key = "fn-core/max-calls-per-container"
    status, app = await call(api, "POST", "/v2/apps", json={"name": "recycled", "annotations": {key: 5}})
    assert status == 200 and app["annotations"] == {key: 5}
    status, fn = await call(api, "POST", "/v2/fns", json={"name": "f", "app_id": app["id"], "image": "i:1",
                                                         "annotations": {key: "3"}})  # digits in a string: accepted
    assert status == 200 and fn["annotations"][key] == "3"
    for bad in (-1, 1.5, True, "three", {"n": 1}):
        message = f"annotation {key} must be a whole number >= 0 (0: no limit), got {bad!r}"
        assert await call(api, "POST", "/v2/fns", json={"name": "g", "app_id": app["id"], "image": "i:1",
                                                       "annotations": {key: bad}}) == (400, {"message": message})
        assert await call(api, "PUT", f"/v2/fns/{fn['id']}", json={"annotations": {key: bad}}) == (400, {"message": message})
        assert await call(api, "PUT", f"/v2/apps/{app['id']}", json={"annotations": {key: bad}}) == (400, {"message": message})
    assert (await call(api, "GET", f"/v2/fns/{fn['id']}"))[1]["annotations"][key] == "3"
    assert (await call(api, "GET", f"/v2/apps/{app['id']}"))[1]["annotations"] == {key: 5}
    assert (await call(api, "GET", f"/v2/fns?app_id={app['id']}"))[1]["items"] == [fn]
