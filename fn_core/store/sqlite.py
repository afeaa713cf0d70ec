"""The embedded store: stdlib sqlite3 on one worker thread.

Every statement runs on a single-thread executor so the event loop never blocks on disk and
sqlite3's connection is only ever used by one thread. The invoke path does not come here per
call: it reads through `fn_core.store.cache.CachedLookup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs

from fn_core.errors import ConfigError
from fn_core.models import App, Fn, Trigger, now_rfc3339
from fn_core.store.base import (
    AppExists,
    AppNotFound,
    Change,
    FnExists,
    FnNotFound,
    ImportConflict,
    Imported,
    Page,
    StoreFailed,
    TriggerExists,
    TriggerFnIDNotSameApp,
    TriggerNotFound,
    TriggerSourceExists,
    decode_cursor,
    encode_cursor,
    new_id,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

#: SQLite's result codes about the database file, not the request: its disk full, its I/O failing, the file read-only,
#: unopenable or damaged, or held by another process past the wait. The request is answered with `StoreFailed`
#: (one warning line); any other sqlite3 error is a bug of ours, and keeps its traceback
FILE_TROUBLE = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_CORRUPT", "SQLITE_NOTADB",
                "SQLITE_BUSY", "SQLITE_LOCKED")

_TRIGGERS_TABLE = """CREATE TABLE IF NOT EXISTS {table} (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, fn_id TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
    source TEXT NOT NULL, doc TEXT NOT NULL, UNIQUE (app_id, fn_id, name), UNIQUE (app_id, type, source));"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fns (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL, UNIQUE (app_id, name));
""" + _TRIGGERS_TABLE.format(table="triggers")
#: the triggers table of a store made before a trigger's name was unique per fn, as in Fn (it was per app)
_TRIGGER_NAMES_PER_APP = "UNIQUE (app_id, name), UNIQUE (app_id, type, source)"

#: each table's columns as `_SCHEMA` makes them: a file whose tables have others was made by another program
_COLUMNS = {
    "apps": ("id", "name", "doc"),
    "fns": ("id", "app_id", "name", "doc"),
    "triggers": ("id", "app_id", "fn_id", "name", "type", "source", "doc"),
}


class NotOurDatabase(ConfigError):
    """``FN_DB_URL`` names a file whose tables another program made (Fn's own database, most likely): fn-core
    stops before it changes anything in it, rather than answer every request with a 500."""


def _check_tables(db: sqlite3.Connection, path: str) -> None:
    foreign = {}
    for table, ours in _COLUMNS.items():
        columns = tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})"))
        if columns and columns != ours:
            foreign[table] = columns
    if "image" in foreign.get("fns", ()) or "config" in foreign.get("apps", ()):
        table, columns = next(iter(foreign.items()))
        raise NotOurDatabase(
            f"the store {path} is Fn's database (its {table} table has the columns {', '.join(columns)}); fn-core "
            f"keeps apps, fns and triggers in tables of its own. Copy them, with their ids, into a new file: "
            f"`fn-core import-fn sqlite3://{path} --db sqlite3:///path/to/fn-core.db`, then set FN_DB_URL to that file"
        )
    others = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if name not in _COLUMNS and not name.startswith("sqlite_")]
    if foreign or others:
        seen = [f"{table} ({', '.join(columns)})" for table, columns in foreign.items()] + others
        raise NotOurDatabase(f"the store {path} was made by another program (its tables {', '.join(seen)} are not "
                             f"fn-core's): set FN_DB_URL to a file of fn-core's own (a new one is made)")


def _check_unchanged(path: str) -> None:
    """`_check_tables` on a connection that cannot change the file: a read-write one would (its close checkpoints a
    WAL another program left). A schema only in such a WAL is not seen here, and is by the check that follows."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro&immutable=1", uri=True)
    try:
        _check_tables(db, path)
    finally:
        db.close()


def read_only(path: str) -> sqlite3.Connection:
    """A connection that reads ``path`` and changes nothing beside it. A file in WAL mode without a WAL beside it (no
    writer has it open) is read as immutable: a read-only reader would otherwise leave a WAL and its index next to it,
    owned by whoever read it. `sqlite3.Error` when SQLite cannot open it."""
    with open(path, "rb") as f:
        header = f.read(20)
    idle_wal = len(header) == 20 and header[18] == 2 and not os.path.exists(f"{path}-wal")  # byte 18: 2 = WAL mode
    return sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro{'&immutable=1' if idle_wal else ''}", uri=True,
                           isolation_level=None, check_same_thread=False)


#: how long an open waits for another process that holds the file while it sets WAL mode (sqlite3's busy timeout)
BUSY_S = 5.0


def _use_wal(db: sqlite3.Connection) -> None:
    """WAL mode, waiting out another process that opens the file at the same moment: SQLite answers this pragma's
    SQLITE_BUSY at once, not after its busy timeout as it does for other statements."""
    deadline = time.monotonic() + BUSY_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY" or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _make_schema(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(_SCHEMA)
    _migrate(db)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store an earlier fn-core made to this schema (each step in one transaction, checked again in it: other
    nodes may open the file at the same time)."""
    sql = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'triggers'"
    if _TRIGGER_NAMES_PER_APP not in db.execute(sql).fetchone()[0]:
        return
    with _transaction(db):
        if _TRIGGER_NAMES_PER_APP in db.execute(sql).fetchone()[0]:
            db.execute(_TRIGGERS_TABLE.format(table="triggers_per_fn"))
            db.execute("INSERT INTO triggers_per_fn SELECT id, app_id, fn_id, name, type, source, doc FROM triggers")
            db.execute("DROP TABLE triggers")
            db.execute("ALTER TABLE triggers_per_fn RENAME TO triggers")


class _DryRun(Exception):
    """Rolls back an import that was only to be checked, with what it would have done."""

    def __init__(self, outcomes: list[Imported]) -> None:
        super().__init__()
        self.outcomes = outcomes


def _ids(apps: list[App], fns: list[Fn], triggers: list[Trigger]) -> dict[str, set[str]]:
    """The ids of each table's objects: each table's own (an fn may have the id of an app)."""
    return {"apps": {a.id for a in apps}, "fns": {f.id for f in fns}, "triggers": {t.id for t in triggers}}


class _Stopped(Exception):
    """An import whose caller was cancelled (Ctrl-C, SIGTERM) while it wrote: its transaction is rolled back."""


def _go_on(stop: threading.Event) -> None:
    if stop.is_set():
        raise _Stopped()


#: what an import parks before it writes (`_Import`): the columns whose values are unique within their scope
_UNIQUE_COLUMNS = {"apps": ("name",), "fns": ("name",), "triggers": ("name", "source")}


class _Import:
    """`SQLiteStore.import_objects`'s writes, in its transaction. The rows of the ids imported first get names (and
    sources) no one else has, so that each object is checked against the others as the import leaves them, not as
    they were: a trigger may take a source another imported trigger gives up. Every row parked is written again
    (`_put`) or the transaction is rolled back."""

    def __init__(self, db: sqlite3.Connection, imported: dict[str, set[str]], stop: threading.Event) -> None:
        self.db = db
        self.imported = imported  # per table
        self.stop = stop
        self.problems: list[str] = []
        self.refused: set[tuple[str, str]] = set()  # (kind, id)
        for table, columns in _UNIQUE_COLUMNS.items():
            sets = ", ".join(f"{c} = char(0) || id" for c in columns)  # NUL: in no name or source the API takes
            db.executemany(f"UPDATE {table} SET {sets} WHERE id = ?", [(i,) for i in imported[table]])

    def write(self, apps: list[App], fns: list[Fn], triggers: list[Trigger]) -> list[Imported]:
        """Each object checked in full (all it meets is listed, also when its app or fn is refused), then written."""
        done = []
        for app in apps:
            if self._free(app, "apps", "name = ?", (app.name,), f"the name {app.name!r}"):
                done.append(self._put("app", "apps", app, {"name": app.name}))
        for fn in fns:
            checks = [self._belongs(fn, "SELECT 1 FROM apps WHERE id = ?", (fn.app_id,), "app", fn.app_id),
                      self._free(fn, "fns", "app_id = ? AND name = ?", (fn.app_id, fn.name),
                                 f"the name {fn.name!r} in app {fn.app_id}")]
            if all(checks):
                done.append(self._put("fn", "fns", fn, {"app_id": fn.app_id, "name": fn.name}))
        for t in triggers:
            checks = [self._belongs(t, "SELECT 1 FROM fns WHERE id = ? AND app_id = ?", (t.fn_id, t.app_id), "fn", t.fn_id),
                      self._free(t, "triggers", "app_id = ? AND fn_id = ? AND name = ?", (t.app_id, t.fn_id, t.name),
                                 f"the name {t.name!r} for fn {t.fn_id}"),
                      self._free(t, "triggers", "app_id = ? AND type = ? AND source = ?", (t.app_id, t.type, t.source),
                                 f"the {t.type} source {t.source!r} in app {t.app_id}")]
            if all(checks):
                columns = {"app_id": t.app_id, "fn_id": t.fn_id, "name": t.name, "type": t.type, "source": t.source}
                done.append(self._put("trigger", "triggers", t, columns))
        if self.problems:
            listed = "\n  ".join(self.problems)
            raise ImportConflict(f"nothing was imported: {len(self.refused)} of the objects meet others of the store\n  {listed}")
        return done

    def _refuse(self, obj: Any, why: str) -> bool:
        kind = type(obj).__name__.lower()
        self.problems.append(f"{kind} {obj.name!r} ({obj.id}): {why}")
        self.refused.add((kind, obj.id))
        return False

    def _free(self, obj: Any, table: str, where: str, args: tuple, what: str) -> bool:
        row = self.db.execute(f"SELECT id FROM {table} WHERE {where} AND id != ?", (*args, obj.id)).fetchone()
        if row is None:
            return True
        kind = table[:-1]
        whose = "an imported one" if row[0] in self.imported[table] else "one of this store the import does not have"
        return self._refuse(obj, f"{what} is {kind} {row[0]}'s ({whose})")

    def _belongs(self, obj: Any, sql: str, args: tuple, kind: str, ident: str) -> bool:
        if self.db.execute(sql, args).fetchone() is not None:
            return True
        if (kind, ident) in self.refused:
            return self._refuse(obj, f"its {kind} {ident} is refused (above)")
        return self._refuse(obj, f"its {kind} {ident} is neither imported nor in this store" +
                            (f" (in its app {obj.app_id})" if kind == "fn" else ""))

    def _put(self, kind: str, table: str, obj: Any, columns: dict[str, str]) -> Imported:
        _go_on(self.stop)
        doc = _doc(obj)
        row = self.db.execute(f"SELECT doc FROM {table} WHERE id = ?", (obj.id,)).fetchone()
        if row is None:
            names = ", ".join(("id", *columns, "doc"))
            self.db.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * (len(columns) + 2))})",
                            (obj.id, *columns.values(), doc))
            return Imported(kind, obj, "created")
        sets = ", ".join(f"{c} = ?" for c in (*columns, "doc"))  # also when unchanged: its columns were parked
        self.db.execute(f"UPDATE {table} SET {sets} WHERE id = ?", (*columns.values(), doc, obj.id))
        return Imported(kind, obj, "unchanged" if row[0] == doc else "updated")


def _doc(obj: Any) -> str:
    return json.dumps(attrs.asdict(obj), separators=(",", ":"))


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE: the write lock from the start, so a read-change-write is not interleaved with another
    # process's on the same file (this process's store jobs already run one at a time)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")  # inside: a COMMIT refused (the disk full, the file busy) may leave the transaction open
    except BaseException:
        # SQLite ends it itself on some errors (a full disk); a ROLLBACK then, or one that fails, would hide the error
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


@contextmanager
def _made_ready(db: sqlite3.Connection, path: str) -> Iterator[None]:
    """Preparing ``db`` as the store ``path``: closed on any failure, and a SQLite error (not a SQLite file, a read-only
    one, a full disk) one `ConfigError` line at start-up."""
    try:
        yield
    except sqlite3.Error as exc:
        db.close()
        raise ConfigError(f"the store {path} cannot be used: {exc}") from None
    except BaseException:
        db.close()
        raise


class SQLiteStore:
    """`fn_core.store.base.Store` on a SQLite file (WAL mode)."""

    def __init__(self, path: str, *, in_memory_copy: bool = False) -> None:
        """``in_memory_copy``: work on a copy of the file, in memory (what a dry run changes is never written, and a
        store made by an earlier fn-core is brought to this schema only in the copy)."""
        self.path = path
        if path != ":memory:" and not in_memory_copy:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fn-store")
        try:
            self._db = self._executor.submit(self._open_copy if in_memory_copy else self._open, path).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:  # a directory, a file this user may not open
            raise ConfigError(f"the store {path} cannot be opened: {exc}") from None
        with _made_ready(db, path):
            _check_unchanged(path)
            _check_tables(db, path)  # before anything is written to it (WAL mode is a change of the file too)
            _use_wal(db)
            _make_schema(db)
        return db

    @staticmethod
    def _open_copy(path: str) -> sqlite3.Connection:
        try:
            source = read_only(path)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"the store {path} cannot be opened: {exc}") from None
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            with _made_ready(db, path):
                _check_tables(source, path)
                source.backup(db)
                _make_schema(db)
        finally:
            source.close()
        return db

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._db)
        except sqlite3.Error as exc:
            trouble = getattr(exc, "sqlite_errorname", "")
            if not trouble.startswith(FILE_TROUBLE):
                raise
            log.warning("the store's database failed a request: %s (%s) path=%s; nothing was changed", exc, trouble, self.path)
            raise StoreFailed(f"the store failed: {exc}; nothing was changed") from None

    async def close(self) -> None:
        await self._run(lambda db: db.close())
        self._executor.shutdown(wait=True)

    # --- apps ------------------------------------------------------------------------------
    async def insert_app(self, app: App) -> App:
        now = now_rfc3339()
        app = attrs.evolve(app, id=new_id(), created_at=now, updated_at=now)

        def insert(db: sqlite3.Connection) -> None:
            try:
                db.execute("INSERT INTO apps VALUES (?, ?, ?)", (app.id, app.name, _doc(app)))
            except sqlite3.IntegrityError:
                raise AppExists() from None

        await self._run(insert)
        return app

    async def update_app(self, app_id: str, change: Change[App]) -> App:
        def write(db: sqlite3.Connection, app: App) -> None:
            db.execute("UPDATE apps SET doc = ? WHERE id = ?", (_doc(app), app_id))

        return await self._update(App, "apps", app_id, AppNotFound, change, write)

    async def get_app(self, app_id: str) -> App:
        return await self._one(App, "SELECT doc FROM apps WHERE id = ?", (app_id,), AppNotFound)

    async def get_app_by_name(self, name: str) -> App:
        return await self._one(App, "SELECT doc FROM apps WHERE name = ?", (name,), AppNotFound)

    async def delete_app(self, app_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            with _transaction(db):
                if db.execute("DELETE FROM apps WHERE id = ?", (app_id,)).rowcount == 0:
                    raise AppNotFound()
                db.execute("DELETE FROM triggers WHERE app_id = ?", (app_id,))
                db.execute("DELETE FROM fns WHERE app_id = ?", (app_id,))

        await self._run(delete)

    async def list_apps(self, *, name: str = "", cursor: str = "", per_page: int = 30) -> Page:
        return await self._list(App, "apps", {"name": name}, cursor, per_page)

    # --- fns -------------------------------------------------------------------------------
    async def insert_fn(self, fn: Fn) -> Fn:
        now = now_rfc3339()
        fn = attrs.evolve(fn, id=new_id(), created_at=now, updated_at=now)

        def insert(db: sqlite3.Connection) -> None:
            with _transaction(db):  # the app's check and the insert at once: another process may delete the app
                if db.execute("SELECT 1 FROM apps WHERE id = ?", (fn.app_id,)).fetchone() is None:
                    raise AppNotFound()
                try:
                    db.execute("INSERT INTO fns VALUES (?, ?, ?, ?)", (fn.id, fn.app_id, fn.name, _doc(fn)))
                except sqlite3.IntegrityError:
                    raise FnExists() from None

        await self._run(insert)
        return fn

    async def update_fn(self, fn_id: str, change: Change[Fn]) -> Fn:
        def write(db: sqlite3.Connection, fn: Fn) -> None:
            try:
                db.execute("UPDATE fns SET name = ?, doc = ? WHERE id = ?", (fn.name, _doc(fn), fn_id))
            except sqlite3.IntegrityError:
                raise FnExists() from None

        return await self._update(Fn, "fns", fn_id, FnNotFound, change, write)

    async def get_fn(self, fn_id: str) -> Fn:
        return await self._one(Fn, "SELECT doc FROM fns WHERE id = ?", (fn_id,), FnNotFound)

    async def delete_fn(self, fn_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            with _transaction(db):  # no trigger of the fn left behind, whatever another process does meanwhile
                if db.execute("DELETE FROM fns WHERE id = ?", (fn_id,)).rowcount == 0:
                    raise FnNotFound()
                db.execute("DELETE FROM triggers WHERE fn_id = ?", (fn_id,))

        await self._run(delete)

    async def list_fns(self, *, app_id: str = "", name: str = "", cursor: str = "", per_page: int = 30) -> Page:
        return await self._list(Fn, "fns", {"app_id": app_id, "name": name}, cursor, per_page)

    # --- triggers --------------------------------------------------------------------------
    async def insert_trigger(self, trigger: Trigger) -> Trigger:
        now = now_rfc3339()
        trigger = attrs.evolve(trigger, id=new_id(), created_at=now, updated_at=now)

        def insert(db: sqlite3.Connection) -> None:
            with _transaction(db):  # the checks and the insert at once: another process may delete the app or fn
                if db.execute("SELECT 1 FROM apps WHERE id = ?", (trigger.app_id,)).fetchone() is None:
                    raise AppNotFound()
                self._check_trigger_fn(db, trigger)
                self._check_trigger_unique(db, trigger)
                db.execute(
                    "INSERT INTO triggers VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (trigger.id, trigger.app_id, trigger.fn_id, trigger.name, trigger.type, trigger.source, _doc(trigger)),
                )

        await self._run(insert)
        return trigger

    @staticmethod
    def _check_trigger_fn(db: sqlite3.Connection, t: Trigger) -> None:
        """As Fn's InsertTrigger: the fn must exist (404) and be one of the trigger's app (400)."""
        row = db.execute("SELECT app_id FROM fns WHERE id = ?", (t.fn_id,)).fetchone()
        if row is None:
            raise FnNotFound()
        if row[0] != t.app_id:
            raise TriggerFnIDNotSameApp()

    @staticmethod
    def _check_trigger_unique(db: sqlite3.Connection, t: Trigger) -> None:
        # Fn's InsertTrigger looks for the source first; a taken name is its insert failing
        sql = "SELECT 1 FROM triggers WHERE app_id = ? AND type = ? AND source = ? AND id != ?"
        if db.execute(sql, (t.app_id, t.type, t.source, t.id)).fetchone():
            raise TriggerSourceExists()
        # a name is unique per fn, as Fn's table constraint (app_id, fn_id, name) makes it
        sql = "SELECT 1 FROM triggers WHERE app_id = ? AND fn_id = ? AND name = ? AND id != ?"
        if db.execute(sql, (t.app_id, t.fn_id, t.name, t.id)).fetchone():
            raise TriggerExists()

    async def update_trigger(self, trigger_id: str, change: Change[Trigger]) -> Trigger:
        def write(db: sqlite3.Connection, t: Trigger) -> None:
            # Fn's UpdateTrigger takes a new fn_id unchecked; it is checked as on insert here, so that a
            # trigger never runs another app's fn (nor none)
            self._check_trigger_fn(db, t)
            self._check_trigger_unique(db, t)
            sql = "UPDATE triggers SET name = ?, fn_id = ?, source = ?, doc = ? WHERE id = ?"
            db.execute(sql, (t.name, t.fn_id, t.source, _doc(t), trigger_id))

        return await self._update(Trigger, "triggers", trigger_id, TriggerNotFound, change, write)

    async def get_trigger(self, trigger_id: str) -> Trigger:
        return await self._one(Trigger, "SELECT doc FROM triggers WHERE id = ?", (trigger_id,), TriggerNotFound)

    async def get_trigger_by_source(self, app_id: str, type: str, source: str) -> Trigger:
        sql = "SELECT doc FROM triggers WHERE app_id = ? AND type = ? AND source = ?"
        return await self._one(Trigger, sql, (app_id, type, source), TriggerNotFound)

    async def delete_trigger(self, trigger_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            if db.execute("DELETE FROM triggers WHERE id = ?", (trigger_id,)).rowcount == 0:
                raise TriggerNotFound()

        await self._run(delete)

    async def list_triggers(
        self, *, app_id: str, fn_id: str = "", name: str = "", cursor: str = "", per_page: int = 30
    ) -> Page:
        return await self._list(Trigger, "triggers", {"app_id": app_id, "fn_id": fn_id, "name": name}, cursor, per_page)

    # --- imports -------------------------------------------------------------------------
    async def import_objects(
        self, apps: list[App], fns: list[Fn], triggers: list[Trigger], *, dry_run: bool = False, mirror: bool = False
    ) -> list[Imported]:
        """Write objects made elsewhere (Fn's, `fn_core.store.fn_import`) with their own ids and times, in one
        transaction: all or none. Each one's outcome, in the order given (apps, fns, triggers): ``"created"``,
        ``"updated"`` (this store had its id, with other fields: the given one wins) or ``"unchanged"``; with
        ``mirror``, then every object of this store the import does not have, ``"deleted"``. Names and trigger
        sources are checked against the store as the import leaves it (two triggers may swap sources): each object
        whose name or source another id holds there, or whose app or fn is nowhere, is named in one
        `ImportConflict`. ``dry_run``: the same checks and outcomes, then rolled back."""

        stop = threading.Event()
        ended: list[list[Imported]] = []  # the outcomes, once committed (or, for a dry run, rolled back)

        def write(db: sqlite3.Connection) -> list[Imported]:
            try:
                with _transaction(db):
                    ids = _ids(apps, fns, triggers)
                    deleted = self._delete_all_but(db, ids, stop) if mirror else []
                    done = _Import(db, ids, stop).write(apps, fns, triggers)
                    if dry_run:
                        raise _DryRun(done + deleted)
                ended.append(done + deleted)
            except _DryRun as rolled_back:
                ended.append(rolled_back.outcomes)
            return ended[0]

        try:
            return await self._run(write)
        except asyncio.CancelledError:
            # the caller was cancelled (Ctrl-C): the transaction stops where it is and rolls back, unless it committed
            # meanwhile; either way it has ended when this returns, and its outcome is said as it is
            stop.set()
            self._db.interrupt()
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._executor, lambda: None))
            task = asyncio.current_task()
            if not ended or task is None:
                raise
            task.uncancel()
            return ended[0]

    @staticmethod
    def _delete_all_but(db: sqlite3.Connection, kept: dict[str, set[str]], stop: threading.Event) -> list[Imported]:
        found: dict[str, dict[str, Any]] = {}
        for table, kind in (("apps", App), ("fns", Fn), ("triggers", Trigger)):
            found[table] = {ident: kind(**json.loads(doc)) for ident, doc in db.execute(f"SELECT id, doc FROM {table}")}
        deleted = []
        for table, kind_name in (("triggers", "trigger"), ("fns", "fn"), ("apps", "app")):
            for ident, obj in found[table].items():
                if ident in kept[table]:
                    continue
                _go_on(stop)
                db.execute(f"DELETE FROM {table} WHERE id = ?", (ident,))
                fn = found["fns"].get(getattr(obj, "fn_id", ""))
                deleted.append(Imported(kind_name, obj, "deleted", found["apps"].get(getattr(obj, "app_id", ident)), fn))
        return deleted

    # --- helpers ---------------------------------------------------------------------------
    async def _update(
        self,
        kind: type[T],
        table: str,
        ident: str,
        missing: type[Exception],
        change: Change[T],
        write: Callable[[sqlite3.Connection, T], None],
    ) -> T:
        """Read, change and ``write`` one object in one transaction; stamped ``updated_at`` only when it changed (as Fn)."""

        def update(db: sqlite3.Connection) -> T:
            with _transaction(db):
                row = db.execute(f"SELECT doc FROM {table} WHERE id = ?", (ident,)).fetchone()
                if row is None:
                    raise missing()
                old = kind(**json.loads(row[0]))
                new = change(old)
                if new != old:
                    new = attrs.evolve(new, updated_at=now_rfc3339())  # type: ignore[misc]
                    write(db, new)
                return new

        return await self._run(update)

    async def _one(self, kind: type[T], sql: str, args: tuple, missing: type[Exception]) -> T:
        row = await self._run(lambda db: db.execute(sql, args).fetchone())
        if row is None:
            raise missing()
        return kind(**json.loads(row[0]))

    async def _list(self, kind: type[T], table: str, filters: dict[str, str], cursor: str, per_page: int) -> Page:
        """Items ordered by (name, id); the cursor is the last item's (name, id), as Fn pages by name."""
        where, args = [], []
        for column, value in filters.items():
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if cursor:
            name, ident = decode_cursor(cursor)
            if ident is None:
                where.append("name > ?")
                args.append(name)
            else:
                where.append("(name > ? OR (name = ? AND id > ?))")
                args += [name, name, ident]
        sql = f"SELECT doc FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY name, id LIMIT ?"
        rows = await self._run(lambda db: db.execute(sql, (*args, per_page)).fetchall())
        items: list[Any] = [kind(**json.loads(r[0])) for r in rows]
        next_cursor = encode_cursor(items[-1].name, items[-1].id) if len(items) == per_page else ""
        return Page(items=items, next_cursor=next_cursor)
