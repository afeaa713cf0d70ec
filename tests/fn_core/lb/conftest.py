"""A fake gRPC runner (Fn's RunnerProtocol) and an in-process LB, for fast placement tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import grpc
import pytest

from fn_core import hookimpl
from fn_core.config import load_config
from fn_core.lb.main import start_lb
from fn_core.plugins import get_plugin_manager
from fn_core.proto import runner_pb2 as pb
from fn_core.proto import runner_pb2_grpc
from fn_core.records import RunnerStatus
from fn_core.wire import status_to_proto


class FakeRunner(runner_pb2_grpc.RunnerProtocolServicer):
    """Answers each Engage by ``behaviour(call_dict, body) -> action``.

    Actions: "echo" (200, body echoed in 4 KiB frames), "nack", ("error", code, msg), "hang"
    (waits until cancelled), "start-hang" (result_start, then waits until cancelled), "hold"
    (echoes once `release` is set), ("status", code, headers) (result_start with that status/headers), ("script",
    [message, ...]) (those RunnerMsgs in order, and nothing else).
    """

    def __init__(self, behaviour: Any = "echo") -> None:
        self.behaviour = behaviour
        self.calls: list[dict[str, Any]] = []
        self.frames: list[list[pb.DataFrame]] = []
        self.tries: list[pb.TryCall] = []
        self.metadata: list[dict[str, str]] = []
        self.cancelled = 0
        self.hanging = asyncio.Event()
        self.release = asyncio.Event()
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self, port: int = 0) -> FakeRunner:
        self.server = grpc.aio.server()
        runner_pb2_grpc.add_RunnerProtocolServicer_to_server(self, self.server)
        port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)

    async def Status(self, request: Any, context: Any) -> pb.RunnerStatus:
        return status_to_proto(RunnerStatus(active=0, requests_received=len(self.calls)))

    async def Engage(self, request_iterator: Any, context: Any):
        it = request_iterator.__aiter__()
        first = await it.__anext__()
        try_call = getattr(first, "try")
        frames = []
        async for msg in it:
            frames.append(msg.data)
            if msg.data.eof:
                break
        call = json.loads(try_call.models_call_json)
        body = b"".join(f.data for f in frames)
        self.calls.append(call)
        self.tries.append(try_call)
        self.frames.append(frames)
        self.metadata.append(dict(context.invocation_metadata()))
        action = self.behaviour(call, body) if callable(self.behaviour) else self.behaviour
        if action == "nack":
            yield pb.RunnerMsg(finished=pb.CallFinished(success=False, errorCode=503, errorStr="Timed out - server too busy"))
            return
        if action == "start-hang":
            yield pb.RunnerMsg(result_start=pb.CallResultStart(http=pb.HttpRespMeta(status_code=202)))
        if action in ("hang", "start-hang"):
            self.hanging.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if action == "hold":
            self.hanging.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if isinstance(action, tuple) and action[0] == "script":
            for message in action[1]:
                yield message
            return
        if isinstance(action, tuple) and action[0] == "error":
            yield pb.RunnerMsg(finished=pb.CallFinished(success=False, errorCode=action[1], errorStr=action[2], errorUser=True))
            return
        status, headers = 200, {"Content-Type": "application/octet-stream", "X-Echo": "yes"}
        if isinstance(action, tuple) and action[0] == "status":
            status, headers = action[1], action[2]
        meta = pb.HttpRespMeta(status_code=status, headers=[pb.HttpHeader(key=k, value=v) for k, v in headers.items()])
        yield pb.RunnerMsg(result_start=pb.CallResultStart(http=meta))
        for i in range(0, len(body), 4096):
            yield pb.RunnerMsg(data=pb.DataFrame(data=body[i : i + 4096]))
        yield pb.RunnerMsg(finished=pb.CallFinished(success=True, details=call["id"]))


class Recorder:
    """A plugin recording every call_finished outcome."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    @hookimpl
    def call_finished(self, call: Any, outcome: Any) -> None:
        self.outcomes.append((call, outcome))


@pytest.fixture
async def fake_runners():
    started: list[FakeRunner] = []

    async def make(behaviour: Any = "echo", port: int = 0) -> FakeRunner:
        runner = await FakeRunner(behaviour).start(port)
        started.append(runner)
        return runner

    yield make
    for runner in started:
        await runner.stop()


@pytest.fixture
async def lb_factory(tmp_path):
    """Start an in-process LB on 127.0.0.1 over the given runner addresses (None: its runner pool); returns (node, session, recorder)."""
    nodes, sessions = [], []

    async def make(addresses: list[str] | None, *, plugins: tuple = (), **overrides: Any):
        recorder = Recorder()
        settings = {"db_url": f"sqlite3://{tmp_path}/fn-{len(nodes)}.db", "placer": "ch", "placer_timeout_s": 5.0}
        settings.update(overrides)
        config = load_config(env={}, overrides=settings)
        pm = get_plugin_manager(config, load_entrypoints=False, extra_plugins=[("recorder", recorder), *plugins])
        # addresses None: the runners come from the selected runner pool plugin
        node = await start_lb(config, pm, host="127.0.0.1", port=0, runner_addresses=addresses, grace=5.0)
        session = aiohttp.ClientSession(node.url, timeout=aiohttp.ClientTimeout(total=30))
        nodes.append(node)
        sessions.append(session)
        return node, session, recorder

    yield make
    for session in sessions:
        await session.close()
    for node in nodes:
        await node.stop()


async def deploy(
    session: aiohttp.ClientSession, *, fn: dict | None = None, trigger_source: str | None = None, app: str = "app1"
) -> dict[str, Any]:
    """Create an app, an fn (and a trigger) through the API; return their JSON."""
    async with session.post("/v2/apps", json={"name": app, "config": {"A": "app", "B": "app"}}) as r:
        assert r.status == 200, await r.text()
        app = await r.json()
    spec = {"name": "fn1", "app_id": app["id"], "image": "example/echo:1", "config": {"B": "fn"}, **(fn or {})}
    async with session.post("/v2/fns", json=spec) as r:
        assert r.status == 200, await r.text()
        fn_json = await r.json()
    out = {"app": app, "fn": fn_json}
    if trigger_source is not None:
        body = {"name": "t1", "app_id": app["id"], "fn_id": fn_json["id"], "type": "http", "source": trigger_source}
        async with session.post("/v2/triggers", json=body) as r:
            assert r.status == 200, await r.text()
            out["trigger"] = await r.json()
    return out


@pytest.fixture
def deploy_fn() -> Callable[..., Any]:
    return deploy
