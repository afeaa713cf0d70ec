"""Fn's v2 CRUD over a real in-process server and SQLite: names, defaults, codes and messages."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from fn_core.config import load_config
from fn_core.lb.main import start_lb
from fn_core.plugins import get_plugin_manager

from .conftest import call


@pytest.fixture
async def api(tmp_path):
    config = load_config(env={}, overrides={"db_url": f"sqlite3://{tmp_path}/fn.db", "public_lb_url": "http://lb.example"})
    node = await start_lb(config, get_plugin_manager(config, load_entrypoints=False), host="127.0.0.1", port=0, runner_addresses=[])
    session = aiohttp.ClientSession(node.url)
    yield session
    await session.close()
    await node.stop()


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
        ({}, "Missing Name"),
        ({"name": "bad name"}, "Invalid app name"),
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
        ({"name": "g", "app_id": app["id"]}, "Missing image on Fn"),
        ({"name": "g", "image": "i"}, "Missing AppID on Fn"),
        ({"name": "g", "app_id": app["id"], "image": "i", "memory": 9000}, "memory value is out of range. It should be between 0 and 8192"),
        ({"name": "g", "app_id": app["id"], "image": "i", "timeout": 301}, "timeout value is out of range, must be between 0 and 300"),
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
        {"message": "Missing Trigger Source Prefix '/'"},
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


async def test_nan_and_infinity_are_not_json(api):
    for raw in (b'{"name": "n", "annotations": {"k": NaN}}', b'{"name": "n", "annotations": {"k": -Infinity}}'):
        assert await call(api, "POST", "/v2/apps", data=raw) == (400, {"message": "Invalid JSON"})
    assert (await call(api, "GET", "/v2/apps"))[1] == {"items": []}


async def test_an_fn_keeps_its_name_and_a_trigger_can_be_renamed(api):
    _, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    _, f1 = await call(api, "POST", "/v2/fns", json={"name": "f1", "app_id": app["id"], "image": "i"})
    _, f2 = await call(api, "POST", "/v2/fns", json={"name": "f2", "app_id": app["id"], "image": "i"})
    refused = await call(api, "PUT", f"/v2/fns/{f2['id']}", json={"name": "f1", "image": "j"})
    assert refused == (400, {"message": "Fn names and IDs cannot be modified"})
    assert await call(api, "GET", f"/v2/fns/{f2['id']}") == (200, f2)  # the image did not change either
    assert (await call(api, "PUT", f"/v2/fns/{f2['id']}", json={"name": "f2", "image": "j"}))[1]["image"] == "j"

    base = {"app_id": app["id"], "fn_id": f1["id"], "type": "http"}
    _, t2 = await call(api, "POST", "/v2/triggers", json={**base, "name": "t2", "source": "/two"})
    _, t4 = await call(api, "POST", "/v2/triggers", json={**base, "name": "t4", "source": "/four"})
    status, renamed = await call(api, "PUT", f"/v2/triggers/{t2['id']}", json={"name": "t3"})
    assert status == 200 and renamed["name"] == "t3"
    by_name = {name: (await call(api, "GET", "/v2/triggers", params={"app_id": app["id"], "name": name}))[1]["items"]
               for name in ("t2", "t3")}
    assert by_name == {"t2": [], "t3": [renamed]}
    assert (await call(api, "POST", "/v2/triggers", json={**base, "name": "t2", "source": "/again"}))[0] == 200
    taken = await call(api, "POST", "/v2/triggers", json={**base, "name": "t3", "source": "/other"})
    assert taken == (409, {"message": "Trigger already exists"})
    assert (await call(api, "PUT", f"/v2/triggers/{t4['id']}", json={"name": "t3"}))[0] == 409
    assert await call(api, "GET", f"/v2/triggers/{t4['id']}") == (200, t4)


async def test_concurrent_updates_of_one_app_all_land(api):
    _, app = await call(api, "POST", "/v2/apps", json={"name": "busy"})
    answers = await asyncio.gather(
        *(call(api, "PUT", f"/v2/apps/{app['id']}", json={"config": {f"K{i}": "v"}}) for i in range(20))
    )
    assert {status for status, _ in answers} == {200}
    _, stored = await call(api, "GET", f"/v2/apps/{app['id']}")
    assert stored["config"] == {f"K{i}": "v" for i in range(20)}


async def test_an_update_that_changes_nothing_keeps_updated_at(api):
    _, app = await call(api, "POST", "/v2/apps", json={"name": "same", "config": {"K": "v"}})
    _, fn = await call(api, "POST", "/v2/fns", json={"name": "f", "app_id": app["id"], "image": "i", "memory": 256})
    await asyncio.sleep(0.01)  # a later stamp would differ (RFC 3339 with milliseconds)
    assert (await call(api, "PUT", f"/v2/apps/{app['id']}", json={"config": {"K": "v"}}))[1] == app
    assert (await call(api, "PUT", f"/v2/fns/{fn['id']}", json={"memory": 256}))[1] == fn
    _, changed = await call(api, "PUT", f"/v2/fns/{fn['id']}", json={"memory": 512})
    assert changed["memory"] == 512 and changed["updated_at"] > fn["updated_at"] and changed["created_at"] == fn["created_at"]


async def test_a_write_whose_client_went_away_still_clears_the_invoke_cache():
    from fn_core.api.crud import CrudApi

    class Lookup:
        cleared = 0

        def clear(self):
            self.cleared += 1

    lookup = Lookup()
    crud = CrudApi(load_config(env={}), store=None, lookup=lookup)
    landed = asyncio.Event()

    async def slow_write():
        await asyncio.sleep(0.05)
        landed.set()
        return "written"

    handler = asyncio.ensure_future(crud._write(slow_write()))
    await asyncio.sleep(0.01)
    handler.cancel()  # what aiohttp does to the handler of a client that disconnected
    await asyncio.sleep(0)
    assert handler.cancelled() and lookup.cleared == 0  # the write is still under way
    await asyncio.wait_for(landed.wait(), 5)
    await asyncio.sleep(0)
    assert lookup.cleared == 1


async def test_numbers_beyond_float_range_and_bodies_nested_too_deep_are_invalid_json_and_store_nothing(api):
    # Python reads 1e400 as inf, which every later listing would carry as the non-JSON Infinity
    assert await call(api, "POST", "/v2/apps", data=b'{"name": "n", "annotations": {"k": 1e400}}') == (400, {"message": "Invalid JSON"})
    deep = b'{"name": "n", "annotations": {"k": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    assert await call(api, "POST", "/v2/apps", data=deep) == (400, {"message": "Invalid JSON"})
    assert (await call(api, "GET", "/v2/apps"))[1] == {"items": []}


@pytest.mark.parametrize("field", ["config", "annotations"])
@pytest.mark.parametrize("value", [[], False, "", 0])
async def test_config_and_annotations_that_are_not_objects_are_invalid_json(api, field, value):
    # Go's decoder refuses them for a map; null is an empty map
    assert await call(api, "POST", "/v2/apps", json={"name": "n", field: value}) == (400, {"message": "Invalid JSON"})
    assert (await call(api, "POST", "/v2/apps", json={"name": "n", field: None}))[0] == 200


KEY_RULE = "a config key is an environment variable's name (not empty, no '=' or NUL)"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"": "v"}, f"Invalid config key '': {KEY_RULE}"),
        ({"FN_APP_ID=other": "v"}, f"Invalid config key 'FN_APP_ID=other': {KEY_RULE}"),
        ({"A\0B": "v"}, f"Invalid config key 'A\\x00B': {KEY_RULE}"),
        ({"K": "a\0b"}, "Invalid config value of 'K': an environment variable's value has no NUL"),
        ({"K": "v" * 131070}, "Invalid config value of 'K': 131072 bytes as KEY=value, an environment variable may have 131071"),
        ({f"K{i}": "v" * 100_000 for i in range(6)}, "Invalid config: 600024 bytes as environment variables, at most 524288"),
    ],
)
async def test_a_config_no_container_could_be_started_with_is_refused_when_saved(api, config, message):
    # each of these failed every call (502 "container exit code 1", or the engine's 500), or grew every node's memory
    assert await call(api, "POST", "/v2/apps", json={"name": "n", "config": config}) == (400, {"message": message})
    status, app = await call(api, "POST", "/v2/apps", json={"name": "n", "config": {"K": "v" * 131069, "lower-case.ok": "é"}})
    assert status == 200, app
    fn = {"name": "f", "app_id": app["id"], "image": "i"}
    assert await call(api, "POST", "/v2/fns", json={**fn, "config": config}) == (400, {"message": message})
    status, created = await call(api, "POST", "/v2/fns", json=fn)
    assert status == 200
    assert await call(api, "PUT", f"/v2/fns/{created['id']}", json={"config": config}) == (400, {"message": message})
    assert "config" not in (await call(api, "GET", f"/v2/fns/{created['id']}"))[1]  # unchanged: none (omitted empty)


async def test_head_on_the_v2_api_is_a_method_not_allowed_as_in_fn(api):
    _, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    for path in ("/v2/apps", f"/v2/apps/{app['id']}"):
        async with api.head(path) as r:
            assert r.status == 405


async def test_a_cursor_made_as_fn_makes_it_the_name_alone_unpadded_pages_after_that_name(api):
    _, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    for name in ("ab", "b", "c"):
        await call(api, "POST", "/v2/fns", json={"name": name, "app_id": app["id"], "image": "i"})
    # base64.RawURLEncoding of "ab" (Fn's cursor): no padding
    _, page = await call(api, "GET", "/v2/fns", params={"app_id": app["id"], "cursor": "YWI"})
    assert [f["name"] for f in page["items"]] == ["b", "c"]
    assert await call(api, "GET", "/v2/fns", params={"app_id": app["id"], "cursor": "!!"}) == (400, {"message": "invalid cursor"})


SURROGATE = "Invalid JSON: a string holds a lone UTF-16 surrogate (a \\u escape in D800-DFFF)"


async def test_a_lone_surrogate_escape_anywhere_in_a_body_is_refused_and_stores_nothing(api):
    # json reads "\ud800" as a str no UTF-8 can hold: SQLite's binding of an id answered 500, and a config value
    # or image stored with it made every later call of the fn a 500 (its slot key could not be hashed)
    status, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    assert status == 200
    status, fn = await call(api, "POST", "/v2/fns", json={"name": "f", "app_id": app["id"], "image": "i"})
    assert status == 200
    refused = [
        ("POST", "/v2/apps", b'{"name": "b", "config": {"K": "\\ud800"}}'),
        ("POST", "/v2/fns", b'{"name": "g", "app_id": "\\udfff", "image": "i"}'),
        ("POST", "/v2/fns", b'{"name": "g", "app_id": "' + app["id"].encode() + b'", "image": "i\\ud800"}'),
        ("PUT", f"/v2/fns/{fn['id']}", b'{"annotations": {"k": "\\udc80"}}'),
        ("POST", "/v2/triggers", b'{"name": "t", "app_id": "' + app["id"].encode() + b'", "fn_id": "'
         + fn["id"].encode() + b'", "type": "http", "source": "/\\ud800"}'),
    ]
    for method, path, body in refused:
        assert await call(api, method, path, data=body) == (400, {"message": SURROGATE}), (method, path, body)
    assert [a["name"] for a in (await call(api, "GET", "/v2/apps"))[1]["items"]] == ["a"]
    assert [f["name"] for f in (await call(api, "GET", "/v2/fns", params={"app_id": app["id"]}))[1]["items"]] == ["f"]
    assert (await call(api, "GET", f"/v2/fns/{fn['id']}"))[1].get("annotations", {}).get("k") is None
    assert (await call(api, "GET", "/v2/triggers", params={"app_id": app["id"]}))[1] == {"items": []}
    # a pair is one character: taken and given back as it was sent
    status, paired = await call(api, "POST", "/v2/apps", data=b'{"name": "p", "config": {"K": "\\ud83d\\ude00"}}')
    assert (status, paired["config"]) == (200, {"K": "\U0001F600"})


async def test_fields_no_body_sets_must_still_be_of_their_type_as_go_decodes_them(api):
    status, app = await call(api, "POST", "/v2/apps", json={"name": "a", "shape": "GENERIC_X86"})
    assert status == 200
    status, fn = await call(api, "POST", "/v2/fns", json={"name": "f", "app_id": app["id"], "image": "i"})
    assert status == 200
    invalid = (400, {"message": "Invalid JSON"})
    assert await call(api, "PUT", f"/v2/apps/{app['id']}", json={"shape": 5}) == invalid
    assert await call(api, "PUT", f"/v2/fns/{fn['id']}", json={"shape": [1]}) == invalid
    assert await call(api, "POST", "/v2/apps", json={"name": "b", "created_at": 5}) == invalid
    assert await call(api, "PUT", f"/v2/apps/{app['id']}", json={"updated_at": [1]}) == invalid
    assert await call(api, "POST", "/v2/fns", json={"name": "g", "app_id": app["id"], "image": "i", "created_at": {}}) == invalid
    assert await call(api, "GET", f"/v2/apps/{app['id']}") == (200, app)  # unchanged
    # as strings they are read and left alone: the store sets them
    status, same = await call(api, "PUT", f"/v2/apps/{app['id']}", json={"shape": "GENERIC_ARM", "created_at": "x"})
    assert status == 200 and (same["shape"], same["created_at"]) == ("GENERIC_X86", app["created_at"])
