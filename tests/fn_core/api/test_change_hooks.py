"""`validate_delete` keeps what must not go; `object_changed` hears each change once stored (real node, real HTTP,
SQLite): Fn's ``Before*Delete`` and ``After*`` listeners."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fn_core import APIError, hookimpl

from .conftest import call

PROTECTED = "example.com/protected"


class KeepProtected:
    """Refuses to delete a protected app (its fns and triggers may go); records what each delete showed it."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str | None, str | None]] = []

    @hookimpl
    def validate_delete(self, app, fn, trigger):
        self.shown.append((app.name, fn and fn.name, trigger and trigger.name))
        protected = PROTECTED in app.annotations
        app.annotations.clear()  # a copy: never stored
        if fn is None and protected:
            raise APIError(f"app {app.name} is protected", status=409)


class Audit:
    """Hears every change: (action, kind, name, app name, fn name), and the ids it was given."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str, str, str, str | None]] = []
        self.ids: list[str] = []

    @hookimpl
    def object_changed(self, action, app, fn, trigger):
        what = trigger or fn or app
        self.heard.append((action, type(what).__name__, what.name, app.name, fn and fn.name))
        self.ids.append(what.id)


class BrokenListener:
    @hookimpl
    def object_changed(self, action, app, fn, trigger):
        raise RuntimeError("audit service unreachable")


class BrokenCheck:
    @hookimpl
    def validate_delete(self, app, fn, trigger):
        raise RuntimeError("policy database unreachable")


async def make_app_fn_trigger(session, app_name="billing", **app_fields):
    status, app = await call(session, "POST", "/v2/apps", {"name": app_name, **app_fields})
    assert status == 200, app
    status, fn = await call(session, "POST", "/v2/fns", {"name": "charge", "app_id": app["id"], "image": "img:1"})
    assert status == 200, fn
    status, trigger = await call(session, "POST", "/v2/triggers", {"name": "t", "app_id": app["id"], "fn_id": fn["id"],
                                                                     "type": "http", "source": "/charge"})
    assert status == 200, trigger
    return app, fn, trigger


@pytest.mark.parametrize("api_node", [False, True], ids=["lb-with-store", "api-node"])
async def test_a_plugin_keeps_a_protected_app_and_its_refusal_deletes_nothing(start, api_node):
    keeper = KeepProtected()
    session = await start({}, plugins=[("keep-protected", keeper)], api_node=api_node)
    app, fn, trigger = await make_app_fn_trigger(session, annotations={PROTECTED: True})
    assert await call(session, "DELETE", f"/v2/apps/{app['id']}") == (409, {"message": "app billing is protected"})
    assert (await call(session, "GET", f"/v2/apps/{app['id']}"))[0] == 200
    assert [f["id"] for f in (await call(session, "GET", f"/v2/fns?app_id={app['id']}"))[1]["items"]] == [fn["id"]]
    # what is inside may go: the plugin sees each with its app (and fn)
    assert (await call(session, "DELETE", f"/v2/triggers/{trigger['id']}"))[0] == 204
    assert (await call(session, "DELETE", f"/v2/fns/{fn['id']}"))[0] == 204
    assert keeper.shown == [("billing", None, None), ("billing", "charge", "t"), ("billing", "charge", None)]
    assert (await call(session, "GET", f"/v2/apps/{app['id']}"))[1]["annotations"] == {PROTECTED: True}  # a copy was changed
    # an unknown id is fn-core's 404, before any plugin
    assert await call(session, "DELETE", "/v2/fns/01NOSUCHFN0000000000000000") == (404, {"message": "Fn not found"})
    assert len(keeper.shown) == 3


async def test_a_plugin_that_fails_refuses_the_delete_with_a_500_naming_it(start, caplog):
    session = await start({}, plugins=[("policy", BrokenCheck())])
    app, fn, _ = await make_app_fn_trigger(session, "scratch")
    with caplog.at_level(logging.ERROR, logger="fn_core.hook_calls"):
        answer = await call(session, "DELETE", f"/v2/fns/{fn['id']}")
    assert answer == (500, {"message": "internal server error (plugin policy failed)"})
    assert "plugin 'policy' failed in validate_delete" in caplog.text and "policy database unreachable" in caplog.text
    assert (await call(session, "GET", f"/v2/fns/{fn['id']}"))[0] == 200


@pytest.mark.parametrize("api_node", [False, True], ids=["lb-with-store", "api-node"])
async def test_a_listener_hears_each_change_once_stored_and_a_failing_one_changes_no_answer(start, api_node, caplog):
    audit = Audit()
    session = await start({}, plugins=[("audit", audit), ("broken-audit", BrokenListener())], api_node=api_node)
    with caplog.at_level(logging.ERROR, logger="fn_core.hook_calls"):
        app, fn, trigger = await make_app_fn_trigger(session, "shop")
        assert (await call(session, "PUT", f"/v2/fns/{fn['id']}", {"memory": 256}))[0] == 200
        assert (await call(session, "PUT", f"/v2/triggers/{trigger['id']}", {"source": "/pay"}))[0] == 200
        assert (await call(session, "PUT", f"/v2/apps/{app['id']}", {"config": {"K": "v"}}))[0] == 200
        assert (await call(session, "DELETE", f"/v2/triggers/{trigger['id']}"))[0] == 204
        assert (await call(session, "DELETE", f"/v2/fns/{fn['id']}"))[0] == 204
        assert (await call(session, "DELETE", f"/v2/apps/{app['id']}"))[0] == 204
        # a refused write is no change: nothing is heard of it
        assert (await call(session, "POST", "/v2/fns", {"name": "f", "app_id": app["id"], "image": "i"}))[0] == 404
    assert audit.heard == [
        ("created", "App", "shop", "shop", None),
        ("created", "Fn", "charge", "shop", "charge"),
        ("created", "Trigger", "t", "shop", "charge"),
        ("updated", "Fn", "charge", "shop", "charge"),
        ("updated", "Trigger", "t", "shop", "charge"),
        ("updated", "App", "shop", "shop", None),
        ("deleted", "Trigger", "t", "shop", "charge"),
        ("deleted", "Fn", "charge", "shop", "charge"),
        ("deleted", "App", "shop", "shop", None),
    ]
    ids = {"App": app["id"], "Fn": fn["id"], "Trigger": trigger["id"]}
    assert audit.ids == [ids[kind] for _, kind, *_ in audit.heard]  # as stored: with the ids the store gave them
    assert "plugin 'broken-audit' failed in object_changed; ignored" in caplog.text


async def test_a_listener_is_shown_the_stored_objects_and_cannot_change_them(start):
    shown = []

    class Meddler:
        @hookimpl
        def object_changed(self, action, app, fn, trigger):
            shown.append((action, fn.memory if fn else None, fn.updated_at if fn else None))
            if fn is not None:
                fn.memory = 1  # a copy: never stored

    session = await start({}, plugins=[("meddler", Meddler())])
    status, app = await call(session, "POST", "/v2/apps", {"name": "a"})
    status, fn = await call(session, "POST", "/v2/fns", {"name": "f", "app_id": app["id"], "image": "i", "memory": 200})
    status, updated = await call(session, "PUT", f"/v2/fns/{fn['id']}", {"memory": 300})
    assert (fn["memory"], updated["memory"]) == (200, 300)
    assert shown == [("created", None, None), ("created", 200, fn["updated_at"]), ("updated", 300, updated["updated_at"])]
    assert (await call(session, "GET", f"/v2/fns/{fn['id']}"))[1]["memory"] == 300


async def test_a_change_is_told_also_when_the_client_left_during_the_write():
    """aiohttp cancels the handler of a client that hung up; the write it started lands, and its listeners hear it."""
    import asyncio
    import types

    from fn_core.api.crud import CrudApi
    from fn_core.config import load_config
    from fn_core.testing import wait_until

    api = CrudApi(load_config(env={}), store=None, lookup=types.SimpleNamespace(clear=lambda: None))
    release, told = asyncio.Event(), []

    async def write() -> str:
        await release.wait()
        return "stored"

    async def tell(written: str) -> None:
        told.append(written)

    async def before() -> object:
        return tell

    handler = asyncio.ensure_future(api._write(write(), before))
    await asyncio.sleep(0.01)
    handler.cancel()  # the client left while the store was writing
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await handler
    await wait_until(lambda: told == ["stored"], "the listeners' turn after the write")


async def test_a_change_is_told_even_when_a_delete_of_its_fn_comes_right_after_it(start):
    """An update of a trigger and a delete of its fn on one node, the delete sent a little later each round: what the
    update answered 200 for is heard, with its fn (read before the write: read after it, the fn was often gone and
    the change untold), and so is the delete."""
    audit = Audit()
    session = await start({}, plugins=[("audit", audit)])
    status, app = await call(session, "POST", "/v2/apps", {"name": "race"})
    for round_ in range(12):
        status, fn = await call(session, "POST", "/v2/fns", {"name": f"f{round_}", "app_id": app["id"], "image": "i"})
        status, trigger = await call(session, "POST", "/v2/triggers", {"name": f"t{round_}", "app_id": app["id"],
                                                                         "fn_id": fn["id"], "type": "http", "source": f"/r{round_}"})
        audit.heard.clear()

        async def delete_later(turns: int) -> tuple:
            for _ in range(turns):
                await asyncio.sleep(0)
            return await call(session, "DELETE", f"/v2/fns/{fn['id']}")  # noqa: B023

        updated, deleted = await asyncio.gather(
            call(session, "PUT", f"/v2/triggers/{trigger['id']}", {"annotations": {"example.com/n": round_}}),
            delete_later(round_))
        assert deleted[0] == 204
        assert ("deleted", "Fn", f"f{round_}", "race", f"f{round_}") in audit.heard
        if updated[0] == 200:
            assert ("updated", "Trigger", f"t{round_}", "race", f"f{round_}") in audit.heard, (round_, audit.heard)
        else:
            assert updated[0] == 404 and len(audit.heard) == 1  # the delete came first: no update was made


async def test_a_trigger_pointed_at_another_fn_is_told_with_that_fn(start):
    audit = Audit()
    shown = []

    class Shown:
        @hookimpl
        def object_changed(self, action, app, fn, trigger):
            shown.append((action, trigger and trigger.fn_id, fn and fn.id))

    session = await start({}, plugins=[("audit", audit), ("shown", Shown())])
    app, fn, trigger = await make_app_fn_trigger(session, "moves")
    status, other = await call(session, "POST", "/v2/fns", {"name": "other", "app_id": app["id"], "image": "i"})
    assert (await call(session, "PUT", f"/v2/triggers/{trigger['id']}", {"fn_id": other["id"]}))[0] == 200
    assert shown[-1] == ("updated", other["id"], other["id"])
