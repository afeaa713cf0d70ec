"""`fn-core import-fn`: an Fn deployment's apps, fns and triggers moved into fn-core's store, their ids kept.

The source is Fn's v2 API (here an fn-core API node, which speaks it field for field, or a stand-in for an Fn
behind an auth proxy) or a SQLite file laid out as Fn's migrations leave it; the command is the installed
console script, as an operator runs it; the imported fns are called through a real LB and runner.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from fn_core import APIError, Fn, Trigger, hookimpl
from fn_core.config import load_config
from fn_core.lb.main import start_api
from fn_core.store import SQLiteStore, sqlite
from fn_core.store.base import ImportConflict
from fn_core.store.fn_import import Found, ImportFailed, checked, import_fn, read_api, read_fn_sqlite
from fn_core.testing import build_plugin_manager, free_port, start_platform

FN_CORE = str(Path(sys.executable).parent / "fn-core")
STAMP = "2024-03-01T10:00:00.000Z"
LATER = "2024-05-01T10:00:00.000Z"
APP_ID, FN_ID, OTHER_FN_ID, TRIGGER_ID = "01HQ0000000000000000APP001", "01HQ00000000000000000FN001", "01HQ00000000000000000FN002", "01HQ0000000000000000TRG001"


async def fn_core(*args: str) -> tuple[int, str, str]:
    """The installed `fn-core` with ``args`` (on the event loop's side: the API node it reads runs in this loop)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
    proc = await asyncio.create_subprocess_exec(FN_CORE, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def fn_database(path: Path, *, memory: int = 256, fn_image: str = "fnproject/hello:0.0.1", extra_fns: tuple = ()) -> Path:
    """A SQLite file as Fn's migrations leave it (apps, fns and triggers with Fn's columns, `shape` included, and its
    `schema_migrations`), holding app `shop`, its fn `pay` (plus ``extra_fns`` rows) and the trigger `/pay`."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
        INSERT INTO schema_migrations VALUES (26, 0);
        CREATE TABLE apps (id varchar(256) NOT NULL PRIMARY KEY, name varchar(256) NOT NULL UNIQUE,
            config text NOT NULL, annotations text NOT NULL, created_at varchar(256), updated_at varchar(256),
            syslog_url text, shape text);
        CREATE TABLE fns (id varchar(256) NOT NULL PRIMARY KEY, name varchar(256) NOT NULL,
            app_id varchar(256) NOT NULL, image varchar(256) NOT NULL, memory int NOT NULL, timeout int NOT NULL,
            idle_timeout int NOT NULL, config text NOT NULL, annotations text NOT NULL,
            created_at varchar(256) NOT NULL, updated_at varchar(256) NOT NULL, shape text,
            CONSTRAINT name_app_id_unique UNIQUE (app_id, name));
        CREATE TABLE triggers (id varchar(256) NOT NULL PRIMARY KEY, name varchar(256) NOT NULL,
            app_id varchar(256) NOT NULL, fn_id varchar(256) NOT NULL, created_at varchar(256) NOT NULL,
            updated_at varchar(256) NOT NULL, type varchar(256) NOT NULL, source varchar(256) NOT NULL,
            annotations text NOT NULL, CONSTRAINT name_app_id_fn_id_unique UNIQUE (app_id, fn_id, name));
    """)
    db.execute("INSERT INTO apps VALUES (?, 'shop', ?, ?, ?, ?, NULL, '')",
               (APP_ID, json.dumps({"REGION": "eu"}), json.dumps({"example.com/team": "payments"}), STAMP, STAMP))
    fn_rows = [(FN_ID, "pay", APP_ID, fn_image, memory, 30, 30, json.dumps({"MODE": "live"}), "{}", STAMP, STAMP, ""),
               *extra_fns]
    db.executemany("INSERT INTO fns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", fn_rows)
    db.execute("INSERT INTO triggers VALUES (?, 'pay-http', ?, ?, ?, ?, 'http', '/pay', '{}')",
               (TRIGGER_ID, APP_ID, FN_ID, STAMP, STAMP))
    db.commit()
    db.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def stored(db: Path) -> tuple[list, list, list]:
    store = SQLiteStore(str(db))
    try:
        apps = (await store.list_apps()).items
        fns = (await store.list_fns()).items
        triggers = [t for a in apps for t in (await store.list_triggers(app_id=a.id)).items]
        return apps, fns, triggers
    finally:
        await store.close()


async def v2(session: aiohttp.ClientSession, method: str, url: str, body: dict | None = None) -> dict:
    async with session.request(method, url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


# --- from Fn's API, end to end ------------------------------------------------------------------------
async def test_fns_from_an_fn_api_keep_their_ids_and_are_called_at_their_old_urls(tmp_path, docker_client, echo_image):
    """An operator points `fn-core import-fn` at the running Fn, then starts fn-core on the store it wrote: the fn
    ids and trigger paths their clients hold answer, and each object reads as it did on Fn."""
    source = await start_api(load_config(env={"FN_DB_URL": f"sqlite3://{tmp_path}/fn-side.db"}, overrides={"host": "127.0.0.1"}), port=0)
    target = tmp_path / "fn-core.db"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            app = await v2(s, "POST", f"{source.url}/v2/apps", {"name": "shop", "config": {"REGION": "eu"},
                                                                 "annotations": {"example.com/team": "payments"}})
            pay = await v2(s, "POST", f"{source.url}/v2/fns", {"name": "pay", "app_id": app["id"], "image": echo_image,
                                                                "memory": 192, "config": {"MODE": "live"}})
            ship = await v2(s, "POST", f"{source.url}/v2/fns", {"name": "ship", "app_id": app["id"], "image": echo_image})
            trigger = await v2(s, "POST", f"{source.url}/v2/triggers", {"name": "pay-http", "app_id": app["id"],
                                                                         "fn_id": pay["id"], "type": "http", "source": "/pay"})
            code, out, err = await fn_core("import-fn", source.url, "--db", f"sqlite3://{target}")
            assert code == 0, err
            assert [line.split()[-1] for line in out.splitlines()[:4]] == ["created"] * 4
            assert f"imported into {target}: 4 objects from {source.url} (4 created, 0 updated, 0 unchanged)" in out
    finally:
        await source.stop(grace=1)

    platform = await start_platform(tmp_path, docker_client, env={"FN_DB_URL": f"sqlite3://{target}"})
    try:
        called = await platform.invoke(pay["id"], "to pay")
        assert (called.status, called.body) == (200, b"to pay")
        async with platform.session.post(f"{platform.url}/t/shop/pay", data=b"by trigger") as resp:
            assert (resp.status, await resp.read()) == (200, b"by trigger")
        for kind, before in (("apps", app), ("fns", pay), ("fns", ship), ("triggers", trigger)):
            now = (await platform.api("GET", f"/v2/{kind}/{before['id']}")).json()
            endpoints = ("fnproject.io/fn/invokeEndpoint", "fnproject.io/trigger/httpEndpoint")
            assert {k: v for k, v in now.items() if k != "annotations"} == {k: v for k, v in before.items() if k != "annotations"}
            assert {k: v for k, v in now.get("annotations", {}).items() if k not in endpoints} == \
                   {k: v for k, v in before.get("annotations", {}).items() if k not in endpoints}
    finally:
        await platform.stop()


async def test_the_api_is_read_page_by_page(tmp_path):
    source = await start_api(load_config(env={"FN_DB_URL": f"sqlite3://{tmp_path}/fn-side.db"}, overrides={"host": "127.0.0.1"}), port=0)
    try:
        async with aiohttp.ClientSession() as s:
            for a in range(5):
                app = await v2(s, "POST", f"{source.url}/v2/apps", {"name": f"app{a}"})
                for f in range(3):
                    fn = await v2(s, "POST", f"{source.url}/v2/fns", {"name": f"fn{f}", "app_id": app["id"], "image": "img:1"})
                    await v2(s, "POST", f"{source.url}/v2/triggers", {"name": f"t{f}", "app_id": app["id"], "fn_id": fn["id"],
                                                                      "type": "http", "source": f"/t{f}"})
        found = await read_api(source.url, {}, per_page=2)
    finally:
        await source.stop(grace=1)
    assert sorted(a["name"] for a in found.apps) == [f"app{a}" for a in range(5)]
    assert len({f["id"] for f in found.fns}) == 15
    assert len({t["id"] for t in found.triggers}) == 15


# --- from Fn's SQLite file ----------------------------------------------------------------------------
async def test_fns_sqlite_file_is_imported_and_left_as_it_was(tmp_path):
    fn_db = fn_database(tmp_path / "fn.db")
    before = digest(fn_db)
    target = tmp_path / "fn-core.db"
    code, out, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}")
    assert code == 0, err
    assert "3 objects" in out and "(3 created, 0 updated, 0 unchanged)" in out
    apps, fns, triggers = await stored(target)
    assert [(a.id, a.name, a.config, a.annotations, a.created_at) for a in apps] == \
           [(APP_ID, "shop", {"REGION": "eu"}, {"example.com/team": "payments"}, STAMP)]
    assert [(f.id, f.app_id, f.name, f.memory, f.config, f.updated_at) for f in fns] == \
           [(FN_ID, APP_ID, "pay", 256, {"MODE": "live"}, STAMP)]
    assert [(t.id, t.fn_id, t.name, t.source) for t in triggers] == [(TRIGGER_ID, FN_ID, "pay-http", "/pay")]
    assert digest(fn_db) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("fn.db")) == ["fn.db"]  # no WAL of ours


async def test_a_node_given_fns_database_stops_and_names_the_import(tmp_path):
    """Fn's default FN_DB_URL is ./data/fn.db, as ours: a node started where Fn ran would answer 500 to everything."""
    fn_db = fn_database(tmp_path / "fn.db")
    before = digest(fn_db)
    code, _, err = await fn_core("api", "--host", "127.0.0.1", "--port", str(free_port()), "--db", f"sqlite3://{fn_db}")
    assert code == 2
    assert f"the store {fn_db} is Fn's database" in err
    assert f"fn-core import-fn sqlite3://{fn_db} --db sqlite3:///path/to/fn-core.db" in err
    assert digest(fn_db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fn.db"]

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE apps (id TEXT, title TEXT)")
    with pytest.raises(Exception, match=f"the store {other} was made by another program \\(its tables apps \\(id, title\\) "):
        SQLiteStore(str(other))
    unrelated = tmp_path / "unrelated.db"
    with sqlite3.connect(unrelated) as db:
        db.execute("CREATE TABLE users (id TEXT)")
    before = digest(unrelated)
    with pytest.raises(Exception, match="was made by another program \\(its tables users are not fn-core's\\)"):
        SQLiteStore(str(unrelated))
    assert digest(unrelated) == before


async def test_a_store_file_sqlite_cannot_read_stops_start_up_with_one_line(tmp_path):
    (tmp_path / "notes.db").write_text("not a database\n")
    code, _, err = await fn_core("api", "--host", "127.0.0.1", "--port", str(free_port()), "--db", f"sqlite3://{tmp_path}/notes.db")
    assert (code, err.splitlines()[-1]) == (2, f"fn-core: error: the store {tmp_path}/notes.db cannot be used: file is not a database")


async def test_the_same_file_is_not_both_source_and_store(tmp_path):
    fn_db = fn_database(tmp_path / "fn.db")
    code, _, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{fn_db}")
    assert code == 2 and "is the store to write to" in err


# --- refusals: all or nothing -------------------------------------------------------------------------
async def test_objects_fn_core_refuses_are_all_named_and_nothing_is_written(tmp_path):
    bad_fns = (("01HQ00000000000000000FN009", "no-image", APP_ID, "", 128, 30, 30, "{}", "{}", STAMP, STAMP, ""),)
    fn_db = fn_database(tmp_path / "fn.db", memory=-5, extra_fns=bad_fns)
    target = tmp_path / "fn-core.db"
    code, out, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}")
    assert code == 2, out
    assert "nothing was imported: fn-core refuses 3 of the objects read" in err
    assert f"fn 'pay' ({FN_ID}): memory -5: not what Fn's API takes (it answers 'Invalid JSON')" in err
    assert "fn 'no-image' (01HQ00000000000000000FN009): Missing image on Fn" in err
    assert f"trigger 'pay-http' ({TRIGGER_ID}): its fn {FN_ID} is refused (above)" in err
    assert not target.exists()  # checked before the store is opened: no empty file left behind


async def test_a_name_another_id_holds_here_is_refused_and_nothing_is_written(tmp_path):
    from fn_core.models import App

    target = tmp_path / "fn-core.db"
    store = SQLiteStore(str(target))
    mine = await store.insert_app(App(name="shop"))
    await store.close()
    fn_db = fn_database(tmp_path / "fn.db")
    code, _, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}")
    assert code == 2
    assert "nothing was imported: 3 of the objects meet others of the store" in err
    assert f"app 'shop' ({APP_ID}): the name 'shop' is app {mine.id}'s (one of this store the import does not have)" in err
    assert f"fn 'pay' ({FN_ID}): its app {APP_ID} is refused (above)" in err
    assert f"trigger 'pay-http' ({TRIGGER_ID}): its fn {FN_ID} is refused (above)" in err
    assert "--mirror deletes from the store everything the source does not have, objects made here included" in err
    apps, fns, triggers = await stored(target)
    assert ([a.id for a in apps], fns, triggers) == ([mine.id], [], [])


async def test_a_second_import_brings_what_changed_and_a_dry_run_writes_nothing(tmp_path):
    fn_db = fn_database(tmp_path / "fn.db")
    target = tmp_path / "fn-core.db"
    store = SQLiteStore(str(target))
    try:
        first = await import_fn(store, checked(read_fn_sqlite(str(fn_db))))
        assert [i.outcome for i in first] == ["created"] * 3
        with sqlite3.connect(fn_db) as db:  # changed on Fn since
            db.execute("UPDATE fns SET memory = 512, updated_at = ? WHERE id = ?", (LATER, FN_ID))
        objects = checked(read_fn_sqlite(str(fn_db)))
        dry = await import_fn(store, objects, dry_run=True)
        assert [(i.kind, i.outcome) for i in dry] == [("app", "unchanged"), ("fn", "updated"), ("trigger", "unchanged")]
        assert (await store.get_fn(FN_ID)).memory == 256
        await import_fn(store, objects)
        fn = await store.get_fn(FN_ID)
        assert (fn.memory, fn.created_at, fn.updated_at) == (512, STAMP, LATER)
    finally:
        await store.close()
    before = digest(target)
    code, out, _ = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}", "--dry-run")
    assert code == 0 and "dry run, nothing written: 3 objects" in out and "(would be: 0 created, 0 updated, 3 unchanged)" in out
    assert digest(target) == before


async def test_a_dry_run_or_a_refused_import_leaves_no_new_store(tmp_path):
    fn_db = fn_database(tmp_path / "fn.db")
    target = tmp_path / "new" / "dir" / "fn-core.db"
    code, out, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}", "--dry-run")
    assert code == 0, err
    assert "trigger  pay-http 01HQ0000000000000000TRG001  would be created" in out
    assert not (tmp_path / "new").exists()

    with sqlite3.connect(fn_db) as db:  # Fn's UpdateTrigger does not look for a taken source: two triggers may share one
        db.execute("INSERT INTO triggers VALUES ('01HQ0000000000000000TRG009', 'again', ?, ?, ?, ?, 'http', '/pay', '{}')",
                   (APP_ID, FN_ID, STAMP, STAMP))
    code, _, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}")
    assert code == 2
    assert (f"trigger 'again' (01HQ0000000000000000TRG009): the http source '/pay' in app {APP_ID} is trigger "
            f"{TRIGGER_ID}'s (an imported one)") in err
    assert "--mirror" not in err  # no store object in the way: no hint of one
    assert not (tmp_path / "new").exists()  # the file made for it is removed, its WAL too, and the directories made


async def test_mirror_makes_the_store_fns_copy_and_sources_may_move_between_triggers(tmp_path):
    """Fn is the source of truth until the traffic moves: an fn deleted and deployed again (a new id, the same name)
    on Fn meets the old one in the store, until --mirror deletes what Fn no longer has. Triggers that swapped
    sources on Fn are checked as the import leaves them."""
    second_fn = (OTHER_FN_ID, "ship", APP_ID, "fnproject/hello:0.0.1", 128, 30, 30, "{}", "{}", STAMP, STAMP, "")
    fn_db = fn_database(tmp_path / "fn.db", extra_fns=(second_fn,))
    with sqlite3.connect(fn_db) as db:  # a second trigger with the same name: Fn's names are unique per fn
        db.execute("INSERT INTO triggers VALUES ('01HQ0000000000000000TRG002', 'pay-http', ?, ?, ?, ?, 'http', '/ship', '{}')",
                   (APP_ID, OTHER_FN_ID, STAMP, STAMP))
    target = tmp_path / "fn-core.db"
    code, out, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}")
    assert code == 0, err
    with sqlite3.connect(fn_db) as db:
        db.execute("UPDATE triggers SET source = CASE source WHEN '/pay' THEN '/ship' ELSE '/pay' END, updated_at = ?", (LATER,))
        db.execute("DELETE FROM fns WHERE id = ?", (OTHER_FN_ID,))  # `fn delete` and `fn deploy` again: a new id
        db.execute("INSERT INTO fns VALUES ('01HQ00000000000000000FN003', 'ship', ?, 'fnproject/hello:0.0.2', 128, 30, 30, "
                   "'{}', '{}', ?, ?, '')", (APP_ID, LATER, LATER))
        db.execute("UPDATE triggers SET fn_id = '01HQ00000000000000000FN003' WHERE fn_id = ?", (OTHER_FN_ID,))
    code, _, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}")
    assert code == 2
    assert f"fn 'ship' (01HQ00000000000000000FN003): the name 'ship' in app {APP_ID} is fn {OTHER_FN_ID}'s (one of" in err
    code, out, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}", "--mirror", "--dry-run")
    assert code == 0, err
    assert f"fn       ship     {OTHER_FN_ID}  would be deleted" in out
    assert "dry run, nothing written: 5 objects" in out and "(would be: 1 created, 2 updated, 2 unchanged, 1 deleted)" in out
    code, out, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}", "--mirror")
    assert code == 0, err
    assert f"fn       ship     {OTHER_FN_ID}  deleted" in out
    assert "(1 created, 2 updated, 2 unchanged, 1 deleted)" in out
    _, fns, triggers = await stored(target)
    assert sorted(f.id for f in fns) == [FN_ID, "01HQ00000000000000000FN003"]
    assert {(t.fn_id, t.source) for t in triggers} == {(FN_ID, "/ship"), ("01HQ00000000000000000FN003", "/pay")}


async def test_fns_odd_files_are_read_as_they_are(tmp_path):
    """A path with '#' (no URI fragment), a Go driver's options after '?', an old Fn's `format` column, and a file in WAL
    mode no one has open: read without a WAL or its index left beside it."""
    odd = tmp_path / "fn #1.db"
    fn_database(odd)
    with sqlite3.connect(odd) as db:
        db.execute("PRAGMA journal_mode=WAL")
    assert not (tmp_path / "fn #1.db-wal").exists()  # checkpointed and removed at the close
    before = digest(odd)
    found = read_fn_sqlite(f"{odd}?_busy_timeout=5000")
    assert [f["id"] for f in found.fns] == [FN_ID]
    assert digest(odd) == before and sorted(p.name for p in tmp_path.iterdir()) == ["fn #1.db"]

    with sqlite3.connect(odd) as db:
        db.execute("ALTER TABLE fns ADD format varchar(16)")
        db.execute("UPDATE fns SET format = 'json'")
    with pytest.raises(ImportFailed, match=f"fn 'pay' \\({FN_ID}\\): format 'json': fn-core runs http-stream functions only"):
        checked(read_fn_sqlite(str(odd)))
    with sqlite3.connect(odd) as db:
        db.execute("UPDATE fns SET format = 'http-stream'")
    assert [f.id for f in checked(read_fn_sqlite(str(odd)))[1]] == [FN_ID]


# --- what an import must never do ----------------------------------------------------------------------
async def test_mirror_refuses_a_source_with_no_apps(tmp_path):
    """A wrong address or a token that sees nothing reads as an Fn with no apps: mirroring it would empty the store."""
    target = tmp_path / "fn-core.db"
    code, _, err = await fn_core("import-fn", f"sqlite3://{fn_database(tmp_path / 'fn.db')}", "--db", f"sqlite3://{target}")
    assert code == 0, err
    empty = fn_database(tmp_path / "empty.db")
    with sqlite3.connect(empty) as db:  # the fresh database of another Fn
        db.executescript("DELETE FROM triggers; DELETE FROM fns; DELETE FROM apps;")
    before = digest(target)
    for dry_run in ((), ("--dry-run",)):
        code, out, err = await fn_core("import-fn", f"sqlite3://{empty}", "--db", f"sqlite3://{target}", "--mirror", *dry_run)
        assert code == 2 and out == ""
        assert "fn-core: error: --mirror with a source that has no apps would empty the store: nothing was changed" in err
    assert digest(target) == before
    assert [len(objects) for objects in await stored(target)] == [1, 1, 1]


class KeepsPay:
    @hookimpl
    def validate_delete(self, app, fn, trigger):
        if trigger is None and fn is not None and fn.name == "pay":
            raise APIError(f"fn {fn.name} is in use", status=409)


async def test_mirror_deletes_only_what_the_plugins_let_go(tmp_path):
    found = read_fn_sqlite(str(fn_database(tmp_path / "fn.db")))
    pm = build_plugin_manager(KeepsPay())
    store = SQLiteStore(str(tmp_path / "fn-core.db"))
    try:
        await import_fn(store, checked(found, pm.hook), pm.hook)
        without_the_fn = checked(Found(apps=found.apps, fns=[], triggers=[]), pm.hook)  # deleted on Fn since
        for dry_run in (True, False):
            with pytest.raises(ImportFailed, match=rf"nothing was imported: plugins keep 1 of the objects --mirror would "
                                                   rf"delete\n  fn 'pay' \({FN_ID}\): fn pay is in use \(plugin KeepsPay's "
                                                   rf"validate_delete\)$"):
                await import_fn(store, without_the_fn, pm.hook, dry_run=dry_run, mirror=True)
        assert (await store.get_fn(FN_ID)).name == "pay"
        assert (await store.get_trigger(TRIGGER_ID)).fn_id == FN_ID  # let go by the plugin, kept with the rest
        changed = checked(Found(apps=found.apps, fns=found.fns, triggers=[]), pm.hook)  # only the trigger deleted on Fn
        done = await import_fn(store, changed, pm.hook, mirror=True)
        assert [(i.kind, i.outcome) for i in done] == [("app", "unchanged"), ("fn", "unchanged"), ("trigger", "deleted")]
    finally:
        await store.close()


async def test_an_app_and_an_fn_of_one_id_keep_their_names(tmp_path):
    """An import parks the names of the ids it brings while it writes, table by table: an fn whose id an imported app
    also has keeps its name."""
    store = SQLiteStore(str(tmp_path / "fn-core.db"))
    try:
        fn = {"id": "SAME", "name": "pay", "app_id": APP_ID, "image": "img:1"}
        await import_fn(store, checked(Found(apps=[{"id": APP_ID, "name": "shop"}], fns=[fn], triggers=[])))
        await import_fn(store, checked(Found(apps=[{"id": "SAME", "name": "other"}], fns=[], triggers=[])))
        assert [f.id for f in (await store.list_fns(app_id=APP_ID, name="pay")).items] == ["SAME"]
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "fn-core.db") as db:
        for table, column in (("apps", "name"), ("fns", "name"), ("triggers", "name"), ("triggers", "source")):
            assert db.execute(f"SELECT count(*) FROM {table} WHERE instr({column}, char(0))").fetchone() == (0,)
    db.close()


async def test_each_conflict_is_named_also_of_an_object_whose_fn_is_refused(tmp_path):
    """An operator fixes what the import lists and runs it again: all an object meets is listed at once."""
    store = SQLiteStore(str(tmp_path / "fn-core.db"))
    try:
        await import_fn(store, checked(read_fn_sqlite(str(fn_database(tmp_path / "fn.db")))))
        ship = await store.insert_fn(Fn(name="ship", app_id=APP_ID, image="img:1"))  # made here, not on Fn
        here = await store.insert_trigger(Trigger(name="ship-http", app_id=APP_ID, fn_id=ship.id, source="/ship"))
        fn = {"id": OTHER_FN_ID, "name": "ship", "app_id": APP_ID, "image": "img:2"}
        trigger = {"id": "01HQ0000000000000000TRG002", "name": "ship", "app_id": APP_ID, "fn_id": OTHER_FN_ID,
                   "type": "http", "source": "/ship"}
        found = Found(apps=[{"id": APP_ID, "name": "shop"}], fns=[fn], triggers=[trigger])
        with pytest.raises(ImportConflict) as conflict:
            await import_fn(store, checked(found))
        assert conflict.value.message.splitlines() == [
            "nothing was imported: 2 of the objects meet others of the store",
            f"  fn 'ship' ({OTHER_FN_ID}): the name 'ship' in app {APP_ID} is fn {ship.id}'s (one of this store the "
            "import does not have)",
            f"  trigger 'ship' (01HQ0000000000000000TRG002): its fn {OTHER_FN_ID} is refused (above)",
            f"  trigger 'ship' (01HQ0000000000000000TRG002): the http source '/ship' in app {APP_ID} is trigger "
            f"{here.id}'s (one of this store the import does not have)",
        ]
    finally:
        await store.close()


async def test_an_import_cancelled_while_it_writes_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) while the import's transaction runs: it stops where it is and rolls back."""
    fn_db = fn_database(tmp_path / "fn.db")
    target = tmp_path / "fn-core.db"
    store = SQLiteStore(str(target))
    try:
        await import_fn(store, checked(read_fn_sqlite(str(fn_db))))
        with sqlite3.connect(fn_db) as db:  # changed on Fn since
            db.execute("UPDATE apps SET name = 'shop2', updated_at = ?", (LATER,))
        before = await stored(target)
        writing, go_on = threading.Event(), threading.Event()
        put = sqlite._Import._put

        def first_put_waits(self, *args):
            writing.set()  # the names are parked by now: the store holds what only a rollback puts back
            go_on.wait(10)
            return put(self, *args)

        monkeypatch.setattr(sqlite._Import, "_put", first_put_waits)
        task = asyncio.create_task(import_fn(store, checked(read_fn_sqlite(str(fn_db)))))
        assert await asyncio.to_thread(writing.wait, 10)
        task.cancel()
        await asyncio.sleep(0.1)  # the cancel reached the store, which stops the transaction
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await stored(target) == before
        assert (await store.get_app(APP_ID)).name == "shop"  # the store goes on serving
    finally:
        await store.close()


async def test_an_import_stopped_by_a_signal_says_so_and_leaves_nothing(tmp_path):
    reading, release = asyncio.Event(), asyncio.Event()

    async def slow_apps(request: web.Request) -> web.Response:  # an Fn that takes its time to answer
        reading.set()
        await asyncio.wait_for(release.wait(), 60)
        return web.json_response({"items": []})

    app = web.Application()
    app.add_routes([web.get("/v2/apps", slow_apps)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    target = tmp_path / "new" / "fn-core.db"
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            reading.clear()
            proc = await asyncio.create_subprocess_exec(
                FN_CORE, "import-fn", f"http://127.0.0.1:{port}", "--db", f"sqlite3://{target}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            await asyncio.wait_for(reading.wait(), 60)
            proc.send_signal(signum)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 128 + signum
            assert (out, err.decode()) == (b"", f"fn-core: error: stopped by {signum.name}: nothing was imported\n")
            assert not (tmp_path / "new").exists()
    finally:
        release.set()
        await runner.cleanup()


async def test_a_dry_run_changes_nothing_in_a_store_an_earlier_fn_core_made(tmp_path, as_made_before_trigger_names_per_fn):
    """A dry run works on a copy: not even the schema of a store an earlier fn-core made is brought up to date."""
    fn_db = fn_database(tmp_path / "fn.db")
    target = tmp_path / "fn-core.db"
    code, _, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}")
    assert code == 0, err
    as_made_before_trigger_names_per_fn(target)
    before, files = digest(target), sorted(p.name for p in tmp_path.iterdir())
    code, out, err = await fn_core("import-fn", f"sqlite3://{fn_db}", "--db", f"sqlite3://{target}", "--dry-run")
    assert code == 0, err
    assert "(would be: 0 created, 0 updated, 3 unchanged)" in out
    assert digest(target) == before and sorted(p.name for p in tmp_path.iterdir()) == files


# --- plugins ------------------------------------------------------------------------------------------
class OnlyOurRegistry:
    @hookimpl
    def validate_fn(self, app, fn):
        if not fn.image.startswith("registry.example.com/"):
            raise APIError(f"image {fn.image!r} is not from registry.example.com", status=400)


class Heard:
    def __init__(self) -> None:
        self.changes: list[tuple[str, str, str]] = []

    @hookimpl
    def object_changed(self, action, app, fn, trigger):
        what = trigger or fn or app
        self.changes.append((action, type(what).__name__, what.id))


async def test_plugins_check_imported_objects_and_hear_them_stored(tmp_path):
    found = read_fn_sqlite(str(fn_database(tmp_path / "fn.db")))
    with pytest.raises(ImportFailed, match=r"fn 'pay' .*: image 'fnproject/hello:0.0.1' is not from registry.example.com "
                                           r"\(plugin OnlyOurRegistry's validate_fn\)"):
        checked(found, build_plugin_manager(OnlyOurRegistry()).hook)

    heard = Heard()
    pm = build_plugin_manager(heard)
    store = SQLiteStore(str(tmp_path / "fn-core.db"))
    try:
        await import_fn(store, checked(found, pm.hook), pm.hook)
        assert heard.changes == [("created", "App", APP_ID), ("created", "Fn", FN_ID), ("created", "Trigger", TRIGGER_ID)]
        await import_fn(store, checked(found, pm.hook), pm.hook)
        assert len(heard.changes) == 3  # nothing changed: nothing told
        without_the_fn = Found(apps=found.apps, fns=[], triggers=[])  # deleted on Fn since, its trigger with it
        await import_fn(store, checked(without_the_fn, pm.hook), pm.hook, mirror=True)
        assert heard.changes[3:] == [("deleted", "Trigger", TRIGGER_ID), ("deleted", "Fn", FN_ID)]
    finally:
        await store.close()


# --- sources that cannot be read ----------------------------------------------------------------------
async def fn_behind_a_proxy(token: str, *, cursor_loop: bool = False) -> tuple[web.AppRunner, str]:
    """A stand-in for an Fn whose API wants a bearer token, with one app and nothing in it (``cursor_loop``: its app
    list ends every page with the same cursor)."""

    async def apps(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"message": "Invalid authentication"}, status=401)
        page = {"items": [{"id": APP_ID, "name": "shop", "created_at": STAMP, "updated_at": STAMP}]}
        return web.json_response({**page, "next_cursor": "c2hvcA"} if cursor_loop else page)

    async def empty(request: web.Request) -> web.Response:
        return web.json_response({"items": []})

    app = web.Application()
    app.add_routes([web.get("/v2/apps", apps), web.get("/v2/fns", empty), web.get("/v2/triggers", empty)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_a_source_that_cannot_be_read_is_one_clear_line_and_leaves_no_store(tmp_path):
    target = tmp_path / "fn-core.db"
    nobody = f"http://127.0.0.1:{free_port()}"
    code, _, err = await fn_core("import-fn", nobody, "--db", f"sqlite3://{target}")
    assert code == 2 and f"fn-core: error: GET {nobody}/v2/apps: Cannot connect" in err

    runner, url = await fn_behind_a_proxy("s3cret")
    try:
        code, _, err = await fn_core("import-fn", url, "--db", f"sqlite3://{target}")
        assert code == 2 and f"GET {url}/v2/apps: 401 Invalid authentication" in err
        assert not target.exists()
        code, out, err = await fn_core("import-fn", url, "--db", f"sqlite3://{target}", "-H", "Authorization: Bearer s3cret")
        assert code == 0, err
        assert "1 object from" in out
    finally:
        await runner.cleanup()
    assert [a.id for a in (await stored(target))[0]] == [APP_ID]

    runner, url = await fn_behind_a_proxy("t", cursor_loop=True)
    try:
        with pytest.raises(ImportFailed, match="gave the cursor 'c2hvcA' twice"):
            await read_api(url, {"Authorization": "Bearer t"})
    finally:
        await runner.cleanup()


def test_a_found_fn_without_its_app_is_refused():
    found = Found(apps=[], fns=[{"id": FN_ID, "name": "pay", "app_id": APP_ID, "image": "img:1"}], triggers=[])
    with pytest.raises(ImportFailed, match=f"fn 'pay' \\({FN_ID}\\): its app {APP_ID} is not among the apps read"):
        checked(found)
