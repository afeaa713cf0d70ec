"""Starting and stopping the HTTP nodes: LB (`fn-core lb`), all-in-one (`fn-core serve`) and API (`fn-core api`).

Several LBs share one set of apps and fns through an API node: each LB started with
``FN_RUNNER_API_URL`` reads them from it (`fn_core.store.api_node`) instead of opening a database.

Shutdown order (SIGTERM/SIGINT): stop accepting connections and placing new calls, let in-flight calls
finish, wait for detached calls, close the runner channels, close the store; for `serve` then stop the
local runner. The whole stop takes at most the grace period (FN_SHUTDOWN_GRACE, 30 s): a call still on a runner
then is cut, and its log line and metrics say 500 "call cut short: the LB is shutting down" (not the 503 of a call
never placed: it ran, in part or whole, and must not be sent again). A call still waiting for a runner
then gets that 503 "Server is shutting down", just before the cut.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket

from aiohttp import web

from fn_core.api.admin import MetricsSource
from fn_core.api.connection import app_runner, serve_app
from fn_core.api.server import make_app
from fn_core.errors import ConfigError, PluginError
from fn_core.hook_calls import plugin_metrics
from fn_core.lb.agent import LBAgent
from fn_core.lb.local_runner import LocalRunner
from fn_core.lb.pool import FixedRunners, RunnerSet
from fn_core.listen import claim, close_all
from fn_core.signals import wait_for_stop_signal
from fn_core.store import CachedLookup, Store, open_store
from fn_core.store.api_node import ApiNodeStore
from fn_core.store.base import Lookups

log = logging.getLogger(__name__)



#: aiohttp rounds each shutdown wait longer than this up to the next whole second of the loop's clock
AIOHTTP_CEIL_THRESHOLD_S = 5.0
#: how long before the stop cuts the handlers the calls still waiting for a runner get their 503 (at most a quarter of
#: the handler wait): time to write it before their connections close
PLACING_END_MARGIN_S = 0.25
#: hosts that bind every interface: the start-up line says so, not only the URL to use on this host
WILDCARD_HOSTS = ("0.0.0.0", "", "::")


def _handler_wait_s(grace: float) -> float:
    """aiohttp's shutdown_timeout for a stop within ``grace``: aiohttp waits that long for the handlers, then
    cancels them and waits as long again; it reads 0 as no limit at all, and rounds a wait over 5 s up by as
    much as a second (a 30 s grace took up to 32 s: past Kubernetes' SIGKILL), so such a wait is a second less."""
    half = grace / 2
    if half > AIOHTTP_CEIL_THRESHOLD_S:
        half = max(AIOHTTP_CEIL_THRESHOLD_S, half - 1.0)
    return max(half, 0.001)


class LBNode:
    """A running LB or API node: `url`, `agent` (its pool and metrics; None on an API node) and a graceful `stop`."""

    def __init__(
        self,
        runner: web.AppRunner,
        agent: LBAgent | None,
        store: Lookups,
        host: str,
        port: int,
        own_store: bool,
        grace: float,
    ) -> None:
        self.runner = runner
        self.agent = agent
        self.store = store
        self.host = host
        self.port = port
        self.grace = grace
        self._own_store = own_store

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        return f"http://{host}:{self.port}"

    @property
    def listening(self) -> str:
        """Where it listens, for its start-up line: a wildcard host is said as such, not as the URL to use here."""
        if self.host in WILDCARD_HOSTS:
            host = f"[{self.host}]" if ":" in self.host else self.host or "0.0.0.0"
            return f"{host}:{self.port}, every interface ({self.url} from this host)"
        return self.url

    async def stop(self, grace: float | None = None) -> None:
        """Stop within ``grace`` seconds (None: the node's): in-flight and detached calls may finish until then."""
        grace = self.grace if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        handler_wait = _handler_wait_s(grace)
        if self.agent is not None:
            # before the HTTP server cancels what is still running: those calls end as the stop's cut (`cut_by_stop`),
            # not as a client that went away (444); and no new call is placed. aiohttp cuts the handlers two waits
            # from now at the earliest: a call still waiting for a runner is answered its 503 just before
            cut_at = loop.time() + 2 * handler_wait
            self.agent.stop_placing(cut_at - min(PLACING_END_MARGIN_S, handler_wait / 4))
        self.runner._shutdown_timeout = handler_wait  # the grace of this stop, not the one given at start
        await self.runner.cleanup()  # stops listening, then waits for in-flight requests
        if self.agent is not None:
            await self.agent.close(max(0.0, deadline - loop.time()))
        if self._own_store:
            await self.store.close()
        log.info("%s %s stopped", "LB" if self.agent is not None else "API node", self.url)


async def start_lb(
    config,
    pm,
    *,
    host: str | None = None,
    port: int | None = None,
    runner_addresses: list[str] | None = None,
    local_runners: list[LocalRunner] | None = None,
    grace: float | None = None,
    sources: tuple[Lookups, Store | None] | None = None,
    listeners: list[socket.socket] | None = None,
) -> LBNode:
    """Start the API + LB over ``local_runners`` and ``runner_addresses`` (default: the selected runner pool); port 0 = any free port.

    ``grace``: how long its stop may take (None: the config's FN_SHUTDOWN_GRACE). ``sources``: the caller's
    `open_lookups`, which it keeps (None: the node opens its own). ``listeners``: sockets the caller
    claimed (`claim_port`), served instead of binding host:port."""
    grace = config.shutdown_grace_s if grace is None else grace
    host = config.host if host is None else host
    if listeners is None:
        listeners = claim_port(host, config.port if port is None else port, "LB")
    own_store = sources is None
    try:
        lookups, store = open_lookups(config) if sources is None else sources
    except BaseException:
        close_all(listeners)
        raise
    pool = _runner_set(config, pm, runner_addresses, local_runners)
    agent = LBAgent(config, pm, pool, pool.metrics)  # one LBMetrics: the pool's channels count their lost calls in it
    metrics: list[MetricsSource] = [local.core.render_metrics for local in local_runners or ()]
    metrics.append(functools.partial(plugin_metrics, pm.hook))
    app = make_app(config, store, CachedLookup(lookups), agent, metrics, pm.hook)
    # handler_cancellation: a client that goes away cancels its handler, which cancels the runner stream
    runner = app_runner(app, config, handler_cancellation=True, shutdown_timeout=_handler_wait_s(grace))
    try:
        await pool.start()  # the first runner list is in before the first call can arrive
        bound = await serve_app(runner, listeners)
    except BaseException:
        close_all(listeners)
        await runner.cleanup()
        await pool.close()
        if own_store:
            await lookups.close()
        raise
    node = LBNode(runner, agent, lookups, host, bound, own_store, grace)
    log.info(
        "LB listening on %s, placer %s, runner pool %s: %s; apps and fns from %s",
        node.listening, pm.placer.name if pm.placer else "?", pool.name, [r.address for r in pool.refs],
        f"the API node {config.runner_api_url}" if store is None else "its store",
    )
    return node


def open_lookups(config) -> tuple[Lookups, Store | None]:
    """Where an LB reads apps and fns, and the store its v2 API writes (None: it has none): an API node
    (FN_RUNNER_API_URL), or its own store (FN_DB_URL)."""
    if config.runner_api_url:
        if config.db_url:  # two sources of apps and fns: say which one wins rather than pick silently
            raise ConfigError("set runner_api_url (read apps and fns from an API node) or db_url (this node's own store), not both")
        if config.runner_api_authorization and "@" in config.runner_api_url.partition("://")[2].partition("/")[0]:
            # aiohttp would refuse every request: two credentials, and which one the API node should see is unsaid
            raise ConfigError("runner_api_url has credentials in it (user:password@) and runner_api_authorization is set: "
                              "give the API node's credentials in one of them")
        return ApiNodeStore(config.runner_api_url, authorization=config.runner_api_authorization), None
    store = open_store(config)
    return store, store


async def start_api(config, pm=None, *, host: str | None = None, port: int | None = None) -> LBNode:
    """Start an API node (Fn's ``FN_NODE_TYPE=api``): the v2 API over the ``db_url`` store, no invoke; port 0 = any free
    port. ``pm``: the plugin manager whose `check_request` sees each request, `validate_app` / `validate_fn` /
    `validate_trigger` what is saved, `validate_delete` what is deleted, `object_changed` each change, and whose
    `metric_families` add to `/metrics`."""
    host = config.host if host is None else host
    listeners = claim_port(host, config.port if port is None else port, "API node")
    try:
        store = open_store(config)
    except BaseException:
        close_all(listeners)
        raise
    hooks = pm.hook if pm is not None else None
    metrics: list[MetricsSource] = [functools.partial(plugin_metrics, hooks)] if hooks is not None else []
    app = make_app(config, store, CachedLookup(store), None, metrics, hooks)
    runner = app_runner(app, config)
    try:
        bound = await serve_app(runner, listeners)
    except BaseException:
        await store.close()
        raise
    node = LBNode(runner, None, store, host, bound, own_store=True, grace=config.shutdown_grace_s)
    log.info("API node listening on %s (v2 API; LBs read from it with FN_RUNNER_API_URL)", node.listening)
    if not config.public_lb_url:
        log.warning("FN_PUBLIC_LB_URL is not set: the invokeEndpoint and httpEndpoint annotations of fns and triggers "
                    "will name this API node, which runs no calls; set it to the LBs' address")
    return node


def claim_port(host: str, port: int, node: str) -> list[socket.socket]:
    """The node's HTTP port, bound before anything else starts (`fn_core.listen`)."""
    return claim(host, port, f"the {node} could not listen on {host}:{port} (FN_HOST, FN_PORT)")


def _runner_set(config, pm, addresses: list[str] | None, local: list[LocalRunner] | None) -> RunnerSet:
    """The selected runner pool's source, or a fixed list when the caller names the runners."""
    if addresses is not None:
        return RunnerSet(FixedRunners(addresses), config, pm, local, name="fixed")
    pool = pm.runner_pool
    try:
        source = pool.factory(config=config)
    except ConfigError:
        raise
    except Exception as exc:
        owner = pm.runner_pools[pool.name][1]
        raise PluginError(f"runner pool {pool.name!r} of plugin {owner!r} failed to start: {type(exc).__name__}: {exc}") from exc
    return RunnerSet(source, config, pm, local, name=pool.name, refresh=pool.refresh)


async def run_lb(config, pm) -> None:
    node = await start_lb(config, pm)
    await wait_for_stop_signal()
    log.info("LB shutting down: finishing in-flight calls (at most %g s)", node.grace)
    await node.stop()


async def run_api(config, pm) -> None:
    node = await start_api(config, pm)
    await wait_for_stop_signal()
    log.info("API node shutting down: finishing the requests in flight (at most %g s)", node.grace)
    await node.stop()


async def run_serve(config, pm) -> None:
    from fn_core.runner.main import start_runner

    # the port and the store first: a start-up that fails on either must not have started the runner, which
    # removes what an earlier runner with its tag left
    listeners = claim_port(config.host, config.port, "LB")
    try:
        sources = open_lookups(config)
    except BaseException:
        close_all(listeners)
        raise
    try:
        # the local runner is called in-process: no gRPC server, no socket, no HTTP/2 framing
        runner = await start_runner(config, pm, listen=False)
        try:
            node = await start_lb(config, pm, local_runners=[LocalRunner(runner.core)], sources=sources, listeners=listeners)
        except BaseException:
            await runner.stop()
            raise
        await wait_for_stop_signal()
        log.info("shutting down: LB first, then the local runner (at most %g s)", node.grace)
        deadline = asyncio.get_running_loop().time() + node.grace
        try:
            await node.stop()
        except asyncio.CancelledError:  # a second signal: no grace left, but the runner still cuts and cleans up
            await runner.stop(0)
            raise
        await runner.stop(max(0.0, deadline - asyncio.get_running_loop().time()))  # one grace for the whole node
    finally:
        close_all(listeners)  # served ones were closed by the server: this is for a failed start
        await sources[0].close()
