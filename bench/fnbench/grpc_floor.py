"""The gRPC floor of the split topology: a bare Engage exchange between two processes, nothing else.

Fn's protocol carries one call per bidi stream: the LB writes ``try`` and one ``data`` frame (eof),
the runner answers ``result_start``, ``data`` and ``finished``. Here a bare grpc.aio servicer (no
agent, no container) echoes the body that way, and a bare client (no HTTP front, no placer) drives
it, both on uvloop and with the gRPC core settings of `fn-core lb` and `fn-core runner`. What the
split topology costs beyond `serve` cannot be less than this; the report puts it beside the split
figures.

`python -m fnbench.grpc_floor server PORT SECONDS` / `client PORT CALLS CLIENTS` (JSON on stdout).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import uvloop

from fn_core.cli import GRPC_EXPERIMENTS_DEFAULT
from fn_core.proto import runner_pb2 as pb
from fn_core.proto import runner_pb2_grpc

from .common import FnProc, free_port, percentiles, wait_tcp

TRY = pb.ClientMsg(**{"try": pb.TryCall(models_call_json="{}")})  # `try` is a Python keyword
BODY = b"x" * 16
RESULT_START = pb.RunnerMsg(result_start=pb.CallResultStart(http=pb.HttpRespMeta(status_code=200)))
FINISHED = pb.RunnerMsg(finished=pb.CallFinished(success=True))


class EchoServicer(runner_pb2_grpc.RunnerProtocolServicer):
    async def Engage(self, request_iterator, context):
        await context.read()  # try
        body = await context.read()
        await context.write(RESULT_START)
        await context.write(pb.RunnerMsg(data=pb.DataFrame(data=body.data.data, eof=True)))
        await context.write(FINISHED)


async def serve(port: int, seconds: float) -> None:
    server = grpc.aio.server()
    runner_pb2_grpc.add_RunnerProtocolServicer_to_server(EchoServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await asyncio.sleep(seconds)  # bounded: the server stops by itself
    await server.stop(0)


async def drive(port: int, calls: int, clients: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = runner_pb2_grpc.RunnerProtocolStub(channel)
        latencies: list[float] = []

        async def one() -> None:
            t0 = time.perf_counter()
            stream = stub.Engage()
            await stream.write(TRY)
            await stream.write(pb.ClientMsg(data=pb.DataFrame(data=BODY, eof=True)))
            for _ in range(3):
                await stream.read()
            await stream.code()  # the call ends with its status, as the LB's does
            latencies.append(time.perf_counter() - t0)

        async def client(n: int) -> None:
            for _ in range(n):
                await one()

        await asyncio.gather(*(client(200 // clients + 1) for _ in range(clients)))  # warm-up
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(client(calls // clients) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {**percentiles(latencies), "throughput_per_s": round(len(latencies) / wall, 1), "calls": len(latencies)}


def measure(levels: dict[int, int]) -> dict[str, dict[str, float]]:
    """{clients: calls} -> figures per level, each level in a fresh client process against one server process."""
    port = free_port()
    # the gRPC core settings the fn-core server commands start with (see fn_core.cli)
    experiments = os.environ.get("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS_DEFAULT)
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "GRPC_EXPERIMENTS": experiments}
    command = (sys.executable, "-m", "fnbench.grpc_floor")
    with tempfile.TemporaryDirectory(prefix="fnb-grpc-floor-") as workdir:
        server = FnProc("grpc-floor-server", ["server", str(port), "300"], env, Path(workdir) / "server.log",
                        command=command).start()
        try:
            wait_tcp(port, server, timeout_s=30)
            out = {}
            for clients, calls in levels.items():
                done = subprocess.run([*command, "client", str(port), str(calls), str(clients)], env={**os.environ, **env},
                                      capture_output=True, text=True, timeout=240, check=True)
                out[str(clients)] = json.loads(done.stdout)
            return out
        finally:
            server.stop(timeout_s=10)


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "server":
        uvloop.run(serve(port, float(sys.argv[3])))
    else:
        print(json.dumps(uvloop.run(drive(port, int(sys.argv[3]), int(sys.argv[4])))))
