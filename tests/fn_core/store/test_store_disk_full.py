"""The store's disk full: a write is a 500 that says so and changes nothing, reads go on, and writes work again once
there is room. The database lives on a small tmpfs the test fills (mounting it needs root, as the suite runs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import attrs
import pytest

from fn_core.models import App
from fn_core.store import SQLiteStore
from fn_core.store.base import StoreFailed
from fn_core.testing import free_port

FN_CORE = str(Path(sys.executable).parent / "fn-core")
FULL = "the store failed: database or disk is full; nothing was changed"


class SmallDisk:
    """A 512 KiB tmpfs; `fill` takes every free byte, `free` gives them back."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.filler = os.path.join(path, "filler")

    def fill(self) -> None:
        with open(self.filler, "wb", buffering=0) as f, contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                f.write(b"\0" * 4096)

    def free(self) -> None:
        os.unlink(self.filler)


@pytest.fixture
def small_disk(tmpfs):
    return SmallDisk(tmpfs("size=512k,mode=0700"))


async def test_a_write_on_a_full_disk_fails_saying_so_and_changes_nothing(small_disk, caplog):
    """It was sqlite3's error, which the API answered "internal server error" with a traceback in the log. Writes in
    a transaction of their own (an update) leave none open: the next write works. (SQLite may also end such a
    transaction itself, and the store then runs no ROLLBACK, which would fail and hide the disk's error; no run of
    this test's sizes made SQLite do so.)"""
    store = SQLiteStore(os.path.join(small_disk.path, "fn.db"))
    try:
        first = await store.insert_app(App(name="first"))
        small_disk.fill()
        with pytest.raises(StoreFailed) as failed:
            await store.insert_app(App(name="second", annotations={"big": "x" * 400}, config={"K": "v" * 60000}))
        assert (failed.value.status, failed.value.message) == (500, FULL)
        assert "database or disk is full (SQLITE_FULL)" in caplog.text and "Traceback" not in caplog.text
        assert [app.name for app in (await store.list_apps()).items] == ["first"]  # reads go on
        # an update and a delete, in a transaction of their own: refused, and none is left open (the next write works)
        with pytest.raises(StoreFailed, match="database or disk is full"):
            await store.update_app(first.id, lambda app: attrs.evolve(app, config={"K": "v" * 200_000}))
        assert (await store.get_app(first.id)).config == {}
        small_disk.free()
        await store.update_app(first.id, lambda app: attrs.evolve(app, config={"K": "v"}))
        assert (await store.get_app(first.id)).config == {"K": "v"}
        await store.insert_app(App(name="second"))
        assert sorted(app.name for app in (await store.list_apps()).items) == ["first", "second"]
        assert (await store.get_app(first.id)).name == "first"
    finally:
        await store.close()


async def test_an_api_node_on_a_full_disk_answers_writes_with_a_clear_500_and_one_line(small_disk, tmp_path):
    port = free_port()
    log_path = tmp_path / "api.log"
    with open(log_path, "wb") as log:
        node = subprocess.Popen([FN_CORE, "api", "--host", "127.0.0.1", "--port", str(port), "--db",
                                 f"sqlite3://{small_disk.path}/fn.db"], stdout=log, stderr=subprocess.STDOUT,
                                env={k: v for k, v in os.environ.items() if not k.startswith("FN_")})
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as s:
            for _ in range(300):  # bounded: ~30 s
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get("/v2/apps") as r:
                        if r.status == 200:
                            break
                assert node.poll() is None, log_path.read_text()
                await asyncio.sleep(0.1)
            async with s.post("/v2/apps", json={"name": "before"}) as r:
                assert r.status == 200
            small_disk.fill()
            async with s.post("/v2/apps", json={"name": "while-full", "config": {"K": "v" * 60000}}) as r:
                assert (r.status, await r.json()) == (500, {"message": FULL})
            async with s.get("/v2/apps") as r:
                assert [app["name"] for app in (await r.json())["items"]] == ["before"]
            small_disk.free()
            async with s.post("/v2/apps", json={"name": "after"}) as r:
                assert r.status == 200
    finally:
        node.terminate()
        node.wait(30)
    text = log_path.read_text()
    assert text.count("the store's database failed a request: database or disk is full") == 1
    assert "Traceback" not in text
