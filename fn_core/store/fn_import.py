"""`fn-core import-fn`: an Fn deployment's apps, fns and triggers copied into fn-core's store, their ids kept.

Clients of an Fn deployment hold its ids (`/invoke/{fn_id}` URLs, app and fn ids in scripts): recreating the
objects through the v2 API would give each a new one. This reads them from Fn's v2 API (whatever database Fn
runs on) or from Fn's SQLite file, checks each as the v2 API checks a create (the plugins' `validate_*` hooks
too), and writes them in one store transaction: all, or nothing. Run again, it brings what changed on Fn since
(Fn's version wins); what was deleted on Fn stays here, unless it mirrors Fn (then it is deleted here too).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import sqlite3
from collections.abc import Iterable
from typing import Any

import aiohttp
import attrs

from fn_core.api import validation as v
from fn_core.errors import APIError, FnCoreError
from fn_core.hook_calls import failed_plugin, implemented, run_failing_call, run_isolated
from fn_core.models import HTTP_ENDPOINT, INVOKE_ENDPOINT, App, Fn, Trigger
from fn_core.store.base import MAX_PER_PAGE, ImportConflict, Imported, Store
from fn_core.store.sqlite import SQLiteStore, read_only

#: what Fn's API adds to the annotations it shows (not stored): fn-core shows its own
SHOWN_ONLY = (INVOKE_ENDPOINT, HTTP_ENDPOINT)
#: ids land in URL paths (`/invoke/{fn_id}`): Fn's are ULIDs; any of RFC 3986's unreserved characters is taken
ID = re.compile(r"[0-9A-Za-z._~-]{1,255}")
KEPT = ("id", "created_at", "updated_at")  # what a create would not take, and the import keeps
#: the columns read from Fn's SQLite tables (there since Fn's v2 objects came: its migrations 16 and 17; `shape` later)
FN_COLUMNS = {
    "apps": ("id", "name", "config", "annotations", "syslog_url", "created_at", "updated_at"),
    "fns": ("id", "name", "app_id", "image", "memory", "timeout", "idle_timeout", "config", "annotations",
            "created_at", "updated_at"),
    "triggers": ("id", "name", "app_id", "fn_id", "type", "source", "annotations", "created_at", "updated_at"),
}
#: read where an Fn version has them: `shape` came later; fns had a `format` until Fn's migration 22
OPTIONAL_COLUMNS = {"apps": ("shape",), "fns": ("shape", "format"), "triggers": ()}
JSON_COLUMNS = ("config", "annotations")
#: an fn's `format` fn-core runs (Fn's current and only one since its hot formats were dropped)
FORMATS = ("", "http-stream")


class ImportFailed(FnCoreError):
    """The source could not be read, or held what fn-core refuses: nothing was imported."""


@attrs.define
class Found:
    """What a source holds, as Fn's v2 JSON objects."""

    apps: list[dict[str, Any]]
    fns: list[dict[str, Any]]
    triggers: list[dict[str, Any]]


# --- reading -------------------------------------------------------------------------------
async def read_source(source: str, headers: Iterable[str] = (), per_page: int = MAX_PER_PAGE) -> Found:
    """``source``: Fn's API (``http[s]://host:port``, ``headers`` "Name: value" sent with each request) or Fn's
    SQLite file (``sqlite3:///path/fn.db``)."""
    if source.startswith(("http://", "https://")):
        return await read_api(source.rstrip("/"), _header_dict(headers), per_page)
    for prefix in ("sqlite3://", "sqlite://"):
        if source.startswith(prefix):
            return read_fn_sqlite(source[len(prefix):])
    raise ImportFailed(f"{source!r}: give Fn's API (http://fn-host:8080) or Fn's SQLite file (sqlite3:///path/fn.db)")


def _header_dict(headers: Iterable[str]) -> dict[str, str]:
    found = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise ImportFailed(f"header {header!r}: give it as 'Name: value'")
        found[name.strip()] = value.strip()
    return found


async def read_api(url: str, headers: dict[str, str], per_page: int = MAX_PER_PAGE) -> Found:
    """Every app of Fn's v2 API at ``url``, and each app's fns and triggers, page by page."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        apps = await _all_pages(session, f"{url}/v2/apps", {}, per_page)
        fns, triggers = [], []
        for app in apps:
            fns += await _all_pages(session, f"{url}/v2/fns", {"app_id": str(app.get("id"))}, per_page)
            triggers += await _all_pages(session, f"{url}/v2/triggers", {"app_id": str(app.get("id"))}, per_page)
    return Found(apps, fns, triggers)


async def _all_pages(session: aiohttp.ClientSession, url: str, query: dict[str, str], per_page: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursors = set()
    cursor = ""
    while True:
        params = {**query, "per_page": str(per_page), **({"cursor": cursor} if cursor else {})}
        try:
            async with session.get(url, params=params) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ImportFailed(f"GET {url}: {exc or type(exc).__name__}") from None
        try:
            page = json.loads(raw)
        except ValueError:
            page = None
        if status != 200:
            said = page.get("message") if isinstance(page, dict) else raw[:200].decode(errors="replace")
            raise ImportFailed(f"GET {url}: {status} {said}")
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise ImportFailed(f"GET {url}: not a v2 list (no items): is this Fn's API?")
        if not all(isinstance(item, dict) for item in page["items"]):
            raise ImportFailed(f"GET {url}: an item of the list is not an object: is this Fn's API?")
        items += page["items"]
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return items
        if cursor in cursors:
            raise ImportFailed(f"GET {url}: the server gave the cursor {cursor!r} twice; its list never ends")
        cursors.add(cursor)


def read_fn_sqlite(path: str) -> Found:
    """Fn's SQLite file, read only (`fn_core.store.sqlite.read_only`: nothing left beside it) and in one read
    transaction (what a running Fn writes meanwhile is not half seen)."""
    path = path.partition("?")[0]  # a Go driver's options, as an FN_DB_URL of Fn's may carry (?_busy_timeout=...)
    if not os.path.isfile(path):
        raise ImportFailed(f"{path}: no such file")
    try:
        db = read_only(path)
    except (OSError, sqlite3.Error) as exc:
        raise ImportFailed(f"{path}: {exc}") from None
    try:
        db.execute("BEGIN")
        return Found(*(_fn_rows(db, path, table) for table in FN_COLUMNS))
    except sqlite3.Error as exc:
        raise ImportFailed(f"{path}: {exc}") from None
    finally:
        db.close()


def _fn_rows(db: sqlite3.Connection, path: str, table: str) -> list[dict[str, Any]]:
    have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    missing = [c for c in FN_COLUMNS[table] if c not in have]
    if missing:
        lacks = f"its {table} table has no {', '.join(missing)}" if have else f"it has no {table} table"
        raise ImportFailed(f"{path} is not the database of an Fn with v2 apps, fns and triggers: {lacks}")
    columns = FN_COLUMNS[table] + tuple(c for c in OPTIONAL_COLUMNS[table] if c in have)
    rows = []
    for values in db.execute(f"SELECT {', '.join(columns)} FROM {table}"):
        row = {c: val for c, val in zip(columns, values, strict=True) if val is not None}
        for column in JSON_COLUMNS:
            if column in row:
                try:
                    row[column] = json.loads(row[column]) if row[column] else {}
                except ValueError:
                    row[column] = f"<not JSON: {row[column][:40]!r}>"  # refused by the checks, with the object named
        rows.append(row)
    return rows


# --- checking ------------------------------------------------------------------------------
#: the objects to import, as fn-core would store them: apps, fns, triggers
Checked = tuple[list[App], list[Fn], list[Trigger]]


def _what(kind: str, data: dict[str, Any]) -> str:
    return f"{kind} {data.get('name')!r} ({data.get('id')})"


def _as_created(data: dict[str, Any], make: Any) -> Any:
    """``data`` checked as the v2 API checks a create, with the ids and times it had on Fn."""
    if not isinstance(data.get("id"), str) or not ID.fullmatch(data["id"]):
        raise v.bad(f"the id {data.get('id')!r} is not one fn-core can serve (letters, digits, '.', '_', '~', '-')")
    if data.get("format") not in (None, *FORMATS):
        raise v.bad(f"format {data['format']!r}: fn-core runs http-stream functions only (build the image with a current FDK)")
    for stamp in ("created_at", "updated_at"):
        if not isinstance(data.get(stamp, ""), str):
            raise v.bad(f"{stamp} is not a string")
    fields = {k: val for k, val in data.items() if k not in KEPT and k != "format"}
    if isinstance(fields.get("annotations"), dict):
        fields["annotations"] = {k: val for k, val in fields["annotations"].items() if k not in SHOWN_ONLY}
    try:
        obj = make(fields)
    except APIError as err:
        if err.message != v.INVALID_JSON:
            raise
        raise v.bad(f"{_wrong_fields(fields)}: not what Fn's API takes (it answers {v.INVALID_JSON!r})") from None
    return attrs.evolve(obj, id=data["id"], created_at=data.get("created_at", ""), updated_at=data.get("updated_at", ""))


def _wrong_fields(fields: dict[str, Any]) -> str:
    """Which fields made a create's "Invalid JSON" (Go's unmarshal error names none)."""
    wrong = []
    for key, value in fields.items():
        if key in ("memory", "timeout", "idle_timeout"):
            fits = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        elif key == "config":
            fits = isinstance(value, dict) and all(isinstance(item, str) for item in value.values())
        elif key == "annotations":
            fits = isinstance(value, dict)
        else:
            fits = value is None or isinstance(value, str)
        if not fits:
            wrong.append(f"{key} {value!r}")
    return ", ".join(wrong) or "a field"


def _said_by(hook: Any, err: APIError) -> str:
    """A plugin's refusal, naming the plugin and its hook."""
    return f"{err.message} (plugin {failed_plugin(hook, err)}'s {hook.name})"


def checked(found: Found, hooks: Any = None) -> Checked:
    """Every object as fn-core would store it; all the refused ones named in one `ImportFailed`."""
    problems: list[str] = []
    refused: set[Any] = set()  # the ids of those refused: what belongs to one is refused for it, and says so
    apps: dict[str, App] = {}
    fns: dict[str, Fn] = {}
    triggers: dict[str, Trigger] = {}
    checks = {name: implemented(hooks, name) for name in ("validate_app", "validate_fn", "validate_trigger")}

    def take(kind: str, data: dict[str, Any], make: Any, into: dict[str, Any], hook: str, parents: dict[str, Any]) -> None:
        try:
            obj = _as_created(data, make)
            if obj.id in into:
                raise v.bad("its id is given twice")
            if checks[hook] is not None:
                try:
                    run_failing_call(checks[hook], **copy.deepcopy({**parents, kind: obj}))
                except APIError as err:
                    raise APIError(_said_by(checks[hook], err), status=err.status) from None
            into[obj.id] = obj
        except APIError as err:
            problems.append(f"{_what(kind, data)}: {err.message}")
            refused.add(data.get("id"))

    def orphan(kind: str, data: dict[str, Any], parent: str, ident: Any, why: str) -> None:
        said = "is refused (above)" if ident in refused else why
        problems.append(f"{_what(kind, data)}: its {parent} {ident} {said}")
        refused.add(data.get("id"))

    for data in found.apps:
        take("app", data, v.app_for_create, apps, "validate_app", {})
    for data in found.fns:
        app = apps.get(data.get("app_id"))  # type: ignore[arg-type]
        if app is None:
            orphan("fn", data, "app", data.get("app_id"), "is not among the apps read")
            continue
        take("fn", data, v.fn_for_create, fns, "validate_fn", {"app": app})
    for data in found.triggers:
        fn = fns.get(data.get("fn_id"))  # type: ignore[arg-type]
        if fn is None or fn.app_id != data.get("app_id"):
            orphan("trigger", data, "fn", data.get("fn_id"), f"is not among the fns read of its app {data.get('app_id')}")
            continue
        take("trigger", data, v.trigger_for_create, triggers, "validate_trigger", {"app": apps[fn.app_id], "fn": fn})
    if problems:
        listed = "\n  ".join(problems)
        raise ImportFailed(f"nothing was imported: fn-core refuses {len(problems)} of the objects read\n  {listed}")
    return list(apps.values()), list(fns.values()), list(triggers.values())


# --- the import ----------------------------------------------------------------------------
async def import_fn(store: Store, objects: Checked, hooks: Any = None, *, dry_run: bool = False,
                    mirror: bool = False) -> list[Imported]:
    """Write the `checked` ``objects`` to ``store`` (``mirror``: and delete there what they do not hold, once the
    plugins' `validate_delete` let each go); the `object_changed` listeners hear each object created, updated or
    deleted."""
    apps, fns, triggers = objects
    if mirror and not apps:
        raise ImportFailed("--mirror with a source that has no apps would empty the store: nothing was changed (a wrong "
                           "address, or a token that sees nothing, reads as an empty Fn too)")
    check_delete = implemented(hooks, "validate_delete") if mirror else None
    if check_delete is not None:  # the deletes planned, each asked first; then the import itself, unless only planned
        planned = await store.import_objects(apps, fns, triggers, dry_run=True, mirror=True)
        _let_go(check_delete, [item for item in planned if item.outcome == "deleted"])
    if check_delete is not None and dry_run:
        done = planned
    else:
        done = await store.import_objects(apps, fns, triggers, dry_run=dry_run, mirror=mirror)
    apps_by_id, fns_by_id = {a.id: a for a in apps}, {f.id: f for f in fns}
    for item in done:  # what it belongs to (the store gave it for those it deleted)
        obj = item.obj
        item.app = item.app or apps_by_id.get(getattr(obj, "app_id", ""))
        item.fn = item.fn or fns_by_id.get(getattr(obj, "fn_id", ""))
    tell = implemented(hooks, "object_changed")
    if tell is None or dry_run:
        return done
    for item in done:
        if item.outcome != "unchanged":
            run_isolated(tell, **_hook_args(item, action=item.outcome))
    return done


def _hook_args(item: Imported, **more: Any) -> dict[str, Any]:
    """The (copied) app, fn and trigger of ``item``, as `validate_delete` and `object_changed` take them."""
    app = item.obj if item.kind == "app" else item.app
    fn = item.obj if item.kind == "fn" else item.fn
    trigger = item.obj if item.kind == "trigger" else None
    return copy.deepcopy({**more, "app": app, "fn": fn, "trigger": trigger})


def _let_go(check: Any, deletes: list[Imported]) -> None:
    """`validate_delete` for each object a mirror would delete (an app's fns and triggers each asked too); every
    refusal named in one `ImportFailed`."""
    refusals = []
    for item in deletes:
        try:
            run_failing_call(check, **_hook_args(item))
        except APIError as err:
            refusals.append(f"{item.kind} {item.obj.name!r} ({item.obj.id}): {_said_by(check, err)}")
    if refusals:
        listed = "\n  ".join(refusals)
        raise ImportFailed(f"nothing was imported: plugins keep {len(refusals)} of the objects --mirror would delete\n  {listed}")


async def import_command(config: Any, hooks: Any, source: str, headers: Iterable[str] = (), *, dry_run: bool = False,
                         mirror: bool = False) -> list[Imported]:
    """`fn-core import-fn`: read ``source``, check it, write it to the config's store. Nothing is left behind by one
    that fails or is cancelled, where there was no store: no new file, nor the directories made for it. A dry run
    works on a copy in memory (an empty one where there is no store yet)."""
    path = config.db_path
    if os.path.realpath(source.partition("://")[2].partition("?")[0]) == os.path.realpath(path):
        raise ImportFailed(f"{source} is the store to write to: give fn-core's own file with --db or FN_DB_URL")
    objects = checked(await read_source(source, headers), hooks)
    new = not os.path.exists(path)
    made_dirs = [] if dry_run else _missing_dirs(path)
    store = SQLiteStore(":memory:") if dry_run and new else SQLiteStore(path, in_memory_copy=dry_run)
    written = False
    try:
        done = await import_fn(store, objects, hooks, dry_run=dry_run, mirror=mirror)
        written = True
        return done
    except ImportConflict as exc:
        if mirror or "the import does not have" not in exc.message:
            raise ImportFailed(exc.message) from None
        raise ImportFailed(f"{exc.message}\n(if Fn deleted those since an earlier import: --mirror deletes from the store "
                           f"everything the source does not have, objects made here included; --dry-run lists them "
                           f"first)") from None
    finally:
        await store.close()
        if new and not written and not dry_run:
            for leftover in (path, f"{path}-wal", f"{path}-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)
            for made in made_dirs:  # deepest first
                with contextlib.suppress(OSError):
                    os.rmdir(made)


def _missing_dirs(path: str) -> list[str]:
    """The directories above ``path`` that do not exist yet, deepest first."""
    missing = []
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return missing


def report(done: list[Imported], source: str, path: str, dry_run: bool) -> list[str]:
    """A line for each object (kind, name, id, outcome), then the counts."""
    width = max((len(item.obj.name) for item in done), default=0)
    lines = []
    for item in done:
        outcome = f"would be {item.outcome}" if dry_run and item.outcome != "unchanged" else item.outcome
        lines.append(f"{item.kind:<8} {item.obj.name:<{width}} {item.obj.id}  {outcome}")
    counts = {o: sum(item.outcome == o for item in done) for o in ("created", "updated", "unchanged", "deleted")}
    summary = ("would be: " if dry_run else "") + ", ".join(f"{n} {o}" for o, n in counts.items() if n or o != "deleted")
    read = sum(item.outcome != "deleted" for item in done)
    where = "dry run, nothing written" if dry_run else f"imported into {path}"
    lines.append(f"{where}: {read} object{'' if read == 1 else 's'} from {source} ({summary})")
    return lines
