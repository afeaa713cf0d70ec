"""Two processes on one SQLite file (an API node and an LB with --db): a write that depends on another row checks it
in the same transaction as it writes, so another process's delete cannot leave an fn or trigger without its app."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from fn_core.models import App, Fn, Trigger
from fn_core.store import SQLiteStore
from fn_core.store.base import AppNotFound


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "fn.db"))
    yield s
    await s.close()


async def _while_another_process_deletes_the_app(path: str, app_id: str, write) -> None:
    """Run ``write`` while another connection holds the write lock of a delete of the app, then commit the delete."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("DELETE FROM apps WHERE id = ?", (app_id,))
        other.execute("DELETE FROM fns WHERE app_id = ?", (app_id,))
        other.execute("DELETE FROM triggers WHERE app_id = ?", (app_id,))
        task = asyncio.ensure_future(write())
        await asyncio.sleep(0.3)  # the write has read what it checks (or waits for the lock to do so)
        other.execute("COMMIT")
        with pytest.raises(AppNotFound):
            await task
    finally:
        other.close()


async def test_an_fn_created_while_another_process_deletes_its_app_is_refused_not_orphaned(store, tmp_path):
    app = await store.insert_app(App(name="a"))
    await _while_another_process_deletes_the_app(
        str(tmp_path / "fn.db"), app.id, lambda: store.insert_fn(Fn(name="f", app_id=app.id, image="i"))
    )
    assert (await store.list_fns()).items == []


async def test_a_trigger_created_while_another_process_deletes_its_app_is_refused_not_orphaned(store, tmp_path):
    app = await store.insert_app(App(name="a"))
    fn = await store.insert_fn(Fn(name="f", app_id=app.id, image="i"))
    await _while_another_process_deletes_the_app(
        str(tmp_path / "fn.db"), app.id, lambda: store.insert_trigger(Trigger(name="t", app_id=app.id, fn_id=fn.id, source="/t"))
    )
    assert (await store.list_triggers(app_id=app.id)).items == []
