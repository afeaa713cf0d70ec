"""`validate_app`, `validate_fn` and `validate_trigger`: plugins check what the v2 API saves (real node, real HTTP,
SQLite)."""

from __future__ import annotations

import json
import logging
import sqlite3

import attrs
import pytest

from fn_core import APIError, hookimpl
from fn_core.api.crud import CHECKED_UPDATE_ATTEMPTS

from .conftest import call

TEAM = "example.com/team"


class TeamPolicy:
    """Apps need a team annotation; fns may not be huge; triggers serve /public paths. Records what it was shown."""

    def __init__(self) -> None:
        self.apps: list = []
        self.fns: list = []
        self.triggers: list = []

    @hookimpl
    def validate_app(self, app):
        self.apps.append(app)
        if TEAM not in app.annotations:
            raise APIError(f"an app needs the annotation {TEAM}", status=400)

    @hookimpl
    def validate_fn(self, app, fn):
        self.fns.append((app, fn))
        fn.memory = 1  # a copy: never stored
        if fn.config.get("SIZE") == "huge":
            raise APIError("fns of this platform may not be huge", status=422)

    @hookimpl
    def validate_trigger(self, app, fn, trigger):
        self.triggers.append((app, fn, attrs.evolve(trigger)))
        public = trigger.source.startswith("/public/")
        trigger.source = "/public/sneaky"  # a copy: never stored
        if not public:
            raise APIError("a trigger serves /public/... only", status=403)


class Broken:
    @hookimpl
    def validate_fn(self, fn):
        raise RuntimeError("policy database unreachable")


@pytest.fixture
def node(start):
    """``session = await node(plugin, api_node=False)``: `start`'s node with ``plugin`` installed as 'team-policy'."""
    return lambda plugin, api_node=False: start({}, plugins=[('team-policy', plugin)], api_node=api_node)


async def make_app_and_fn(session):
    status, app = await call(session, "POST", "/v2/apps", {"name": "a", "annotations": {TEAM: "payments"}})
    assert status == 200, app
    status, fn = await call(session, "POST", "/v2/fns", {"name": "f", "app_id": app["id"], "image": "img:1", "config": {"SIZE": "small"}})
    assert status == 200, fn
    return app, fn


@pytest.mark.parametrize("api_node", [False, True], ids=["lb-with-store", "api-node"])
async def test_a_plugin_refuses_a_save_with_its_status_and_message_and_nothing_is_stored(node, api_node):
    session = await node(TeamPolicy(), api_node=api_node)
    assert await call(session, "POST", "/v2/apps", {"name": "loose"}) == (400, {"message": f"an app needs the annotation {TEAM}"})
    assert (await call(session, "GET", "/v2/apps"))[1]["items"] == []

    app, fn = await make_app_and_fn(session)
    refused = (422, {"message": "fns of this platform may not be huge"})
    assert await call(session, "POST", "/v2/fns", {"name": "g", "app_id": app["id"], "image": "i", "config": {"SIZE": "huge"}}) == refused
    assert await call(session, "PUT", f"/v2/fns/{fn['id']}", {"config": {"SIZE": "huge"}}) == refused
    assert await call(session, "PUT", f"/v2/apps/{app['id']}", {"annotations": {TEAM: ""}}) == (
        400, {"message": f"an app needs the annotation {TEAM}"})  # "" removes the key: the merged app is checked
    assert [f["name"] for f in (await call(session, "GET", f"/v2/fns?app_id={app['id']}"))[1]["items"]] == ["f"]
    assert (await call(session, "GET", f"/v2/fns/{fn['id']}"))[1] == fn  # unchanged, updated_at included
    assert (await call(session, "GET", f"/v2/apps/{app['id']}"))[1] == app


async def test_the_plugin_sees_the_fn_as_it_will_be_stored_with_its_app_and_cannot_change_it(node):
    policy = TeamPolicy()
    session = await node(policy)
    app, fn = await make_app_and_fn(session)
    status, updated = await call(session, "PUT", f"/v2/fns/{fn['id']}", {"config": {"LEVEL": "debug"}, "timeout": 60})
    assert status == 200
    seen_app, seen_fn = policy.fns[-1]
    assert (seen_app.id, seen_app.annotations) == (app["id"], {TEAM: "payments"})
    assert (seen_fn.id, seen_fn.config, seen_fn.timeout) == (fn["id"], {"SIZE": "small", "LEVEL": "debug"}, 60)
    assert policy.fns[0][1].id == ""  # a create: no id yet
    assert updated["memory"] == fn["memory"] == 128  # the plugin set memory = 1 on its copy
    assert updated["config"] == {"SIZE": "small", "LEVEL": "debug"}
    assert (await call(session, "GET", f"/v2/fns/{fn['id']}"))[1]["memory"] == 128


async def test_a_plugin_that_fails_refuses_the_save_with_a_500_naming_it(node, caplog):
    session = await node(Broken())
    status, app = await call(session, "POST", "/v2/apps", {"name": "a"})  # Broken checks no apps
    assert status == 200
    with caplog.at_level(logging.ERROR, logger="fn_core.hook_calls"):
        answer = await call(session, "POST", "/v2/fns", {"name": "f", "app_id": app["id"], "image": "i"})
    assert answer == (500, {"message": "internal server error (plugin team-policy failed)"})
    assert "plugin 'team-policy' failed in validate_fn" in caplog.text and "policy database unreachable" in caplog.text
    assert (await call(session, "GET", f"/v2/fns?app_id={app['id']}"))[1]["items"] == []


async def test_an_fn_of_a_missing_app_is_the_stores_404_before_any_plugin_runs(node):
    policy = TeamPolicy()
    session = await node(policy)
    assert await call(session, "POST", "/v2/fns", {"name": "f", "app_id": "nope", "image": "i"}) == (404, {"message": "App not found"})
    assert policy.fns == []


async def test_a_plugin_refuses_a_trigger_and_sees_it_with_its_app_and_the_fn_it_will_call(node):
    policy = TeamPolicy()
    session = await node(policy)
    app, fn = await make_app_and_fn(session)
    status, other = await call(session, "POST", "/v2/fns", {"name": "g", "app_id": app["id"], "image": "img:2"})
    assert status == 200, other
    refused = (403, {"message": "a trigger serves /public/... only"})
    base = {"name": "t", "app_id": app["id"], "fn_id": fn["id"], "type": "http"}
    assert await call(session, "POST", "/v2/triggers", {**base, "source": "/admin"}) == refused
    assert (await call(session, "GET", f"/v2/triggers?app_id={app['id']}"))[1]["items"] == []

    status, trigger = await call(session, "POST", "/v2/triggers", {**base, "source": "/public/hello"})
    assert status == 200, trigger
    assert trigger["source"] == "/public/hello"  # the plugin changed its copy only
    assert await call(session, "PUT", f"/v2/triggers/{trigger['id']}", {"source": "/admin"}) == refused
    assert (await call(session, "GET", f"/v2/triggers/{trigger['id']}"))[1] == trigger

    status, moved = await call(session, "PUT", f"/v2/triggers/{trigger['id']}", {"fn_id": other["id"]})
    assert status == 200, moved
    seen_app, seen_fn, seen = policy.triggers[-1]
    assert (seen_app.id, seen_fn.id, seen_fn.image) == (app["id"], other["id"], "img:2")  # the fn it will call
    assert (seen.id, seen.fn_id, seen.source) == (trigger["id"], other["id"], "/public/hello")  # merged
    assert policy.triggers[1][2].id == ""  # a create: no id yet


async def test_a_trigger_of_a_missing_fn_or_another_apps_fn_is_fn_cores_answer_before_any_plugin_runs(node):
    policy = TeamPolicy()
    session = await node(policy)
    app, fn = await make_app_and_fn(session)
    status, app2 = await call(session, "POST", "/v2/apps", {"name": "b", "annotations": {TEAM: "ops"}})
    assert status == 200, app2
    base = {"name": "t", "type": "http", "source": "/public/x"}
    assert await call(session, "POST", "/v2/triggers", {**base, "app_id": app["id"], "fn_id": "nope"}) == (
        404, {"message": "Fn not found"})
    assert await call(session, "POST", "/v2/triggers", {**base, "app_id": app2["id"], "fn_id": fn["id"]}) == (
        400, {"message": "Invalid Fn ID - not owned by specified app"})
    assert policy.triggers == []


class ConcurrentWriter(TeamPolicy):
    """At each of its first ``writes`` checks, another writer changes the stored fn (straight in the database)."""

    def __init__(self, db_path, writes: int) -> None:
        super().__init__()
        self.db_path = db_path
        self.writes = writes

    @hookimpl
    def validate_fn(self, app, fn):
        super().validate_fn(app, fn)
        if fn.id and self.writes:
            self.writes -= 1
            with sqlite3.connect(self.db_path) as db:
                (doc,) = db.execute("SELECT doc FROM fns WHERE id = ?", (fn.id,)).fetchone()
                stored = json.loads(doc)
                stored["config"][f"OTHER{self.writes}"] = "x"
                db.execute("UPDATE fns SET doc = ? WHERE id = ?", (json.dumps(stored), fn.id))


async def test_an_update_is_checked_again_when_another_write_changed_the_fn_meanwhile(node, tmp_path):
    policy = ConcurrentWriter(tmp_path / "fn0.db", writes=1)
    session = await node(policy)
    _, fn = await make_app_and_fn(session)
    status, updated = await call(session, "PUT", f"/v2/fns/{fn['id']}", {"config": {"LEVEL": "debug"}})
    assert status == 200
    # both writes kept; the plugin saw the merged fn twice, the second time with the other write in it
    assert updated["config"] == {"SIZE": "small", "OTHER0": "x", "LEVEL": "debug"}
    assert [f.config for _, f in policy.fns[1:]] == [{"SIZE": "small", "LEVEL": "debug"}, {"SIZE": "small", "OTHER0": "x", "LEVEL": "debug"}]


async def test_an_update_whose_fn_keeps_changing_is_refused_with_409_and_not_written(node, tmp_path):
    policy = ConcurrentWriter(tmp_path / "fn0.db", writes=CHECKED_UPDATE_ATTEMPTS)
    session = await node(policy)
    _, fn = await make_app_and_fn(session)
    status, body = await call(session, "PUT", f"/v2/fns/{fn['id']}", {"config": {"LEVEL": "debug"}})
    assert (status, body) == (409, {"message": f"changed by {CHECKED_UPDATE_ATTEMPTS} other updates while this one was checked; send it again"})
    assert "LEVEL" not in (await call(session, "GET", f"/v2/fns/{fn['id']}"))[1]["config"]


async def test_parallel_updates_of_one_fn_all_land_as_without_plugins(node):
    # each checked update of an object takes its turn on the node: none is refused for the others' sake
    import asyncio

    policy = TeamPolicy()
    session = await node(policy)
    _, fn = await make_app_and_fn(session)
    answers = await asyncio.gather(*(call(session, "PUT", f"/v2/fns/{fn['id']}", {"config": {f"P{i}": "v"}}) for i in range(30)))
    assert [status for status, _ in answers] == [200] * 30
    stored = (await call(session, "GET", f"/v2/fns/{fn['id']}"))[1]["config"]
    assert stored == {"SIZE": "small", **{f"P{i}": "v" for i in range(30)}}
    assert len(policy.fns) == 31  # the create, then each update checked once
