"""Start and stop a runner node: driver, agent and the gRPC server (`fn-core runner`, and in-process for `serve`)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from fn_core.config import Config
from fn_core.errors import ConfigError
from fn_core.plugins import FnPluginManager
from fn_core.runner import output
from fn_core.runner.agent import Agent
from fn_core.runner.driver import ContainerDriver
from fn_core.runner.iofs import SocketDirs
from fn_core.runner.servicer import RunnerServicer
from fn_core.signals import wait_for_stop_signal
from fn_core.transport import GrpcServer

log = logging.getLogger(__name__)


class RunnerNode:
    """A running runner: its bound address (if it listens), its agent, and a graceful `stop`.

    ``core`` serves the calls; an LB in the same process uses it directly (`LocalRunner`).
    """

    def __init__(
        self, server: GrpcServer | None, servicer: RunnerServicer, agent: Agent, driver: ContainerDriver, host: str, port: int
    ) -> None:
        self.server = server
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

    async def stop(self, grace: float = 30.0) -> None:
        """NACK new calls, let in-flight calls finish (up to ``grace`` s), remove our containers."""
        if self._stopped:
            return
        self._stopped = True
        self.agent.begin_shutdown()
        deadline = time.monotonic() + grace
        while self.core.active and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.server is not None:
            await self.server.stop(max(0.0, min(1.0, deadline - time.monotonic())))
        await self.agent.close()
        await self.driver.close()
        log.info("runner %s stopped", self.address)


def _tls_context(config: Config) -> ssl.SSLContext | None:
    """TLS with the node's certificate; with a CA, clients must present a certificate it signed (mTLS)."""
    if not (config.node_cert or config.node_cert_key or config.node_cert_authority):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(config.node_cert, config.node_cert_key or None)
        if config.node_cert_authority:
            context.load_verify_locations(cafile=config.node_cert_authority)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS files for the runner: {exc}") from None
    context.set_alpn_protocols(["h2"])
    return context


async def start_runner(
    config: Config, pm: FnPluginManager, *, host: str | None = None, port: int | None = None, listen: bool = True
) -> RunnerNode:
    """Start driver (removing leaked containers of ours), agent and gRPC server; port 0 = any free port.

    ``listen=False``: no gRPC server, for an LB in this process that calls ``node.core`` directly.
    """
    if pm.driver is None:
        raise ConfigError("no container driver selected (the plugin manager was built with select=False)")
    host = host if host is not None else config.host
    port = port if port is not None else config.grpc_port
    SocketDirs.from_config(config).check()  # FN_IOFS_TMPFS that cannot work stops start-up, with why
    tls = _tls_context(config) if listen else None  # bad TLS files stop start-up before anything runs
    driver: ContainerDriver = pm.driver.factory(config=config, hook=pm.hook)
    try:
        await driver.start()
    except BaseException:
        await driver.close()  # whatever it opened before failing (e.g. a bad FN_DOCKER_LOAD_FILE)
        raise
    # Fn's full mode logs functions' output; a pure runner drops it (an app's syslog_url keeps it)
    agent = Agent(config, driver, function_output=output.wanted(serve=not listen, disabled=config.disable_debug_user_logs))
    servicer = RunnerServicer(agent, pm.hook, status_image=config.status_image)
    if not listen:
        return RunnerNode(None, servicer, agent, driver, host, 0)
    server = GrpcServer(servicer.handlers(), tls)
    try:
        bound = await server.start(host, port)
    except OSError as exc:
        await driver.close()
        raise ConfigError(f"the runner could not bind {host}:{port}: {exc}") from None
    return RunnerNode(server, servicer, agent, driver, host, bound)


async def run_runner(config: Config, pm: FnPluginManager) -> None:
    """`fn-core runner`: serve until SIGTERM/SIGINT, then stop gracefully."""
    node = await start_runner(config, pm, host=config.host, port=config.grpc_port)
    log.info("runner listening on %s (gRPC RunnerProtocol), driver %s", node.address, pm.driver.name if pm.driver else "?")
    try:
        await wait_for_stop_signal()
    finally:
        log.info("runner %s shutting down: finishing in-flight calls", node.address)
        await node.stop()
