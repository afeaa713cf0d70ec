"""Read-only `Lookups` over an API node's v2 HTTP API: how LB nodes share one set of apps and fns.

Fn's topology for several LBs: one API node owns the database, and every LB node reads the
apps, fns and triggers it needs from that node (``FN_RUNNER_API_URL``), through the same 5 s
cache as the embedded store. The LB opens no database and serves no v2 CRUD routes.
It reads only Fn's public API, plus the internal trigger-by-source route Fn's API nodes also
serve, so an LB can read from our API node or from Fn's.

When the API node cannot be reached, the cache answers the fns it has read from its last reading
(`fn_core.store.cache`), and a call of any other fails with 503 (Retry-After). "Not found" answers are
cached; failures are not.

Once a lookup found the API node failing, no lookup waits on it for its whole timeout: one check at a time
(``GET /v2/apps?per_page=1``, with the full timeout) asks it, started by the lookups that come meanwhile, and each
lookup waits for that check at most `RECHECK_WAIT_S`. An API node that is back answers the check in milliseconds,
and the lookup goes on; one that still fails (or is frozen: it accepts connections and never answers) costs the
lookup that wait, then 503, or the cache's last reading. Before, a frozen API node held every lookup for the
timeout: an fn's first call past the cache's TTL waited 10 s for its fn and 10 s more for its app.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NoReturn
from urllib.parse import quote

import aiohttp
import attrs

from fn_core import logfmt
from fn_core.errors import APIError, ServiceUnavailable, describe
from fn_core.models import HTTP_ENDPOINT, INVOKE_ENDPOINT, App, Fn, Trigger
from fn_core.store.base import AppNotFound, FnNotFound, TriggerNotFound

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
#: while the API node is known to fail, how long a lookup waits for the check under way (module docstring)
RECHECK_WAIT_S = 0.25
#: what the check asks: a v2 route every API node (ours, Fn's) answers cheaply
CHECK_PATH = "/v2/apps"
OUTPUT_ANNOTATIONS = (INVOKE_ENDPOINT, HTTP_ENDPOINT)
UNAVAILABLE = "Service temporarily unavailable: function definitions cannot be read"


class ApiNodeStore:
    """The `Lookups` of an LB node whose apps, fns and triggers live on the API node at ``base_url``."""

    def __init__(self, base_url: str, timeout_s: float = TIMEOUT_S, authorization: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        # an API node guarded by a check_request plugin lets its LBs in with this (FN_RUNNER_API_AUTHORIZATION)
        self.headers = {"Authorization": authorization} if authorization else {}
        self._session: aiohttp.ClientSession | None = None  # made in the event loop, on first use
        self._failing = False  # an outage is logged once as a warning, and its end once
        self._check: asyncio.Task[None] | None = None  # the one check under way while it fails

    # --- reads: what the invoke path needs ------------------------------------------------
    async def get_fn(self, fn_id: str) -> Fn:
        return self._model(Fn, await self._get(f"/v2/fns/{quote(fn_id, safe='')}", FnNotFound))

    async def get_app(self, app_id: str) -> App:
        return self._model(App, await self._get(f"/v2/apps/{quote(app_id, safe='')}", AppNotFound))

    async def get_app_by_name(self, name: str) -> App:
        page = await self._get("/v2/apps", AppNotFound, params={"name": name})
        items = page.get("items") if isinstance(page, dict) else None
        if not isinstance(items, list):
            self._unavailable(f"answered a list of apps this LB cannot read: {str(page)[:200]}")
        for item in items:
            if item.get("name") == name:
                return self._model(App, item)
        raise AppNotFound()

    async def get_trigger_by_source(self, app_id: str, type: str, source: str) -> Trigger:
        path = f"/v2/runner/apps/{quote(app_id, safe='')}/triggerBySource/{quote(type, safe='')}{quote(source)}"
        return self._model(Trigger, await self._get(path, TriggerNotFound))

    def _model(self, cls: Any, data: Any) -> Any:
        """The model as the API node stores it, from its JSON: fields this version does not know (a newer
        API node) are left out, and so are the annotations the API adds on output. Those hold the address
        the API node was asked at, and annotations are part of the slot key: kept, they would give this
        fn other hot containers than an LB with its own store gives it."""
        try:
            fields = {f.name: data[f.name] for f in attrs.fields(cls) if f.name in data}
            if isinstance(fields.get("annotations"), dict):
                fields["annotations"] = {k: v for k, v in fields["annotations"].items() if k not in OUTPUT_ANNOTATIONS}
            return cls(**fields)
        except TypeError:  # not an object, or a required field missing: not what an API node answers
            self._unavailable(f"answered a {cls.__name__} this LB cannot read: {str(data)[:200]}")

    async def close(self) -> None:
        if self._check is not None:
            self._check.cancel()
            await asyncio.gather(self._check, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str, not_found: type[APIError], params: dict[str, str] | None = None) -> Any:
        if self._failing:  # known to fail: this lookup waits a moment for the one check, not the whole timeout
            if self._check is None:
                self._check = asyncio.get_running_loop().create_task(self._recheck(), name="api-node-check")
            await asyncio.wait({self._check}, timeout=RECHECK_WAIT_S)
            if self._failing:
                raise ServiceUnavailable(UNAVAILABLE)
        return await self._fetch(path, not_found, params)

    async def _recheck(self) -> None:
        try:
            await self._fetch(CHECK_PATH, AppNotFound, {"per_page": "1"})
        except APIError:
            pass  # still failing: said at debug by _unavailable
        finally:
            self._check = None

    async def _fetch(self, path: str, not_found: type[APIError], params: dict[str, str] | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s), headers=self.headers)
        url = self.base_url + path
        try:
            async with self._session.get(url, params=params) as resp:
                status = resp.status
                body = await resp.json(content_type=None) if resp.content_length != 0 else {}
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            self._unavailable(self._describe(exc))
        message = body.get("message", "") if isinstance(body, dict) else ""
        found = status == 200
        if not found and not (status == 404 and message == not_found.message):
            # anything else (a 404 "Path not found" too) means the URL is not an API node, or it is failing
            hint = ""
            if status in (401, 403):  # a check_request plugin on the API node refused this LB
                hint = ("; the API node refuses this LB's FN_RUNNER_API_AUTHORIZATION" if self.headers else
                        "; an API node that asks for credentials needs FN_RUNNER_API_AUTHORIZATION on its LBs")
            self._unavailable(f"GET {path} answered {status} {message!r}{hint}")
        if self._failing:
            self._failing = False
            self._log(logging.INFO, "API node answers again")
        if not found:
            raise not_found()
        return body

    def _describe(self, exc: BaseException) -> str:
        """Why a GET failed: aiohttp's total timeout is a TimeoutError without a message (a frozen API node)."""
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"timed out after {self.timeout_s:g} s"
        return describe(exc)

    def _log(self, level: int, message: str, **fields: object) -> None:
        # the URL and the reasons (aiohttp's quote it) without a password of basic auth in front of the API node
        logfmt.log(log, level, message,
                   {key: logfmt.hide_passwords(str(value)) for key, value in {"api_node": self.base_url, **fields}.items()})

    def _unavailable(self, reason: str) -> NoReturn:
        if not self._failing:
            self._failing = True
            self._log(logging.WARNING, "API node unavailable (FN_RUNNER_API_URL)", reason=reason)
        else:
            self._log(logging.DEBUG, "API node still unavailable", reason=reason)
        # the caller sees no internal address: the operator has it in the log
        raise ServiceUnavailable(UNAVAILABLE)
