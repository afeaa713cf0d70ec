"""End-to-end warm-call benchmark: HTTP client -> LB -> gRPC Engage -> runner -> hot container, and the floor.

`.venv/bin/python bench/e2e_bench.py [--calls 1000] [--body-bytes 16] [--split]`

Starts `fn-core serve` as a subprocess on 127.0.0.1 (the embedded default: API + LB + local
runner in one process, real Docker), deploys the fdk echo function through the v2 API, warms it,
then in one run measures:

- `direct_uds`: POST /call straight to the hot container's unix socket (the floor), interleaved
  call for call with `lb_c1` so both see the same container and machine state;
- `lb_c1`, `lb_c4`, `lb_c16`: warm calls through `POST /invoke/{fn_id}` with 1, 4 and 16
  concurrent clients (each level is warmed first, so the containers it needs are hot);
  p50/p99/mean per call and throughput (calls/s).

Prints JSON; removes every container it started (label ``FN_CONTAINER_LABEL_TAG`` of this run).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import docker

from fn_core.images import build_named_function
from fn_core.testing import free_port

FN_CORE = str(Path(sys.executable).parent / "fn-core")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_ms": round(pick(0.50) * 1000, 3),
        "p99_ms": round(pick(0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


async def wait_up(url: str, proc: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit("fn-core serve exited during start-up")
            try:
                async with s.get(url + "/version") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("fn-core serve did not answer")


async def run_level(session: aiohttp.ClientSession, path: str, body: bytes, clients: int, calls: int) -> dict[str, object]:
    latencies: list[float] = []
    per_client = max(1, calls // clients)

    async def client() -> None:
        for _ in range(per_client):
            t0 = time.perf_counter()
            async with session.post(path, data=body) as r:
                assert r.status == 200 and await r.read() == body, r.status
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client() for _ in range(clients)))  # warm-up: hot containers for this level
    latencies.clear()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    return {"clients": clients, "calls": len(latencies), **percentiles(latencies), "throughput_per_s": round(len(latencies) / wall, 1)}


async def main(calls: int, body_bytes: int, split: bool = False) -> dict[str, object]:
    client = docker.from_env()
    image = build_named_function(client, "echo", "fn-core-bench/echo:latest")
    run = secrets.token_hex(3)
    tag = f"fn-core-e2e-bench-{run}"
    iofs = f"/tmp/fnb-{run}"  # short: unix socket paths are limited to 108 bytes
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tmp = tempfile.mkdtemp(prefix="fn-e2e-bench-")
    env = {**os.environ, "FN_CONTAINER_LABEL_TAG": tag, "FN_IOFS_PATH": iofs, "FN_LOG_LEVEL": "warning"}
    args = [FN_CORE, "serve", "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite3://{tmp}/fn.db"]
    runner_proc = None
    if split:  # `fn-core lb` + a separate `fn-core runner` process, over gRPC
        grpc_port = free_port()
        runner_proc = subprocess.Popen([FN_CORE, "runner", "--host", "127.0.0.1", "--grpc-port", str(grpc_port)], env=env)
        args = [FN_CORE, "lb", "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite3://{tmp}/fn.db"]
        env = {**env, "FN_RUNNER_ADDRESSES": f"127.0.0.1:{grpc_port}"}
    proc = subprocess.Popen(args, env=env)
    body = b"x" * body_bytes
    try:
        await wait_up(url, proc)
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(url, connector=connector) as s:
            async with s.post("/v2/apps", json={"name": "bench"}) as r:
                app = await r.json()
            spec = {"name": "echo", "app_id": app["id"], "image": image, "memory": 64, "idle_timeout": 600}
            async with s.post("/v2/fns", json=spec) as r:
                fn = await r.json()
            path = f"/invoke/{fn['id']}"
            async with s.post(path, data=body) as r:  # cold start: not measured
                assert r.status == 200, await r.text()
            [sock] = glob.glob(f"{iofs}/*/lsnr.sock")  # the one hot container so far
            direct = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock, limit=1))
            headers = {"Fn-Call-Id": "bench", "Fn-Deadline": "2099-01-01T00:00:00Z"}

            async def via_lb() -> None:
                async with s.post(path, data=body) as r:
                    assert r.status == 200 and await r.read() == body

            async def via_socket() -> None:
                async with direct.post("http://localhost/call", data=body, headers=headers) as r:
                    assert r.status == 200 and await r.read() == body

            for _ in range(50):  # warm both paths
                await via_lb()
                await via_socket()
            lb_c1, floor = [], []
            for _ in range(calls):
                t0 = time.perf_counter()
                await via_lb()
                t1 = time.perf_counter()
                await via_socket()
                floor.append(time.perf_counter() - t1)
                lb_c1.append(t1 - t0)
            await direct.close()
            lb1 = percentiles(lb_c1)
            direct_stats = percentiles(floor)
            levels = [await run_level(s, path, body, c, calls) for c in (4, 16)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if runner_proc is not None:
            runner_proc.send_signal(signal.SIGTERM)
            runner_proc.wait(60)
        for container in client.containers.list(all=True, filters={"label": f"fn-agent-classifier={tag}"}):
            container.remove(force=True)
        client.close()
    return {
        "calls_per_level": calls,
        "body_bytes": body_bytes,
        "direct_uds": direct_stats,
        "lb_c1": {**lb1, "throughput_per_s": round(1000 / lb1["mean_ms"], 1)},
        "lb_c4": levels[0],
        "lb_c16": levels[1],
        "lb_overhead_p50_ms": round(lb1["p50_ms"] - direct_stats["p50_ms"], 3),
        "ratio_p50": round(lb1["p50_ms"] / direct_stats["p50_ms"], 2),
        "mode": "lb+runner" if split else "serve",
        "serve_exit_code": code,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--body-bytes", type=int, default=16)
    parser.add_argument("--split", action="store_true", help="fn-core lb + a separate fn-core runner (gRPC) instead of serve")
    a = parser.parse_args()
    print(json.dumps(asyncio.run(main(a.calls, a.body_bytes, a.split)), indent=2))
