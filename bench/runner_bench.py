"""Runner-level benchmark: a warm call through Engage vs the direct unix-socket round trip, same container.

Starts a runner in-process (127.0.0.1, any port), warms one hot container of the echo function,
then alternates the two measurements call by call (so drift hits both alike):

* ``engage``: one Engage stream on a kept-open channel (`fn_core.transport`, as the LB does):
  try + eof frame, result_start, data, finished.
* ``grpc_floor``: an Engage stream the runner ends at once (a bad call JSON -> 400): what the
  gRPC streaming itself costs, client and server both in this process, with no container work.
* ``direct``: POST /call straight to the same container's socket over a keep-alive aiohttp
  connection: the floor the runner cannot beat.

Prints JSON: p50/p99/mean in ms for both, and engage/direct ratios. Usage:
``.venv/bin/python bench/runner_bench.py [--calls 2000] [--body-bytes 16]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
import uuid

import aiohttp
import docker

from fn_core.config import load_config
from fn_core.images import build_named_function
from fn_core.models import Call, slot_key
from fn_core.plugins import get_plugin_manager
from fn_core.proto import runner_pb2 as pb
from fn_core.runner.main import start_runner
from fn_core.transport import Channel
from fn_core.wire import ENGAGE


async def exchange(channel: Channel, call_json: str, slot: str, body: bytes) -> list[pb.RunnerMsg]:
    stream = await channel.open(ENGAGE)
    try_call = pb.TryCall(models_call_json=call_json, slot_hash_id=slot)
    await stream.send_message(pb.ClientMsg(**{"try": try_call}).SerializeToString())
    await stream.send_message(pb.ClientMsg(data=pb.DataFrame(data=body, eof=True)).SerializeToString(), end_stream=True)
    replies = []
    while (raw := await stream.read_message()) is not None:
        replies.append(pb.RunnerMsg.FromString(raw))
    stream.close()
    return replies


async def engage_once(channel: Channel, call_json: str, slot: str, body: bytes) -> bytes:
    out = []
    for msg in await exchange(channel, call_json, slot, body):
        kind = msg.WhichOneof("body")
        if kind == "data":
            out.append(msg.data.data)
        elif kind == "finished" and not msg.finished.success:
            raise RuntimeError(f"call failed: {msg.finished.errorCode} {msg.finished.errorStr}")
    return b"".join(out)


async def grpc_floor_once(channel: Channel) -> None:
    await exchange(channel, "{}", "", b"")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(pick(0.50) * 1000, 3), "p99_ms": round(pick(0.99) * 1000, 3),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 3)}


async def main(calls: int, body_bytes: int) -> dict[str, object]:
    client = docker.from_env()
    image = build_named_function(client, "echo", "fn-core-bench/echo:latest")
    tag = f"fn-core-bench-{secrets.token_hex(4)}"
    config = load_config(env={}, overrides={"container_label_tag": tag, "log_level": "warning"})
    pm = get_plugin_manager(config, load_entrypoints=False)
    node = await start_runner(config, pm, host="127.0.0.1", port=0)
    body = b"x" * body_bytes
    call = Call(id=uuid.uuid4().hex, app_id="bench", fn_id="echo", image=image, timeout=30, idle_timeout=300)
    call_json, slot = call.to_json(), slot_key(call).hex()
    try:
        channel = Channel(node.address)
        assert await engage_once(channel, call_json, slot, body) == body  # cold start: not measured
        [container] = node.agent.containers()
        direct = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=container.socket_path, limit=1))
        headers = {"Fn-Call-Id": call.id, "Fn-Deadline": "2099-01-01T00:00:00Z"}

        async def direct_once() -> bytes:
            async with direct.post("http://localhost/call", data=body, headers=headers) as resp:
                return await resp.read()

        for _ in range(50):  # warm both paths (module import, connections, caches)
            await engage_once(channel, call_json, slot, body)
            await direct_once()
        via_engage, via_socket, floor = [], [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            await engage_once(channel, call_json, slot, body)
            t1 = time.perf_counter()
            await direct_once()
            t2 = time.perf_counter()
            await grpc_floor_once(channel)
            t3 = time.perf_counter()
            via_engage.append(t1 - t0)
            via_socket.append(t2 - t1)
            floor.append(t3 - t2)
        await direct.close()
        await channel.close()
        assert len(node.agent.containers()) == 1  # every call ran in the one warm container
    finally:
        await node.stop(grace=5)
        client.close()
    engage_stats, direct_stats = percentiles(via_engage), percentiles(via_socket)
    return {
        "calls": calls,
        "body_bytes": body_bytes,
        "engage": engage_stats,
        "direct_uds": direct_stats,
        "grpc_floor": percentiles(floor),
        "ratio_p50": round(engage_stats["p50_ms"] / direct_stats["p50_ms"], 2),
        "ratio_p99": round(engage_stats["p99_ms"] / direct_stats["p99_ms"], 2),
        "runner_overhead_p50_ms": round(engage_stats["p50_ms"] - direct_stats["p50_ms"], 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--body-bytes", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.calls, args.body_bytes)), indent=2))
