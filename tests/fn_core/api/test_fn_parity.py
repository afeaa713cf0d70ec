"""What Fn's v2 API answers where we used to answer otherwise: each case is Fn's status and message.

Sources (fnproject/fn): api/models/{app,fn,trigger,annotations,error}.go, api/datastore/sql/sql.go,
api/datastore/internal/datastoreutil/validator.go, api/server/server.go (`pageParams`).
"""

from __future__ import annotations

import pytest

from .conftest import call


async def app_and_fn(api, app_name="a", fn_name="f"):
    status, app = await call(api, "POST", "/v2/apps", json={"name": app_name})
    assert status == 200, app
    status, fn = await call(api, "POST", "/v2/fns", json={"name": fn_name, "app_id": app["id"], "image": "i:1"})
    assert status == 200, fn
    return app, fn


# --- 1. a trigger's fn must be one of its app's ----------------------------------------------
NOT_SAME_APP = (400, {"message": "Invalid Fn ID - not owned by specified app"})


async def test_a_trigger_on_another_apps_fn_is_refused_as_fn_does(start):
    api = await start({})
    app, _ = await app_and_fn(api, "a")
    _, other_fn = await app_and_fn(api, "b")
    trigger = {"name": "t", "app_id": app["id"], "fn_id": other_fn["id"], "type": "http", "source": "/t"}
    assert await call(api, "POST", "/v2/triggers", json=trigger) == NOT_SAME_APP
    assert await call(api, "GET", "/v2/triggers", params={"app_id": app["id"]}) == (200, {"items": []})
    missing = {**trigger, "fn_id": "01NOSUCHFN"}
    assert await call(api, "POST", "/v2/triggers", json=missing) == (404, {"message": "Fn not found"})


async def test_a_trigger_moves_to_another_fn_of_its_app_only(start):
    api = await start({})
    app, fn = await app_and_fn(api, "a", "f")
    status, fn2 = await call(api, "POST", "/v2/fns", json={"name": "g", "app_id": app["id"], "image": "i:1"})
    assert status == 200
    _, other_fn = await app_and_fn(api, "b")
    base = {"name": "t", "app_id": app["id"], "fn_id": fn["id"], "type": "http", "source": "/t"}
    status, trigger = await call(api, "POST", "/v2/triggers", json=base)
    assert status == 200
    path = f"/v2/triggers/{trigger['id']}"

    assert await call(api, "PUT", path, json={"fn_id": other_fn["id"]}) == NOT_SAME_APP
    assert await call(api, "PUT", path, json={"fn_id": "01NOSUCHFN"}) == (404, {"message": "Fn not found"})
    assert await call(api, "GET", path) == (200, trigger)

    status, moved = await call(api, "PUT", path, json={"fn_id": fn2["id"]})  # Fn's Trigger.Update takes a new fn_id
    assert status == 200 and moved["fn_id"] == fn2["id"]
    assert (await call(api, "DELETE", f"/v2/fns/{fn['id']}"))[0] == 204
    assert (await call(api, "GET", path))[1]["fn_id"] == fn2["id"]  # it went with its new fn, not the old
    assert (await call(api, "DELETE", f"/v2/fns/{fn2['id']}"))[0] == 204
    assert await call(api, "GET", path) == (404, {"message": "Trigger not found"})


# --- 2. paging: Fn's pageParams never refuses a per_page ------------------------------------
@pytest.mark.parametrize(
    ("per_page", "count"),
    [
        ("0", 30), ("-1", 30), ("abc", 30), ("", 30), ("1.5", 30), (" 5", 30), ("-99999999999999999999999", 30),
        ("+2", 2), ("007", 7), ("100", 31), ("1000", 31), ("99999999999999999999999", 31),
    ],
)
async def test_per_page_is_read_as_fn_reads_it(start, per_page, count):
    api = await start({})
    _, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    for i in range(31):
        assert (await call(api, "POST", "/v2/fns", json={"name": f"f{i:02}", "app_id": app["id"], "image": "i"}))[0] == 200
    status, page = await call(api, "GET", "/v2/fns", params={"app_id": app["id"], "per_page": per_page})
    assert status == 200 and len(page["items"]) == count
    status, apps = await call(api, "GET", "/v2/apps", params={"per_page": per_page})
    assert status == 200 and len(apps["items"]) == 1


# --- 3. shape: checked on app create, neither changed nor checked on update -----------------
async def test_shape_is_checked_on_create_and_left_alone_on_update(start):
    api = await start({})
    assert await call(api, "POST", "/v2/apps", json={"name": "x", "shape": "BOGUS"}) == (400, {"message": "Invalid app shape"})
    status, app = await call(api, "POST", "/v2/apps", json={"name": "a", "shape": "GENERIC_ARM"})
    assert status == 200 and app["shape"] == "GENERIC_ARM"
    for shape in ("GENERIC_X86", "BOGUS"):  # Fn's App.Update and its UPDATE leave shape out: 200, unchanged
        assert await call(api, "PUT", f"/v2/apps/{app['id']}", json={"shape": shape}) == (200, app)
    _, fn = await call(api, "POST", "/v2/fns", json={"name": "f", "app_id": app["id"], "image": "i"})
    status, updated = await call(api, "PUT", f"/v2/fns/{fn['id']}", json={"shape": "GENERIC_X86"})
    assert (status, updated) == (200, fn)


# --- 4. annotations ----------------------------------------------------------------------
BAD_KEY = (400, {"message": "Invalid annotation key, annotation keys must be non-empty ascii strings excluding whitespace"})
KEY_LENGTH = (400, {"message": "Invalid annotation key length, annotation keys may not be larger than 128 bytes"})
BAD_VALUE = (400, {"message": "Invalid annotation value, annotation values may only be non-empty strings, numbers, objects, or arrays"})
VALUE_LENGTH = (400, {"message": "Invalid annotation value length, annotation values may not be larger than 512 bytes when serialized as JSON"})
TOO_MANY = (400, {"message": "Invalid annotation change, new key(s) exceed maximum permitted number of annotations keys (100)"})


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"a b": 1}, BAD_KEY), ({"": 1}, BAD_KEY), ({"é": 1}, BAD_KEY), ({"tab\t": 1}, BAD_KEY), ({"k\n": 1}, BAD_KEY),
        ({"k" * 129: 1}, KEY_LENGTH),
        ({"k": ""}, BAD_VALUE), ({"k": None}, BAD_VALUE),
        ({"k": "x" * 511}, VALUE_LENGTH),  # 513 bytes with its quotes
        ({"k": "é" * 256}, VALUE_LENGTH),  # 514 bytes of UTF-8
        ({f"k{i}": 1 for i in range(101)}, TOO_MANY),
    ],
)
async def test_annotations_are_refused_as_fn_refuses_them(start, annotations, expected):
    api = await start({})
    assert await call(api, "POST", "/v2/apps", json={"name": "a", "annotations": annotations}) == expected
    assert await call(api, "GET", "/v2/apps") == (200, {"items": []})


async def test_annotations_fn_accepts(start):
    api = await start({})
    annotations = {"k" * 128: 1, "obj": {}, "arr": [], "no": False, "long": "x" * 510, "utf8": "é" * 255, "!~": 0}
    status, app = await call(api, "POST", "/v2/apps", json={"name": "a", "annotations": annotations})
    assert status == 200 and app["annotations"] == annotations
    many = {f"k{i}": i for i in range(100 - len(annotations))}
    status, app = await call(api, "PUT", f"/v2/apps/{app['id']}", json={"annotations": many})
    assert status == 200 and len(app["annotations"]) == 100
    assert await call(api, "PUT", f"/v2/apps/{app['id']}", json={"annotations": {"one more": 1}}) == BAD_KEY
    assert await call(api, "PUT", f"/v2/apps/{app['id']}", json={"annotations": {"one-more": 1}}) == TOO_MANY
    # "" and null delete; the change that makes room is taken
    status, app = await call(api, "PUT", f"/v2/apps/{app['id']}", json={"annotations": {"obj": None, "arr": "", "new": 1}})
    assert status == 200 and len(app["annotations"]) == 99 and "obj" not in app["annotations"] and app["annotations"]["new"] == 1


# --- 5. Fn's messages ---------------------------------------------------------------------
async def test_fn_messages(start):
    api = await start({})
    _, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    ok = {"name": "g", "app_id": app["id"], "image": "i"}
    for body, message in [
        ({}, "Missing AppID on Fn"),  # Fn's datastore checks app_id before the name
        ({"app_id": app["id"], "image": "i"}, "Missing Fn name"),
        ({"name": "g", "app_id": app["id"]}, "Missing image on Fn"),
        ({**ok, "timeout": 301}, "timeout value is out of range, must be between 0 and 300"),
        ({**ok, "timeout": -1}, "timeout value is out of range, must be between 0 and 300"),
        ({**ok, "idle_timeout": 3601}, "idle_timeout value is out of range, must be between 0 and 3600"),
        ({**ok, "idle_timeout": -5}, "idle_timeout value is out of range, must be between 0 and 3600"),
        ({**ok, "memory": 8193}, "memory value is out of range. It should be between 0 and 8192"),
        ({**ok, "timeout": 0, "memory": 9000}, "memory value is out of range. It should be between 0 and 8192"),
        ({**ok, "timeout": 301, "memory": 9000}, "timeout value is out of range, must be between 0 and 300"),
        ({**ok, "memory": -1}, "Invalid JSON"),  # a uint64 in Go
        ({**ok, "memory": 2**64}, "Invalid JSON"),
        ({**ok, "timeout": 2**31}, "Invalid JSON"),  # an int32 in Go
        ({**ok, "idle_timeout": -(2**31) - 1}, "Invalid JSON"),
        ({**ok, "name": "x" * 256}, "Fn name must be 255 characters or less"),
    ]:
        assert await call(api, "POST", "/v2/fns", json=body) == (400, {"message": message}), body
    status, fn = await call(api, "POST", "/v2/fns", json=ok)
    assert status == 200
    for body, message in [
        ({"timeout": -1}, "timeout value is out of range, must be between 0 and 300"),
        ({"memory": -1}, "Invalid JSON"),
        ({"id": "01OTHER"}, "Fn ID in path does not match that in body"),
    ]:
        assert await call(api, "PUT", f"/v2/fns/{fn['id']}", json=body) == (400, {"message": message}), body


async def test_app_messages(start):
    api = await start({})
    for body, message in [({}, "Missing Name"), ({"name": ""}, "Missing Name"), ({"name": "&&%@!#$#@$"}, "Invalid app name")]:
        assert await call(api, "POST", "/v2/apps", json=body) == (400, {"message": message})


async def test_trigger_messages(start):
    api = await start({})
    app, fn = await app_and_fn(api)
    base = {"name": "t", "app_id": app["id"], "fn_id": fn["id"], "type": "http", "source": "/t"}
    for body, message in [
        ({**base, "app_id": "", "name": ""}, "Missing App ID on Trigger"),  # Fn checks the app first
        ({**base, "name": ""}, "Missing name on Trigger"),
        ({**base, "fn_id": ""}, "Missing Fn ID on Trigger"),
        ({**base, "source": ""}, "Missing Trigger Source"),
        ({**base, "source": "t"}, "Missing Trigger Source Prefix '/'"),
        ({**base, "name": "t" * 256}, "Trigger name must be 255 characters or less"),
    ]:
        assert await call(api, "POST", "/v2/triggers", json=body) == (400, {"message": message}), body
    status, trigger = await call(api, "POST", "/v2/triggers", json=base)
    assert status == 200
    same_source = (409, {"message": "Trigger with the same type and source exists on this app"})
    assert await call(api, "POST", "/v2/triggers", json={**base, "name": "t2"}) == same_source
    assert await call(api, "POST", "/v2/triggers", json=base) == same_source  # name and source: Fn looks at the source first
    assert await call(api, "POST", "/v2/triggers", json={**base, "source": "/u"}) == (409, {"message": "Trigger already exists"})
    # a name is unique per fn (Fn's table constraint is app_id, fn_id, name): another fn's trigger may have it
    _, other = await call(api, "POST", "/v2/fns", json={"name": "other", "app_id": app["id"], "image": "i"})
    status, namesake = await call(api, "POST", "/v2/triggers", json={**base, "fn_id": other["id"], "source": "/u"})
    assert (status, namesake["name"], namesake["fn_id"]) == (200, "t", other["id"])
    mismatch = await call(api, "PUT", f"/v2/triggers/{trigger['id']}", json={"id": "01OTHER"})
    assert mismatch == (400, {"message": "ID in path does not match ID in body"})


# --- 6. names -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a:b", "a@b", "a+b", "a$b", "a&b", "a=b", "a~b", "a.b", "A_b-9"])
async def test_fn_names_that_url_path_escape_leaves_alone_are_taken(start, name):
    api = await start({})
    _, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    status, fn = await call(api, "POST", "/v2/fns", json={"name": name, "app_id": app["id"], "image": "i"})
    assert status == 200 and fn["name"] == name
    _, page = await call(api, "GET", "/v2/fns", params={"app_id": app["id"], "name": name})
    assert [f["id"] for f in page["items"]] == [fn["id"]]


@pytest.mark.parametrize("name", ["a/b", "a%b", "a b", "a,b", "a;b", "a?b", "a!b", "a*b", "a'b", "é", "a#b"])
async def test_fn_names_that_url_path_escape_changes_are_refused(start, name):
    api = await start({})
    _, app = await call(api, "POST", "/v2/apps", json={"name": "a"})
    body = {"name": name, "app_id": app["id"], "image": "i"}
    assert await call(api, "POST", "/v2/fns", json=body) == (400, {"message": "name must be a valid string"})


@pytest.mark.parametrize("name", ["déclencheur", "触发器", "٣", "Ⅻ", "t_1-x"])
async def test_trigger_and_app_names_take_unicode_letters_and_numbers(start, name):
    api = await start({})
    status, app = await call(api, "POST", "/v2/apps", json={"name": name})
    assert status == 200 and app["name"] == name
    _, page = await call(api, "GET", "/v2/apps", params={"name": name})
    assert [a["id"] for a in page["items"]] == [app["id"]]
    _, fn = await call(api, "POST", "/v2/fns", json={"name": "f", "app_id": app["id"], "image": "i"})
    trigger = {"name": name, "app_id": app["id"], "fn_id": fn["id"], "type": "http", "source": "/t"}
    status, created = await call(api, "POST", "/v2/triggers", json=trigger)
    assert status == 200 and created["name"] == name


@pytest.mark.parametrize("name", ["a.b", "a~b", "a:b", "a b", "a/b", "a\u200bb"])
async def test_trigger_and_app_names_refuse_other_characters(start, name):
    api = await start({})
    assert await call(api, "POST", "/v2/apps", json={"name": name}) == (400, {"message": "Invalid app name"})
    app, fn = await app_and_fn(api)
    trigger = {"name": name, "app_id": app["id"], "fn_id": fn["id"], "type": "http", "source": "/t"}
    assert await call(api, "POST", "/v2/triggers", json=trigger) == (400, {"message": "Invalid name for Trigger"})


async def test_name_lengths_are_bytes_as_go_counts_them(start):
    api = await start({})
    assert (await call(api, "POST", "/v2/apps", json={"name": "é" * 127}))[0] == 200  # 254 bytes
    too_long = await call(api, "POST", "/v2/apps", json={"name": "é" * 128})  # 128 characters, 256 bytes
    assert too_long == (400, {"message": "App name must be 255 characters or less"})
    app, fn = await app_and_fn(api)
    trigger = {"app_id": app["id"], "fn_id": fn["id"], "type": "http", "source": "/t"}
    too_long = await call(api, "POST", "/v2/triggers", json={**trigger, "name": "é" * 128})
    assert too_long == (400, {"message": "Trigger name must be 255 characters or less"})
    # an fn's name is checked for its length before its characters (ASCII only for fns), as in Go
    too_long = await call(api, "POST", "/v2/fns", json={"app_id": app["id"], "image": "fn/echo:1", "name": "é" * 128})
    assert too_long == (400, {"message": "Fn name must be 255 characters or less"})
