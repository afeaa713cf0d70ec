"""The SQLite store's trigger rules, as Fn's InsertTrigger (api/datastore/sql/sql.go) has them."""

from __future__ import annotations

import attrs
import pytest

from fn_core.models import App, Fn, Trigger
from fn_core.store import SQLiteStore
from fn_core.store.base import FnNotFound, TriggerExists, TriggerFnIDNotSameApp, TriggerSourceExists


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "fn.db"))
    yield s
    await s.close()


async def test_a_trigger_needs_an_fn_of_its_own_app(store):
    app = await store.insert_app(App(name="a"))
    other = await store.insert_app(App(name="b"))
    fn = await store.insert_fn(Fn(name="f", app_id=app.id, image="i"))
    foreign = await store.insert_fn(Fn(name="f", app_id=other.id, image="i"))
    with pytest.raises(TriggerFnIDNotSameApp) as refused:
        await store.insert_trigger(Trigger(name="t", app_id=app.id, fn_id=foreign.id, source="/t"))
    assert (refused.value.status, refused.value.message) == (400, "Invalid Fn ID - not owned by specified app")
    with pytest.raises(FnNotFound):
        await store.insert_trigger(Trigger(name="t", app_id=app.id, fn_id="01NOSUCHFN", source="/t"))
    assert (await store.list_triggers(app_id=app.id)).items == []

    trigger = await store.insert_trigger(Trigger(name="t", app_id=app.id, fn_id=fn.id, source="/t"))
    with pytest.raises(TriggerFnIDNotSameApp):
        await store.update_trigger(trigger.id, lambda t: attrs.evolve(t, fn_id=foreign.id))
    assert await store.get_trigger(trigger.id) == trigger


async def test_a_trigger_moved_to_another_fn_goes_with_it(store):
    app = await store.insert_app(App(name="a"))
    f1 = await store.insert_fn(Fn(name="f1", app_id=app.id, image="i"))
    f2 = await store.insert_fn(Fn(name="f2", app_id=app.id, image="i"))
    trigger = await store.insert_trigger(Trigger(name="t", app_id=app.id, fn_id=f1.id, source="/t"))
    moved = await store.update_trigger(trigger.id, lambda t: attrs.evolve(t, fn_id=f2.id))
    assert moved.fn_id == f2.id
    await store.delete_fn(f1.id)
    assert await store.get_trigger(trigger.id) == moved
    await store.delete_fn(f2.id)  # the fn_id column moved too: the delete takes the trigger along
    assert (await store.list_triggers(app_id=app.id)).items == []


async def test_a_taken_source_is_reported_before_a_taken_name(store):
    app = await store.insert_app(App(name="a"))
    fn = await store.insert_fn(Fn(name="f", app_id=app.id, image="i"))
    await store.insert_trigger(Trigger(name="t", app_id=app.id, fn_id=fn.id, source="/t"))
    with pytest.raises(TriggerSourceExists) as both:
        await store.insert_trigger(Trigger(name="t", app_id=app.id, fn_id=fn.id, source="/t"))
    assert both.value.message == "Trigger with the same type and source exists on this app"
    with pytest.raises(TriggerExists) as name:
        await store.insert_trigger(Trigger(name="t", app_id=app.id, fn_id=fn.id, source="/u"))
    assert (name.value.status, name.value.message) == (409, "Trigger already exists")


async def test_a_store_made_when_names_were_unique_per_app_takes_them_per_fn_and_keeps_its_triggers(
        tmp_path, as_made_before_trigger_names_per_fn):
    """Stores made before trigger names were unique per fn (Fn's rule), as they were per app, are changed at open."""
    path = tmp_path / "old.db"
    first = SQLiteStore(str(path))
    app = await first.insert_app(App(name="a"))
    f1 = await first.insert_fn(Fn(name="f1", app_id=app.id, image="i"))
    f2 = await first.insert_fn(Fn(name="f2", app_id=app.id, image="i"))
    kept = await first.insert_trigger(Trigger(name="t", app_id=app.id, fn_id=f1.id, source="/t"))
    await first.close()
    as_made_before_trigger_names_per_fn(path)
    store = SQLiteStore(str(path))
    try:
        assert await store.get_trigger(kept.id) == kept
        namesake = await store.insert_trigger(Trigger(name="t", app_id=app.id, fn_id=f2.id, source="/u"))
        assert {t.id for t in (await store.list_triggers(app_id=app.id, name="t")).items} == {kept.id, namesake.id}
        with pytest.raises(TriggerExists):
            await store.insert_trigger(Trigger(name="t", app_id=app.id, fn_id=f1.id, source="/v"))
    finally:
        await store.close()
