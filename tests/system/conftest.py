"""Real processes on 127.0.0.1: `fn-core lb` + `fn-core runner` subprocesses, real Docker, the fdk echo image.

Every runner process gets its own ``FN_CONTAINER_LABEL_TAG`` (a starting runner removes other
instances' containers with its tag), and every container carrying one of them is removed at
the end of the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import empty_pb2

from fn_core.proto.runner_pb2_grpc import RunnerProtocolStub
from fn_core.testing import free_port
from fn_core.wire import status_from_proto

from .engine_relay import EngineRelay
from .go_tools import build as build_go_tools

FN_CORE = str(Path(sys.executable).parent / "fn-core")
CLASSIFIER_LABEL = "fn-agent-classifier"
CALL_LINE = re.compile(r"call finished call_id=(\S+) app_id=\S+ fn_id=(\S+) runner=(\S+) status=(\d+) attempts=(\d+)")


def node_env(**env: str) -> dict[str, str]:
    """The test's environment less its own FN_* (a node reads only what the test gives it), plus ``env``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("FN_")}, **env}


class Proc:
    """One `fn-core` process, its stdout and stderr in ``<log_dir>/<name>.log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen([FN_CORE, *args], env=node_env(**env), stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call_lines(self) -> list[tuple[str, str, str, int, int]]:
        return [(c, f, r, int(s), int(a)) for c, f, r, s, a in CALL_LINE.findall(self.log())]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()
        return self.popen.returncode


def tls_env(pki: dict[str, str], **override: str | None) -> dict[str, str]:
    """The three settings from ``pki``; ``FN_...=None`` leaves one out, ``FN_...=path`` replaces it."""
    env: dict[str, str | None] = {"FN_NODE_CERT": pki["node_cert"], "FN_NODE_CERT_KEY": pki["node_cert_key"],
                                  "FN_NODE_CERT_AUTHORITY": pki["node_cert_authority"], **override}
    return {k: v for k, v in env.items() if v is not None}


def credentials(pki: dict[str, str], with_cert: bool = True) -> grpc.ChannelCredentials:
    """grpcio's TLS to a runner: trusting ``pki``'s CA, presenting its certificate unless ``with_cert`` is False."""
    read = lambda p: Path(p).read_bytes()  # noqa: E731
    if not with_cert:
        return grpc.ssl_channel_credentials(read(pki["node_cert_authority"]))
    return grpc.ssl_channel_credentials(read(pki["node_cert_authority"]), read(pki["node_cert_key"]), read(pki["node_cert"]))


async def post(session: aiohttp.ClientSession, path: str, body: bytes | dict | None = None, **kw):
    """(status, headers, body) of a POST; a dict ``body`` is sent as JSON (the echo function's instructions)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    async with session.post(path, data=data, **kw) as r:
        return r.status, r.headers, await r.read()


async def runner_status(address: str, credentials: grpc.ChannelCredentials | None = None):
    """The runner's Status over gRPC: plaintext, or over TLS with ``credentials`` (a runner given FN_NODE_CERT...)."""
    channel = grpc.aio.insecure_channel(address) if credentials is None else grpc.aio.secure_channel(address, credentials)
    async with channel:
        return status_from_proto(await RunnerProtocolStub(channel).Status(empty_pb2.Empty(), timeout=5))


async def wait_runner(proc: Proc, address: str, credentials: grpc.ChannelCredentials | None = None) -> None:
    """Until the RunnerProtocol's Status answers on ``address``."""
    for _ in range(300):  # bounded: ~30 s
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}): {proc.log()}")
        try:
            await runner_status(address, credentials)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"runner {address} never answered: {proc.log()}")


async def wait_http(proc: Proc, url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.popen.poll() is not None:
                raise AssertionError(f"{proc.name} exited: {proc.log()}")
            try:
                async with session.get(url + "/version") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{proc.name} never answered: {proc.log()}")


@pytest.fixture
async def platform(tmp_path, docker_client, echo_image):
    """``await platform.runner(**env)``, ``await platform.lb(runners, placer=..., **env)``, ``platform.serve(...)``;
    ``runner(grpc_port=...)`` and ``lb(runners, port=...)`` start a node again in the place of one that stopped;
    any other `fn-core` command line with ``platform.start(name, args, **env)`` (a runner's containers labelled
    ``platform.tag()``), waited for with ``platform.wait_http(proc, url)`` or ``platform.wait_runner(proc, address)``.

    A runner serving TLS is waited for (and its ``status()`` asked) with ``platform.runner(credentials=...)``:
    grpcio channel credentials that it accepts."""
    procs: list[Proc] = []
    tags: list[str] = []
    run_id = secrets.token_hex(3)
    base_env = {"FN_IOFS_PATH": "/tmp/fn-core-sys-iofs", "FN_LOG_LEVEL": "info"}

    def tag() -> str:
        tags.append(f"fn-core-sys-{run_id}-{len(tags)}")
        return tags[-1]

    async def runner(credentials: grpc.ChannelCredentials | None = None, grpc_port: int | None = None, **env: str) -> types.SimpleNamespace:
        port, http_port = grpc_port or free_port(), free_port()  # a runner restarted in place: the same gRPC port
        proc = Proc(f"runner-{len(procs)}", ["runner", "--host", "127.0.0.1", "--grpc-port", str(port), "--port", str(http_port)],
                    {**base_env, "FN_CONTAINER_LABEL_TAG": tag(), **env}, tmp_path)
        procs.append(proc)
        address = f"127.0.0.1:{port}"
        await wait_runner(proc, address, credentials)
        return types.SimpleNamespace(proc=proc, address=address, port=port, url=f"http://127.0.0.1:{http_port}",
                                     status=lambda: runner_status(address, credentials))

    async def lb(runners: list[Any], placer: str = "ch", port: int | None = None, **env: str) -> types.SimpleNamespace:
        port = port or free_port()  # an LB restarted in place: the same port, and so the same store (lb-<port>.db)
        args = ["lb", "--host", "127.0.0.1", "--port", str(port), "--placer", placer, "--db", f"sqlite3://{tmp_path}/lb-{port}.db"]
        for r in runners:
            args += ["--runner", r.address]
        name = f"lb-{port}" if not any(p.name == f"lb-{port}" for p in procs) else f"lb-{port}-{len(procs)}"  # its own log
        proc = Proc(name, args, {**base_env, **env}, tmp_path)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        await wait_http(proc, url)
        return types.SimpleNamespace(proc=proc, url=url, port=port)

    async def serve(**env: str) -> types.SimpleNamespace:
        port = free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite3://{tmp_path}/serve.db"]
        proc = Proc(f"serve-{port}", args, {**base_env, "FN_CONTAINER_LABEL_TAG": tag(), **env}, tmp_path)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        await wait_http(proc, url)
        return types.SimpleNamespace(proc=proc, url=url)

    def start(name: str, args: list[str], **env: str) -> Proc:
        procs.append(Proc(name, args, env, tmp_path))
        return procs[-1]

    yield types.SimpleNamespace(runner=runner, lb=lb, serve=serve, start=start, tag=tag, wait_http=wait_http,
                                wait_runner=wait_runner, image=echo_image)
    for proc in reversed(procs):  # LBs were started after their runners: stop them first
        proc.stop()
    for t in tags:
        for container in docker_client.containers.list(all=True, filters={"label": f"{CLASSIFIER_LABEL}={t}"}):
            container.remove(force=True)


async def deploy(session: aiohttp.ClientSession, image: str, app: str = "sysapp", **fn: Any) -> dict[str, Any]:
    async with session.post("/v2/apps", json={"name": app}) as r:
        assert r.status == 200, await r.text()
        app_json = await r.json()
    spec = {"name": "echo", "app_id": app_json["id"], "image": image, **fn}
    async with session.post("/v2/fns", json=spec) as r:
        assert r.status == 200, await r.text()
        return {"app": app_json, "fn": await r.json()}


@pytest.fixture
def deploy_echo():
    return deploy


@pytest.fixture
async def relay(tmp_path):
    """A relay to the Docker engine (`engine_relay`), up; cut at the end (before the platform's nodes stop, so none
    waits on it)."""
    relay = EngineRelay(tmp_path / "engine.sock")
    await relay.up()
    yield relay
    if relay.server is not None and relay.server.is_serving():
        await relay.down()


@pytest.fixture(scope="session")
def go_tools(tmp_path_factory):
    """``fnlb`` and ``fnrunner``, Fn's LB and pure runner on the wire (grpc-go), and ``promlint`` (`go_tools`)."""
    return build_go_tools(tmp_path_factory.mktemp("go-tools"))


class GoRunner:
    """An ``fnrunner`` process on 127.0.0.1; what it printed is in ``<tmp>/<name>.log``."""

    def __init__(self, binary: Path, name: str, log_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen([str(binary), "-addr", self.address, *args], stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def calls(self, outcome: str) -> list[str]:
        """The ids of the calls it ``ran`` or ``nacked``, in order."""
        return re.findall(rf"^call (\S+) {outcome} ", self.log(), re.MULTILINE)

    async def listening(self) -> None:
        for _ in range(300):  # bounded: ~30 s
            if "listening" in self.log():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"fnrunner exited ({self.popen.returncode}): {self.log()}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"fnrunner never listened: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


@pytest.fixture
async def go_runner(go_tools, tmp_path):
    """``await go_runner(*flags)``: an Fn pure runner stand-in on grpc-go (`go/fnrunner`), listening; all are
    stopped at the end."""
    started: list[GoRunner] = []

    async def start(*args: str) -> GoRunner:
        started.append(GoRunner(go_tools.fnrunner, f"fnrunner-{len(started)}", tmp_path, *args))
        await started[-1].listening()
        return started[-1]

    yield start
    for runner in started:
        runner.stop()
