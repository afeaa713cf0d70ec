"""The gRPC floor of the split topology: a bare Engage exchange between two processes, nothing else.

Fn's protocol carries one call per bidi stream: the LB writes ``try`` and one ``data`` frame (eof),
the runner answers ``result_start``, ``data`` and ``finished``. Here a bare server (no agent, no
container) echoes the body that way and a bare client (no HTTP front, no placer) drives it, both on
uvloop, over two stacks:

* ``transport``: `fn_core.transport`, what `fn-core lb` and `fn-core runner` speak;
* ``grpcio``: grpc.aio, which they spoke until 2026-11-22 (kept here to show why they stopped).

What the split topology costs beyond `serve` cannot be less than the ``transport`` figure; the
report puts both beside the split figures.

`python -m fnbench.grpc_floor server STACK PORT SECONDS` / `client STACK PORT CALLS CLIENTS` (JSON on stdout).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from fn_core.proto import runner_pb2 as pb
from fn_core.wire import ENGAGE

from .common import FnProc, free_port, percentiles, wait_tcp

STACKS = ("transport", "grpcio")
TRY = pb.ClientMsg(**{"try": pb.TryCall(models_call_json="{}")})  # `try` is a Python keyword
BODY = b"x" * 16
RESULT_START = pb.RunnerMsg(result_start=pb.CallResultStart(http=pb.HttpRespMeta(status_code=200)))
FINISHED = pb.RunnerMsg(finished=pb.CallFinished(success=True))


def echo_reply(body_msg: pb.ClientMsg) -> list[pb.RunnerMsg]:
    return [RESULT_START, pb.RunnerMsg(data=pb.DataFrame(data=body_msg.data.data, eof=True)), FINISHED]


async def serve_transport(port: int, seconds: float) -> None:
    from fn_core.transport import GrpcServer

    async def engage(stream) -> None:
        await stream.read_message()  # try
        body = pb.ClientMsg.FromString(await stream.read_message())
        for msg in echo_reply(body):
            await stream.send(msg.SerializeToString())

    server = GrpcServer({ENGAGE: engage})
    await server.start("127.0.0.1", port)
    await asyncio.sleep(seconds)  # bounded: the server stops by itself
    await server.stop(0)


async def serve_grpcio(port: int, seconds: float) -> None:
    import grpc

    from fn_core.proto import runner_pb2_grpc

    class EchoServicer(runner_pb2_grpc.RunnerProtocolServicer):
        async def Engage(self, request_iterator, context):
            await context.read()  # try
            body = await context.read()
            for msg in echo_reply(body):
                await context.write(msg)

    server = grpc.aio.server()
    runner_pb2_grpc.add_RunnerProtocolServicer_to_server(EchoServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await asyncio.sleep(seconds)
    await server.stop(0)


async def client_transport(port: int) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    from fn_core.transport import Channel

    channel = Channel(f"127.0.0.1:{port}")
    try_bytes = TRY.SerializeToString()
    data_bytes = pb.ClientMsg(data=pb.DataFrame(data=BODY, eof=True)).SerializeToString()

    async def one() -> None:
        stream = await channel.open(ENGAGE)
        await stream.send_message(try_bytes)
        await stream.send_message(data_bytes, end_stream=True)
        while (raw := await stream.read_message()) is not None:  # to the status, as the LB does
            pb.RunnerMsg.FromString(raw)
        stream.close()

    return one, channel.close


async def client_grpcio(port: int) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    import grpc

    from fn_core.proto import runner_pb2_grpc

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = runner_pb2_grpc.RunnerProtocolStub(channel)

    async def one() -> None:
        stream = stub.Engage()
        await stream.write(TRY)
        await stream.write(pb.ClientMsg(data=pb.DataFrame(data=BODY, eof=True)))
        for _ in range(3):
            await stream.read()
        await stream.code()  # the call ends with its status, as the LB's does

    return one, channel.close


async def drive(stack: str, port: int, calls: int, clients: int) -> dict[str, float]:
    one, close = await (client_transport if stack == "transport" else client_grpcio)(port)
    latencies: list[float] = []

    async def client(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client(200 // clients + 1) for _ in range(clients)))  # warm-up
    latencies.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(client(calls // clients) for _ in range(clients)))
    wall = time.perf_counter() - t0
    await close()
    return {**percentiles(latencies), "throughput_per_s": round(len(latencies) / wall, 1), "calls": len(latencies)}


def measure(levels: dict[int, int]) -> dict[str, dict[str, dict[str, float]]]:
    """{clients: calls} -> {stack: figures per level}, each level in a fresh client process against one server."""
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    command = (sys.executable, "-m", "fnbench.grpc_floor")
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="fnb-grpc-floor-") as workdir:
        for stack in STACKS:
            port = free_port()
            server = FnProc(f"grpc-floor-{stack}", ["server", stack, str(port), "300"], env,
                            Path(workdir) / f"{stack}.log", command=command).start()
            try:
                wait_tcp(port, server, timeout_s=30)
                out[stack] = {}
                for clients, calls in levels.items():
                    done = subprocess.run([*command, "client", stack, str(port), str(calls), str(clients)],
                                          env={**os.environ, **env}, capture_output=True, text=True,
                                          timeout=240, check=True)
                    out[stack][str(clients)] = json.loads(done.stdout)
            finally:
                server.stop(timeout_s=10)
    return out


if __name__ == "__main__":
    mode, stack, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if stack not in STACKS:
        sys.exit(f"stack must be one of {', '.join(STACKS)}")
    if mode == "server":
        uvloop.run((serve_transport if stack == "transport" else serve_grpcio)(port, float(sys.argv[4])))
    else:
        print(json.dumps(uvloop.run(drive(stack, port, int(sys.argv[4]), int(sys.argv[5])))))
