"""Start and stop a runner node: driver, agent and the grpc.aio server (`fn-core runner`, and in-process for `serve`)."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import grpc

from fn_core.config import Config
from fn_core.errors import ConfigError
from fn_core.plugins import FnPluginManager
from fn_core.proto import runner_pb2_grpc
from fn_core.runner.agent import Agent
from fn_core.runner.driver import ContainerDriver
from fn_core.runner.servicer import RunnerServicer
from fn_core.signals import wait_for_stop_signal

log = logging.getLogger(__name__)

# Response frames are <= 10 KiB, but a TryCall may carry a large call JSON (config, headers).
GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.max_send_message_length", 64 * 1024 * 1024)]


class RunnerNode:
    """A running runner: its bound address (if it listens), its agent, and a graceful `stop`.

    ``core`` serves the calls; an LB in the same process uses it directly (`LocalRunner`).
    """

    def __init__(
        self, server: grpc.aio.Server | None, servicer: RunnerServicer, agent: Agent, driver: ContainerDriver, host: str, port: int
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
            await self.server.stop(grace=max(0.0, min(1.0, deadline - time.monotonic())))
        await self.agent.close()
        await self.driver.close()
        log.info("runner %s stopped", self.address)


def _tls_credentials(config: Config) -> grpc.ServerCredentials | None:
    if not (config.node_cert or config.node_cert_key or config.node_cert_authority):
        return None
    try:
        with open(config.node_cert, "rb") as f:
            cert = f.read()
        with open(config.node_cert_key, "rb") as f:
            key = f.read()
        ca = None
        if config.node_cert_authority:
            with open(config.node_cert_authority, "rb") as f:
                ca = f.read()
    except OSError as exc:
        raise ConfigError(f"TLS files for the runner: {exc}") from None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


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
    os.makedirs(config.iofs_path, mode=0o755, exist_ok=True)
    driver: ContainerDriver = pm.driver.factory(config=config, hook=pm.hook)
    try:
        await driver.start()
    except BaseException:
        await driver.close()  # whatever it opened before failing (e.g. a bad FN_DOCKER_LOAD_FILE)
        raise
    agent = Agent(config, driver)
    servicer = RunnerServicer(agent, pm.hook, status_image=config.status_image)
    if not listen:
        return RunnerNode(None, servicer, agent, driver, host, 0)
    server = grpc.aio.server(options=GRPC_OPTIONS)
    runner_pb2_grpc.add_RunnerProtocolServicer_to_server(servicer, server)
    credentials = _tls_credentials(config)
    target = f"{host}:{port}"
    bound = server.add_secure_port(target, credentials) if credentials else server.add_insecure_port(target)
    if not bound:
        await driver.close()
        raise ConfigError(f"the runner could not bind {target}")
    await server.start()
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
