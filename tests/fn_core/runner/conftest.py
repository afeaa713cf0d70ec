"""A real runner on 127.0.0.1 (port 0) driven over real gRPC, with the real fdk echo image."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import attrs
import grpc
import pytest

from fn_core.config import load_config
from fn_core.images import IMAGE_LABEL
from fn_core.models import Call
from fn_core.plugins import get_plugin_manager
from fn_core.proto import runner_pb2 as pb
from fn_core.proto import runner_pb2_grpc
from fn_core.runner.main import start_runner
from fn_core.testing import build_image
from fn_core.wire import MAX_DATA_CHUNK

LABEL = "fn-agent-classifier"


@attrs.define
class Result:
    started: bool = False
    status: int = 0
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    finished: Any = None
    frames: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


def make_call(image: str, **kwargs: Any) -> Call:
    defaults: dict[str, Any] = {"id": uuid.uuid4().hex, "app_id": "app1", "fn_id": "fn1", "image": image, "timeout": 10, "idle_timeout": 30}
    defaults.update(kwargs)
    return Call(**defaults)


async def engage(address: str, call_json: str, body: bytes = b"", *, slot: str = "", extensions: dict[str, str] | None = None) -> Result:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = runner_pb2_grpc.RunnerProtocolStub(channel)
        stream = stub.Engage()
        await stream.write(pb.ClientMsg(**{"try": pb.TryCall(models_call_json=call_json, slot_hash_id=slot, extensions=extensions or {})}))
        chunks = [body[i : i + MAX_DATA_CHUNK] for i in range(0, len(body), MAX_DATA_CHUNK)] or [b""]
        for i, chunk in enumerate(chunks):
            try:
                await stream.write(pb.ClientMsg(data=pb.DataFrame(data=chunk, eof=i == len(chunks) - 1)))
            except grpc.aio.AioRpcError:
                break  # the runner already answered (a refused call ends before its body is read)
        result = Result()
        parts = []
        async for msg in stream:
            kind = msg.WhichOneof("body")
            if kind == "result_start":
                assert not result.started, "result_start sent twice"
                result.started = True
                result.status = msg.result_start.http.status_code
                result.headers = {h.key.lower(): h.value for h in msg.result_start.http.headers}
            elif kind == "data":
                assert result.started and not msg.data.eof and len(msg.data.data) <= MAX_DATA_CHUNK
                parts.append(msg.data.data)
                result.frames += 1
            else:
                assert result.finished is None, "finished sent twice"
                result.finished = msg.finished
        result.body = b"".join(parts)
        return result


async def run_call(address: str, call: Call, body: bytes | dict[str, Any] = b"", **kwargs: Any) -> Result:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return await engage(address, call.to_json(), raw, **kwargs)


def our_containers(docker_client: Any, tag: str) -> list[Any]:
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL}={tag}"})


@pytest.fixture
def label_tag(docker_client: Any) -> Any:
    tag = f"fn-core-test-{secrets.token_hex(4)}"
    yield tag
    for container in our_containers(docker_client, tag):  # belt and braces: never leak onto the shared engine
        container.remove(force=True)


@pytest.fixture
async def start(label_tag: str, echo_image: str) -> Any:
    """``await start(**config_overrides, plugins=[...])`` -> a started RunnerNode, stopped after the test.

    ``listen=False``: the runner of `fn-core serve` (no gRPC server; call ``node.core`` through `LocalRunner`).
    ``http=True``: with its HTTP port (`/metrics`) as `fn-core runner` has, on any free port (``node.http_port``).
    """
    nodes = []

    async def _start(plugins: list[tuple[str, object]] = (), listen: bool = True, http: bool = False, **overrides: Any) -> Any:
        overrides.setdefault("container_label_tag", label_tag)
        overrides.setdefault("iofs_path", "/tmp/fn-core-test-iofs")
        config = load_config(env={}, overrides=overrides)
        pm = get_plugin_manager(config, load_entrypoints=False, extra_plugins=plugins)
        node = await start_runner(config, pm, host="127.0.0.1", port=0, http_port=0 if http else None, listen=listen)
        nodes.append(node)
        return node

    yield _start
    for node in nodes:
        await node.stop(grace=5)


@pytest.fixture
def rc(docker_client: Any, label_tag: str, echo_image: str) -> Any:
    """The helpers above, bound to this test (``--import-mode=importlib`` forbids importing conftest)."""
    import types

    return types.SimpleNamespace(
        engage=engage,
        run=run_call,
        call=lambda **kw: make_call(echo_image, **kw),
        containers=lambda: our_containers(docker_client, label_tag),
    )


@pytest.fixture(scope="session")
def slow_start_image(docker_client, echo_image) -> str:
    """The echo function behind a runtime that takes the fn's config ``START_DELAY_MS`` to start listening
    (as a JVM or heavy imports would; the fdk itself imports the function only at the first call)."""
    start = ("import os, sys, time; time.sleep(int(os.environ.get('START_DELAY_MS', '0')) / 1000); "
             "from fdk.scripts.fdk import main; sys.exit(main())")
    dockerfile = f"FROM {echo_image}\nLABEL {IMAGE_LABEL}=function\nENTRYPOINT {json.dumps(['/usr/bin/python3', '-c', start])}\n"
    dockerfile += 'CMD ["/function/func.py", "handler"]\n'  # a new ENTRYPOINT drops the inherited CMD
    return build_image(docker_client, dockerfile, "fn-core-test/slow-start:latest")
