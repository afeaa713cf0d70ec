"""Fn's v2 REST API for apps, fns and triggers (create/update -> 200 with the object, delete -> 204).

An app or fn to be saved is checked by fn-core (`fn_core.api.validation`, Fn's rules), then by the plugins'
`validate_app` / `validate_fn` / `validate_trigger` hooks, before the store is written; a delete by their
`validate_delete`. Once the store is written, their `object_changed` hook hears what changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import inspect
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import hdrs, web

from fn_core.api import validation as v
from fn_core.api.body import body_reader, defer_continue, send_continue
from fn_core.api.metrics import ApiMetrics
from fn_core.errors import APIError, BadRequest, Conflict
from fn_core.hook_calls import implemented, run_failing_call, run_isolated
from fn_core.models import HTTP_ENDPOINT, INVOKE_ENDPOINT, App, Fn, Trigger
from fn_core.store.base import DEFAULT_PER_PAGE, MAX_PER_PAGE, Page, TriggerFnIDNotSameApp

T = TypeVar("T")
log = logging.getLogger(__name__)

#: an update checked by plugins is written only if the stored object is still the one they saw; when other processes'
#: writes keep changing it meanwhile, it is merged and checked again this many times, then refused with 409
CHECKED_UPDATE_ATTEMPTS = 5

GO_ATOI = re.compile(r"([+-]?)0*([0-9]+)")  # what Go's strconv.Atoi reads: ASCII digits, one optional sign


def go_atoi(raw: str) -> int:
    """Go's ``strconv.Atoi`` with its error ignored: 0 for what is not a number; out of range, the int64 limit
    it returns with its range error (and no giant int for Python to parse)."""
    m = GO_ATOI.fullmatch(raw)
    if m is None:
        return 0
    sign, digits = m.groups()
    if len(digits) > 19:  # past int64 either way
        return -(2**63) if sign == "-" else 2**63 - 1
    return max(-(2**63), min(int(sign + digits), 2**63 - 1))


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class _ChangedMeanwhile(Exception):
    """The stored object is no longer the one the plugins checked: another write came between."""


def _if_unchanged(checked: T, new: T, current: T) -> T:
    """The store's change of an update the plugins checked: ``new`` if ``current`` is what they saw."""
    if current != checked:
        raise _ChangedMeanwhile()
    return new


class _KeyedLocks:
    """One `asyncio.Lock` per key while someone holds or waits for it (then forgotten: the dict stays small)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


#: what a change is told to the hooks with: the app, and the fn and trigger when the change is theirs (else None)
Objects = dict[str, Any]
#: the `object_changed` listeners' turn for one write (`CrudApi._told`): awaited just before the write, it gives what
#: tells them of the written object once it is stored
Teller = Callable[[], Awaitable[Callable[[Any], Awaitable[None]]]]


class CrudApi:
    """:param hooks: the plugin manager's hooks (``pm.hook``): `validate_app`, `validate_fn` and `validate_trigger`
    check what is saved, `validate_delete` what is deleted; `object_changed` hears each change made."""

    def __init__(self, config, store, lookup, hooks: Any = None) -> None:
        self.config = config
        self.store = store
        self.lookup = lookup
        self.hooks = hooks
        self.read_body = body_reader(config.request_body_read_timeout_s)
        #: checked updates of one object on this node, one at a time: each is checked against the last one's result
        self._checked_updates = _KeyedLocks()
        # taken when the node starts: its plugins are registered by then
        self._check_app = self._save_check("validate_app", self._app_objects)
        self._check_fn = self._save_check("validate_fn", self._fn_objects)
        self._check_trigger = self._save_check("validate_trigger", self._trigger_objects)
        self._check_delete = implemented(hooks, "validate_delete")
        self._tell = implemented(hooks, "object_changed")

    def add_routes(self, app: web.Application, metrics: ApiMetrics | None = None) -> None:
        """The v2 routes; with ``metrics``, each counted under its path template. A client that sent ``Expect:
        100-continue`` is invited to send its body when the handler reads it (`fn_core.api.body.defer_continue`)."""
        r = app.router
        routes = [
            (r.add_get, "/v2/apps", self.list_apps),
            (r.add_post, "/v2/apps", self.create_app),
            (r.add_get, "/v2/apps/{app_id}", self.get_app),
            (r.add_put, "/v2/apps/{app_id}", self.update_app),
            (r.add_delete, "/v2/apps/{app_id}", self.delete_app),
            (r.add_get, "/v2/fns", self.list_fns),
            (r.add_post, "/v2/fns", self.create_fn),
            (r.add_get, "/v2/fns/{fn_id}", self.get_fn),
            (r.add_put, "/v2/fns/{fn_id}", self.update_fn),
            (r.add_delete, "/v2/fns/{fn_id}", self.delete_fn),
            (r.add_get, "/v2/triggers", self.list_triggers),
            (r.add_post, "/v2/triggers", self.create_trigger),
            (r.add_get, "/v2/triggers/{trigger_id}", self.get_trigger),
            (r.add_put, "/v2/triggers/{trigger_id}", self.update_trigger),
            (r.add_delete, "/v2/triggers/{trigger_id}", self.delete_trigger),
            (r.add_get, "/v2/fns/{fn_id}/calls", self.gone),
            (r.add_get, "/v2/fns/{fn_id}/calls/{call_id}", self.gone),
            (r.add_get, "/v2/fns/{fn_id}/calls/{call_id}/log", self.gone),
            (r.add_get, "/v2/runner/apps/{app_id}/triggerBySource/{trigger_type}/{source:.*}", self.trigger_by_source),
        ]
        for add, path, handler in routes:
            counted = handler if metrics is None else metrics.counted(path, handler)
            if add == r.add_get:  # no HEAD beside each GET (aiohttp's default): Fn's router answers HEAD with 405
                r.add_get(path, counted, expect_handler=defer_continue, allow_head=False)
            else:
                add(path, counted, expect_handler=defer_continue)

    # --- helpers ---------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> dict[str, Any]:
        if hdrs.EXPECT in request.headers:
            await send_continue(request)
        return v.parse_body(await self.read_body(request))

    @staticmethod
    def _paging(request: web.Request) -> dict[str, Any]:
        """Fn's `pageParams` (api/server/server.go): ``per_page`` over 100 is 100; 0, negative, absent or not a
        number (Atoi's error is ignored) is the default, 30. Never an error."""
        q = request.query
        per_page = go_atoi(q.get("per_page", ""))
        if per_page > MAX_PER_PAGE:
            per_page = MAX_PER_PAGE
        elif per_page <= 0:
            per_page = DEFAULT_PER_PAGE
        return {"cursor": q.get("cursor", ""), "per_page": per_page}

    def _base_url(self, request: web.Request) -> str:
        return self.config.public_lb_url.rstrip("/") or f"{request.scheme}://{request.host}"

    def _fn_json(self, request: web.Request, fn: Fn) -> dict[str, Any]:
        data = fn.to_json()
        data["annotations"] = {**fn.annotations, INVOKE_ENDPOINT: f"{self._base_url(request)}/invoke/{fn.id}"}
        return data

    def _trigger_json(self, request: web.Request, t: Trigger, app_name: str) -> dict[str, Any]:
        data = t.to_json()
        data["annotations"] = {**t.annotations, HTTP_ENDPOINT: f"{self._base_url(request)}/t/{app_name}{t.source}"}
        return data

    @staticmethod
    def _page(page: Page, render: Any) -> web.Response:
        body: dict[str, Any] = {"items": [render(item) for item in page.items]}
        if page.next_cursor:
            body["next_cursor"] = page.next_cursor
        return json_response(body)

    async def _write(self, job: Awaitable[T], told: Teller | None = None) -> T:
        """A store write that this node's invoke path sees at once: the cache is cleared when the write is
        done, also when the client went away meanwhile (aiohttp cancels the handler; the write still lands, and
        ``told``, the `object_changed` listeners' turn, still comes)."""

        async def write() -> T:
            tell = None
            try:
                if told is not None:
                    tell = await told()  # what the object belongs to, read before the write (a 404 there is the write's)
                written = await job
            finally:
                self.lookup.clear()
                if inspect.iscoroutine(job):
                    job.close()  # not run when the read before it failed; done already otherwise
            if tell is not None:
                await tell(written)
            return written

        return await asyncio.shield(asyncio.ensure_future(write()))

    def _told(self, action: str, kind: str | None, parents: Callable[[], Awaitable[Objects]] | None = None) -> Teller | None:
        """The `object_changed` listeners' turn for a write of ``action`` (None when no plugin listens). ``parents``
        reads, just before the write, what the written object (the ``kind`` of the hook's arguments; None: a delete,
        whose objects ``parents`` gives whole) belongs to: read after it, a delete of its app by a write that came
        between would leave the change untold. They get copies; one that fails is logged with its name."""
        if self._tell is None:
            return None
        hook = self._tell

        async def before() -> Callable[[Any], Awaitable[None]]:
            found = await parents() if parents is not None else {}

            async def tell(written: Any) -> None:
                objects = {"fn": None, "trigger": None, **found}
                if kind is not None:
                    objects[kind] = written
                if kind == "trigger" and objects["fn"] is not None and objects["fn"].id != written.fn_id:
                    try:  # the update pointed the trigger at another fn, which the store found in its transaction
                        objects["fn"] = await self.store.get_fn(written.fn_id)
                    except Exception as exc:  # deleted since: the change stands, untold
                        log.warning("object_changed: the trigger %s was updated, but its listeners were not told: %s",
                                    written.id, getattr(exc, "message", exc))
                        return
                run_isolated(hook, action=action, **copy.deepcopy(objects))

            return tell

        return before

    async def _delete(self, ident: str, delete: Callable[[str], Awaitable[None]], objects: Callable[[str], Awaitable[Objects]]) -> None:
        """Delete ``ident``: with plugins to check or hear it, the object (and its app and fn) is read first (an
        unknown id is the 404 the delete would give), checked by `validate_delete`, then deleted and told of. This
        node's deletes and checked updates of one object take turns."""
        if self._check_delete is None and self._tell is None:
            await self._write(delete(ident))
            return
        async with self._checked_updates.hold(ident):
            found = {"fn": None, "trigger": None, **await objects(ident)}
            if self._check_delete is not None:
                run_failing_call(self._check_delete, **copy.deepcopy(found))

            async def as_found() -> Objects:
                return found

            await self._write(delete(ident), self._told("deleted", None, as_found))

    def _save_check(self, hook_name: str, objects: Callable[[T], Awaitable[dict[str, Any]]]) -> Callable[[T], Awaitable[None]] | None:
        """The plugins' check of an object to be saved (None when no plugin implements ``hook_name``): the hook gets
        the ``objects`` gathered for it, as copies, so that a plugin cannot change what is stored."""
        hook = implemented(self.hooks, hook_name)
        if hook is None:
            return None

        async def check(obj: T) -> None:
            run_failing_call(hook, **copy.deepcopy(await objects(obj)))

        return check

    async def _app_objects(self, app: App) -> Objects:
        return {"app": app}

    async def _fn_objects(self, fn: Fn) -> Objects:
        return {"app": await self.store.get_app(fn.app_id), "fn": fn}  # a missing app is the 404 the write would give

    async def _trigger_objects(self, trigger: Trigger) -> Objects:
        # the store's own checks first, in its order (its write checks them again, in its transaction)
        app = await self.store.get_app(trigger.app_id)
        fn = await self.store.get_fn(trigger.fn_id)
        if fn.app_id != app.id:
            raise TriggerFnIDNotSameApp()
        return {"app": app, "fn": fn, "trigger": trigger}

    async def _app_by_id(self, app_id: str) -> Objects:
        return {"app": await self.store.get_app(app_id)}

    async def _fn_parents(self, fn_id: str) -> Objects:
        return {"app": await self.store.get_app((await self.store.get_fn(fn_id)).app_id)}

    async def _trigger_parents(self, trigger_id: str) -> Objects:
        trigger = await self.store.get_trigger(trigger_id)
        return {"app": await self.store.get_app(trigger.app_id), "fn": await self.store.get_fn(trigger.fn_id)}

    async def _fn_by_id(self, fn_id: str) -> Objects:
        return await self._fn_objects(await self.store.get_fn(fn_id))

    async def _trigger_by_id(self, trigger_id: str) -> Objects:
        return await self._trigger_objects(await self.store.get_trigger(trigger_id))

    async def _update(
        self,
        get: Callable[[str], Awaitable[T]],
        update: Callable[[str, Callable[[T], T]], Awaitable[T]],
        ident: str,
        merge: Callable[[T], T],
        check: Callable[[T], Awaitable[None]] | None,
        told: Teller | None = None,
    ) -> T:
        """``merge`` the request into the stored object and write it, in one store transaction. With plugins to
        ``check`` it, they see the merged object first, on the event loop; it is written only if the stored
        one has not changed since (else merged and checked again). This node's updates of one object take turns,
        so only writes of other processes to the same store can make one try again."""
        if check is None:
            return await self._write(update(ident, merge), told)
        async with self._checked_updates.hold(ident):
            for _ in range(CHECKED_UPDATE_ATTEMPTS):
                stored = await get(ident)
                new = merge(stored)
                await check(new)
                try:
                    return await self._write(update(ident, functools.partial(_if_unchanged, stored, new)), told)
                except _ChangedMeanwhile:
                    continue
        raise Conflict(f"changed by {CHECKED_UPDATE_ATTEMPTS} other updates while this one was checked; send it again")

    async def gone(self, request: web.Request) -> web.Response:
        raise APIError("the calls API is gone: use the per-call log line or a call_finished plugin", status=410)

    # --- apps ------------------------------------------------------------------------------
    async def list_apps(self, request: web.Request) -> web.Response:
        page = await self.store.list_apps(name=request.query.get("name", ""), **self._paging(request))
        return self._page(page, lambda a: a.to_json())

    async def create_app(self, request: web.Request) -> web.Response:
        app = v.app_for_create(await self._body(request))
        if self._check_app is not None:
            await self._check_app(app)
        app = await self._write(self.store.insert_app(app), self._told("created", "app"))
        return json_response(app.to_json())

    async def get_app(self, request: web.Request) -> web.Response:
        return json_response((await self.store.get_app(request.match_info["app_id"])).to_json())

    async def update_app(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        merge = functools.partial(v.app_for_update, data=data)
        app = await self._update(self.store.get_app, self.store.update_app, request.match_info["app_id"], merge, self._check_app,
                                 self._told("updated", "app"))
        return json_response(app.to_json())

    async def delete_app(self, request: web.Request) -> web.Response:
        await self._delete(request.match_info["app_id"], self.store.delete_app, self._app_by_id)
        return web.Response(status=204)

    # --- fns -------------------------------------------------------------------------------
    async def list_fns(self, request: web.Request) -> web.Response:
        q = request.query
        page = await self.store.list_fns(app_id=q.get("app_id", ""), name=q.get("name", ""), **self._paging(request))
        return self._page(page, lambda f: self._fn_json(request, f))

    async def create_fn(self, request: web.Request) -> web.Response:
        fn = v.fn_for_create(await self._body(request))
        if self._check_fn is not None:
            await self._check_fn(fn)
        fn = await self._write(self.store.insert_fn(fn), self._told("created", "fn", functools.partial(self._app_by_id, fn.app_id)))
        return json_response(self._fn_json(request, fn))

    async def get_fn(self, request: web.Request) -> web.Response:
        return json_response(self._fn_json(request, await self.store.get_fn(request.match_info["fn_id"])))

    async def update_fn(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        merge = functools.partial(v.fn_for_update, data=data)
        fn_id = request.match_info["fn_id"]
        fn = await self._update(self.store.get_fn, self.store.update_fn, fn_id, merge, self._check_fn,
                                self._told("updated", "fn", functools.partial(self._fn_parents, fn_id)))
        return json_response(self._fn_json(request, fn))

    async def delete_fn(self, request: web.Request) -> web.Response:
        await self._delete(request.match_info["fn_id"], self.store.delete_fn, self._fn_by_id)
        return web.Response(status=204)

    # --- triggers --------------------------------------------------------------------------
    async def list_triggers(self, request: web.Request) -> web.Response:
        q = request.query
        if not q.get("app_id"):
            raise BadRequest("Missing App ID")
        app = await self.store.get_app(q["app_id"])
        page = await self.store.list_triggers(
            app_id=app.id, fn_id=q.get("fn_id", ""), name=q.get("name", ""), **self._paging(request)
        )
        return self._page(page, lambda t: self._trigger_json(request, t, app.name))

    async def create_trigger(self, request: web.Request) -> web.Response:
        trigger = v.trigger_for_create(await self._body(request))
        app = await self.store.get_app(trigger.app_id)
        if self._check_trigger is not None:
            await self._check_trigger(trigger)
        parents = functools.partial(self._trigger_objects, trigger)  # (its app and fn; the trigger is the written one)
        trigger = await self._write(self.store.insert_trigger(trigger), self._told("created", "trigger", parents))
        return json_response(self._trigger_json(request, trigger, app.name))

    async def get_trigger(self, request: web.Request) -> web.Response:
        trigger = await self.store.get_trigger(request.match_info["trigger_id"])
        app = await self.store.get_app(trigger.app_id)
        return json_response(self._trigger_json(request, trigger, app.name))

    async def update_trigger(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        merge = functools.partial(v.trigger_for_update, data=data)
        trigger_id = request.match_info["trigger_id"]
        trigger = await self._update(
            self.store.get_trigger, self.store.update_trigger, trigger_id, merge, self._check_trigger,
            self._told("updated", "trigger", functools.partial(self._trigger_parents, trigger_id)),
        )
        app = await self.store.get_app(trigger.app_id)
        return json_response(self._trigger_json(request, trigger, app.name))

    async def delete_trigger(self, request: web.Request) -> web.Response:
        await self._delete(request.match_info["trigger_id"], self.store.delete_trigger, self._trigger_by_id)
        return web.Response(status=204)

    async def trigger_by_source(self, request: web.Request) -> web.Response:
        m = request.match_info
        source = "/" + m["source"]  # as the LB's own trigger route reads it: "//foo" is a source of its own, not "/foo"
        trigger = await self.store.get_trigger_by_source(m["app_id"], m["trigger_type"], source)
        app = await self.store.get_app(trigger.app_id)
        return json_response(self._trigger_json(request, trigger, app.name))
