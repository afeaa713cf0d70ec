"""Start and stop a runner node: driver, agent, the gRPC server and, as Fn's pure runner, an HTTP port for
`/`, `/version` and `/metrics` (`fn-core runner`; in-process for `serve`, whose own HTTP port shows them)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import ssl
import time

import docker.errors

from fn_core.api.admin import admin_app
from fn_core.api.connection import FnAppRunner, app_runner, serve_app
from fn_core.config import Config
from fn_core.errors import ConfigError
from fn_core.hook_calls import plugin_metrics
from fn_core.listen import claim, close_all
from fn_core.plugins import FnPluginManager
from fn_core.runner import output
from fn_core.runner.agent import Agent
from fn_core.runner.driver import ContainerDriver
from fn_core.runner.iofs import SocketDirs
from fn_core.runner.servicer import RunnerServicer
from fn_core.signals import wait_for_stop_signal
from fn_core.transport import GrpcServer
from fn_core.transport import errors as transport_errors
from fn_core.transport.tls import TLSFilesError, server_context

log = logging.getLogger(__name__)

CUT_WAIT_S = 1.0  # after the grace: how long the calls being cut are given to send their `finished`


class RunnerNode:
    """A running runner: its bound address (if it listens), its agent, and a graceful `stop`.

    ``core`` serves the calls; an LB in the same process uses it directly (`LocalRunner`).
    ``http``/``http_port``: its HTTP server (`/metrics`), if it was started with one.
    """

    def __init__(
        self, server: GrpcServer | None, servicer: RunnerServicer, agent: Agent, driver: ContainerDriver, host: str, port: int,
        grace: float,
    ) -> None:
        self.server = server
        self.grace = grace  # its stop's, unless the stop is given another (FN_SHUTDOWN_GRACE)
        self.http: FnAppRunner | None = None
        self.http_port = 0
        self.servicer = servicer
        self.core = servicer.core
        self.agent = agent
        self.driver = driver
        self.host = host
        self.port = port
        self._stopped = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """NACK new calls, let in-flight calls finish (up to ``grace`` s; None: the node's), remove our containers.

        A cancel of the stop (a second SIGTERM/SIGINT, `fn_core.signals`) ends the grace at once, not the stop: the
        calls still running are cut and the containers removed all the same (a container left running keeps its
        memory on the host, and with no label tag of its own no later runner removes it); then the cancel goes on.
        So a timeout around the stop skips its grace but does not bound it: the removals run to their end (an
        engine that hangs them is what the third signal is for)."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.grace if grace is None else grace
        self.agent.begin_shutdown()
        cut_short = False
        deadline = time.monotonic() + grace
        why = f"the stop's grace of {grace:g} s is over"
        try:
            await self._wait_for_calls(deadline)
        except asyncio.CancelledError:  # (delivered once: the awaits below are not cancelled again)
            cut_short, deadline, why = True, time.monotonic(), "the stop was cut short"
        ending = asyncio.ensure_future(self._end(deadline, why))
        try:
            await asyncio.shield(ending)
        except asyncio.CancelledError:  # came after the grace: the rest of the stop still runs
            cut_short = True
            await ending
        if cut_short:
            raise asyncio.CancelledError

    async def _wait_for_calls(self, deadline: float) -> None:
        began = time.monotonic()
        waited_for = self.core.active
        while self.core.active and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if waited_for:  # what the stop waited for, and how long: read beside the LBs' lines of those calls
            log.info("waited %.1f s for the calls in flight (%d at the stop, %d still running)", time.monotonic() - began,
                     waited_for, self.core.active)

    async def _end(self, deadline: float, why: str) -> None:
        """Cut the calls still running, stop serving, remove the containers."""
        if self.core.active:  # the grace is over: each call still running ends with its `finished`, then the streams go
            log.warning("%s: cutting the calls still running (%d; each ends as 500, never re-sent)", why, self.core.active)
            self.agent.cut_running_calls()
            cut_by = time.monotonic() + CUT_WAIT_S
            while self.core.active and time.monotonic() < cut_by:
                await asyncio.sleep(0.01)
        if self.server is not None:
            await self.server.stop(max(0.0, min(1.0, deadline - time.monotonic())))
        await self.agent.close()
        await self.driver.close()
        if self.http is not None:  # last: /metrics shows the drain until the end
            await self.http.cleanup()
        log.info("runner %s stopped", self.address if self.server is not None else "(in this process)")


#: what a runner's operator is told to check when a client's (an LB's) TLS handshake failed as a mismatch does
TLS_REFUSAL_HINTS = {
    transport_errors.CLIENT_SENT_NO_CERTIFICATE: "the client sent no certificate: an LB needs FN_NODE_CERT and "
    "FN_NODE_CERT_KEY, signed by the CA of this runner's FN_NODE_CERT_AUTHORITY",
    transport_errors.CLIENT_CERTIFICATE_UNTRUSTED: "the client's certificate is not signed by the CA of this runner's "
    "FN_NODE_CERT_AUTHORITY",
    transport_errors.CLIENT_CERTIFICATE_EXPIRED: "the client's certificate (an LB's FN_NODE_CERT) has expired or is not "
    "valid yet: renew it",
    transport_errors.CLIENT_REFUSED_CERTIFICATE: "the client does not trust this runner's certificate (FN_NODE_CERT): the "
    "LB's FN_NODE_CERT_AUTHORITY must be the CA that signed it, for the address the LB dials",
    transport_errors.CLIENT_NOT_TLS: "the client speaks plaintext, and this runner serves TLS only (FN_NODE_CERT is set): "
    "an LB speaks TLS to runners with FN_NODE_CERT_AUTHORITY",
}


def _tls_context(config: Config) -> ssl.SSLContext | None:
    """As Fn's pure runner: TLS only as mTLS, with this node's certificate, and every client (an LB) must present
    a certificate that FN_NODE_CERT_AUTHORITY signed. Half of it set stops start-up: a runner with a certificate
    but no CA would take calls from any client that reaches its port."""
    if not (config.node_cert or config.node_cert_key or config.node_cert_authority):
        return None
    missing = [name for name, value in (("FN_NODE_CERT", config.node_cert), ("FN_NODE_CERT_AUTHORITY", config.node_cert_authority))
               if not value]
    if missing:
        raise ConfigError(
            f"TLS for the runner: {' and '.join(missing)} not set; a runner serves TLS only with its certificate "
            f"(FN_NODE_CERT, and FN_NODE_CERT_KEY unless the key is in that file) and the CA that signed the LBs' "
            f"(FN_NODE_CERT_AUTHORITY), or set none of them for plaintext"
        )
    try:
        return server_context(
            ("FN_NODE_CERT", config.node_cert), ("FN_NODE_CERT_KEY", config.node_cert_key),
            ("FN_NODE_CERT_AUTHORITY", config.node_cert_authority),
        )
    except TLSFilesError as exc:
        raise ConfigError(f"TLS for the runner: {exc}") from None


def is_docker_unreachable(exc: BaseException) -> bool:
    # an APIError is the engine's own answer (it was reached); the SDK's other errors mean it was not
    return isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError)


def docker_unreachable(exc: BaseException) -> ConfigError:
    """One line for an engine that did not answer (no socket, refused, a bad DOCKER_HOST), naming where it was sought."""
    host = os.environ.get("DOCKER_HOST")
    where = f"DOCKER_HOST={host}" if host else "DOCKER_HOST unset: unix:///var/run/docker.sock"
    return ConfigError(f"cannot reach the Docker engine ({where}): {exc}")


async def start_runner(
    config: Config,
    pm: FnPluginManager,
    *,
    host: str | None = None,
    port: int | None = None,
    http_port: int | None = None,
    listen: bool = True,
) -> RunnerNode:
    """Claim the ports, then start driver (removing leaked containers of ours), agent and gRPC server; port 0 =
    any free port. A port that is taken stops start-up before anything of an earlier runner is removed.

    ``http_port``: also serve `/`, `/version` and `/metrics` over HTTP there (None: no HTTP server;
    `fn-core runner` passes ``FN_PORT``). ``listen=False``: no servers at all, for an LB in this process
    that calls ``node.core`` directly.
    """
    if pm.driver is None:
        raise ConfigError("no container driver selected (the plugin manager was built with select=False)")
    host = host if host is not None else config.host
    port = port if port is not None else config.grpc_port
    tls = _tls_context(config) if listen else None  # bad TLS files stop start-up before anything runs
    # the ports first: a start-up that fails for a taken port must not have swept what a live runner with this
    # tag holds (its containers and socket dirs)
    grpc_sockets = claim(host, port, f"the runner could not bind {host}:{port}") if listen else []
    try:
        http_sockets = (
            claim(host, http_port, f"the runner could not bind {host}:{http_port} for HTTP (FN_PORT: /metrics)")
            if listen and http_port is not None else []
        )
    except BaseException:
        close_all(grpc_sockets)
        raise
    try:
        return await _start(config, pm, host, tls, grpc_sockets, http_sockets, listen)
    except BaseException:
        close_all(grpc_sockets + http_sockets)  # those not yet served on (serving ones were closed by their server)
        raise


async def _start(
    config: Config, pm: FnPluginManager, host: str, tls: ssl.SSLContext | None, grpc_sockets: list[socket.socket],
    http_sockets: list[socket.socket], listen: bool,
) -> RunnerNode:
    assert pm.driver is not None
    SocketDirs.from_config(config).check()  # FN_IOFS_TMPFS that cannot work stops start-up, with why
    driver: ContainerDriver = pm.driver.factory(config=config, hook=pm.hook)
    try:
        await driver.start()
    except BaseException as exc:
        await driver.close()  # whatever it opened before failing (e.g. a bad FN_DOCKER_LOAD_FILE)
        if is_docker_unreachable(exc):
            raise docker_unreachable(exc) from None
        raise
    # Fn's full mode logs functions' output; a pure runner drops it (an app's syslog_url keeps it)
    agent = Agent(config, driver, function_output=output.wanted(serve=not listen, disabled=config.disable_debug_user_logs))
    servicer = RunnerServicer(agent, pm.hook, status_image=config.status_image, max_body=config.max_request_size)
    if not listen:
        return RunnerNode(None, servicer, agent, driver, host, 0, config.shutdown_grace_s)
    server = GrpcServer(servicer.handlers(), tls, TLS_REFUSAL_HINTS, keepalive_s=config.grpc_keepalive_s)
    bound = await server.serve(grpc_sockets)
    node = RunnerNode(server, servicer, agent, driver, host, bound, config.shutdown_grace_s)
    if http_sockets:
        http = app_runner(admin_app(config, [servicer.core.render_metrics, functools.partial(plugin_metrics, pm.hook)]), config)
        try:
            node.http_port = await serve_app(http, http_sockets)
        except BaseException:
            await node.stop(grace=0)
            raise
        node.http = http
    return node


async def run_runner(config: Config, pm: FnPluginManager) -> None:
    """`fn-core runner`: serve until SIGTERM/SIGINT, then stop gracefully."""
    node = await start_runner(config, pm, host=config.host, port=config.grpc_port, http_port=config.port)
    log.info("runner listening on %s (gRPC RunnerProtocol, %s) and on %s:%d (HTTP: /, /version, /metrics, /debug/stacks), driver %s", node.address,
             "plaintext" if node.server is None or node.server.ssl_context is None else "mTLS: LBs need a certificate its CA signed",
             node.host, node.http_port, pm.driver.name if pm.driver else "?")
    try:
        await wait_for_stop_signal()
    finally:
        log.info("runner %s shutting down: finishing in-flight calls (at most %g s)", node.address, node.grace)
        await node.stop()
