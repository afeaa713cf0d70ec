"""The HTTP application of the API and LB nodes: v2 CRUD, invoke, triggers, `/`, `/version`, `/metrics`.

`fn-core serve` and `fn-core lb` serve all of it; `fn-core api` (Fn's API node) the v2 API and
`/metrics`; an LB with ``FN_RUNNER_API_URL`` invoke, triggers and `/metrics` (its apps and fns are
the API node's). `/metrics` has the LB's call metrics where calls are placed, the v2 API's
request metrics (`fn_core.api.metrics`) where apps and fns are stored, the local runner's (`fn-core
serve`), and always the process metrics of the node and of the commands of ``FN_PROCESS_COLLECTOR_LIST``
(`fn_core.api.admin`).

Every error leaves as Fn's ``{"message": ...}`` JSON, including unknown routes (404) and
wrong methods (405). ``FN_MAX_REQUEST_SIZE`` is enforced on every route from Content-Length,
before the body is read (413, and the connection closes: the body is never read). A client that sent
``Expect: 100-continue`` is invited to send its body only when its handler reads it: a request refused before
(by a plugin, the size, an unknown fn) is answered uninvited, and its connection closed. A chunked body is cut
off at the same limit while it is read.
A body not sent whole within ``FN_REQUEST_BODY_READ_TIMEOUT`` is 408, and its connection is closed.
What is bounded before a request reaches these routes (the head's size and time, the response's write
time) and aiohttp's refusals of malformed requests are the connection's: `fn_core.api.connection`.
An error answer on an invoke or trigger path is counted and logged as a refused invoke
(`InvokeApi.reject`): no call exists to report it; /v2 errors are plain API answers.
Optional, and absent from the request path when not configured: CORS (`fn_core.api.cors`),
the request id header (`fn_core.api.request_id`) and the plugins' `check_request`, which sees every
request first (before the Content-Length check: a client that may not call learns nothing more).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import hdrs, web

from fn_core.api.admin import HTTP_MESSAGES, MetricsSource, add_admin_routes
from fn_core.api.body import body_reader
from fn_core.api.cors import install_cors
from fn_core.api.crud import CrudApi
from fn_core.api.invoke import INVOKE_PATH_PREFIXES, InvokeApi, error_response
from fn_core.api.metrics import ApiMetrics
from fn_core.api.request_id import RequestIds
from fn_core.errors import APIError, RequestBodyTimeout, RequestTooLarge
from fn_core.hook_calls import implemented, run_failing_call
from fn_core.lb.agent import LBAgent
from fn_core.records import HttpRequest
from fn_core.store.base import Store
from fn_core.store.cache import CachedLookup

log = logging.getLogger(__name__)

UNLIMITED_BODY = 1 << 40  # aiohttp needs a number; "no limit" as in Fn's default


def _request_check(hooks: Any) -> Callable[[web.Request], None] | None:
    """The plugins' `check_request` for a request; None when no plugin implements it (then the request path has
    no step for it). Taken when the node starts: its plugins are registered by then."""
    hook = implemented(hooks, "check_request")
    if hook is None:
        return None

    def check(request: web.Request) -> None:
        url = request.rel_url
        head = HttpRequest(request.method, url.raw_path, url.raw_query_string, request.headers, request.remote or "")
        run_failing_call(hook, request=head)

    return check


def make_app(
    config,
    store: Store | None,
    lookup: CachedLookup,
    agent: LBAgent | None,
    metrics: Sequence[MetricsSource] = (),
    hooks: Any = None,
) -> web.Application:
    """The node's routes: v2 CRUD when it owns a ``store`` (not an LB reading from an API node), invoke
    and triggers when it places calls (an ``agent``; not on an API node). ``metrics``: more parts of
    `/metrics` (the local runner's). ``hooks``: the plugin manager's: `check_request` sees every request first,
    `validate_app`, `validate_fn` and `validate_trigger` check what the v2 API saves, `validate_delete` what it
    deletes, and `object_changed` hears each change."""
    max_size = config.max_request_size
    request_ids = RequestIds(config.rid_header) if config.rid_header else None
    read_body = body_reader(config.request_body_read_timeout_s)
    invoke = InvokeApi(lookup, agent, request_ids, read_body) if agent is not None else None

    def refuse(request: web.Request, err: APIError, started: float) -> web.Response:
        # only on the error path: a successful request never gets here
        if invoke is not None and request.path.startswith(INVOKE_PATH_PREFIXES):
            response = invoke.reject(request, err, started)
        else:
            response = error_response(err)
        if hdrs.EXPECT in request.headers and not request.content.is_eof():
            # not invited, the body is not coming: nothing tells where the next request would begin (Go closes too)
            response.force_close()
        return response

    check_request = _request_check(hooks)

    @web.middleware
    async def errors(request: web.Request, handler):
        started = time.monotonic()
        if check_request is not None:
            try:
                check_request(request)
            except APIError as refused:
                return refuse(request, refused, started)
        if max_size and request.content_length is not None and request.content_length > max_size:
            err = RequestTooLarge(f"Content-Length too large for this server, {request.content_length} > max {max_size}")
            response = refuse(request, err, started)
            response.force_close()  # the body is not read (nor, after an Expect, sent), as Go closes such a connection
            return response
        try:
            return await handler(request)
        except RequestBodyTimeout as err:
            # the rest of the body is never read: no next request on this connection (aiohttp drains what
            # comes for at most lingering_time, bounded by the same timeout in fn_core.lb.main, then closes)
            response = refuse(request, err, started)
            response.force_close()
            return response
        except APIError as err:
            return refuse(request, err, started)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 413:
                return refuse(request, RequestTooLarge(f"request body too large for this server, max {max_size}"), started)
            response = refuse(request, APIError(HTTP_MESSAGES.get(exc.status, exc.reason), status=exc.status), started)
            if "Allow" in exc.headers:  # a 405 says which methods the path has (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
            return response

    app = web.Application(client_max_size=max_size or UNLIMITED_BODY)
    # CORS's preflight before `errors`, which would make a 405 of it; off = not in the chain
    install_cors(app, config.api_cors_origins, config.api_cors_headers, [config.rid_header] if config.rid_header else [])
    app.middlewares.append(errors)
    if request_ids is not None:
        request_ids.install(app)
    api_metrics = ApiMetrics() if store is not None else None
    if store is not None:
        CrudApi(config, store, lookup, hooks).add_routes(app, api_metrics)
    if invoke is not None:
        invoke.add_routes(app)

    sources: list[MetricsSource] = []
    if agent is not None:
        sources.append(lambda: agent.metrics.render(agent.pool.refs))
    if api_metrics is not None:
        sources.append(api_metrics.render)
    add_admin_routes(app, config, [*sources, *metrics])
    return app
