"""Two processes on one SQLite file (an API node and an LB with --db): a write that depends on another row checks it
in the same transaction as it writes, so another process's delete cannot leave an fn or trigger without its app."""

from __future__ import annotations

import asyncio
import sqlite3
import sys

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


async def test_a_new_store_opens_while_another_process_holds_its_file(tmp_path):
    """Two nodes (or a node and `fn-core import-fn`) starting on one new file: the one that turns WAL mode on while
    the other writes waits for it, as it waits for any other lock, instead of stopping with "database is locked"."""
    path = tmp_path / "fn.db"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN IMMEDIATE')\n"  # another process's first write holds the file
        "print('holding', flush=True)\n"
        "time.sleep(0.5)\n"
        "db.execute('COMMIT')\n",
        str(path), stdout=asyncio.subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"holding\n"
        store = await asyncio.to_thread(SQLiteStore, str(path))
        try:
            app = await store.insert_app(App(name="a"))
            assert await store.get_app(app.id) == app
        finally:
            await store.close()
    finally:
        await asyncio.wait_for(holder.wait(), 30)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
