"""CPU per warm call of each platform process and of the function's container, under wrk.

On a 2-core machine a sequential call runs almost end to end on one core, so the CPU each process
spends per call is what its latency is made of; this shows which node a change made cheaper
(wall-clock figures move by 10-30 % between runs here, CPU per call much less).

Starts the topology on 127.0.0.1 (``serve``, or ``split``: an LB and one runner), deploys the echo
function, warms it, then for each client count runs wrk (POST, 16 bytes) and reads every
process's user+system time from ``/proc`` before and after. Prints one line per client count.
Usage: ``.venv/bin/python bench/cpu_per_call.py [--topology split] [--clients 1,16] [--duration 6]``
"""

from __future__ import annotations

import argparse
import asyncio
import os

import docker
from fnbench.common import CLASSIFIER
from fnbench.loadgen import run_wrk
from fnbench.platform import start_platform

from fn_core.images import build_named_function
from fn_core.process_metrics import read_process

IMAGE = "fn-core-bench/echo:latest"


def cpu_seconds(pid: int) -> float:
    figures = read_process(pid)  # what /metrics reports as *_process_cpu_seconds_total
    if figures is None:
        raise ProcessLookupError(f"process {pid} is gone")
    return figures["process_cpu_seconds_total"]


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            children = open(f"/proc/{pid}/task/{task}/children").read().split()
        except FileNotFoundError:
            continue
        for child in children:
            pids += process_tree(int(child))
    return pids


def container_pids(tags: list[str]) -> list[int]:
    """Every process of the function containers this run's runners started (by their label tag)."""
    pids: list[int] = []
    client = docker.from_env()
    for tag in tags:
        for container in client.containers.list(filters={"label": f"{CLASSIFIER}={tag}"}):
            pid = container.attrs["State"]["Pid"]
            if pid:
                pids += process_tree(pid)
    return pids


async def main(topology: str, clients: list[int], duration_s: float) -> None:
    build_named_function(docker.from_env(), "echo", IMAGE)
    platform = await start_platform(f"cpu{os.getpid() % 1000}", topology)
    try:
        fn_id = await platform.deploy_warm(IMAGE)
        path, body = f"/invoke/{fn_id}", b"0123456789abcdef"
        for count in clients:
            run_wrk(platform.url, [path], body, count, duration_s=2)  # warm-up: as many hot containers as clients
            procs = {proc.name: proc.pid for proc in platform.procs}
            in_containers = container_pids(platform.runner_tags)
            before = {name: cpu_seconds(pid) for name, pid in procs.items()}
            before_containers = sum(cpu_seconds(pid) for pid in in_containers)
            result = run_wrk(platform.url, [path], body, count, duration_s=duration_s)
            calls = result["calls"]
            per_call = {name: (cpu_seconds(pid) - before[name]) / calls * 1e6 for name, pid in procs.items()}
            containers = (sum(cpu_seconds(pid) for pid in in_containers) - before_containers) / calls * 1e6
            nodes = " ".join(f"{name}={us:.0f}us" for name, us in per_call.items())
            print(f"{topology} clients={count} p50={result['p50_ms']:.3f}ms req/s={result['throughput_per_s']:.0f} "
                  f"errors={result['errors']} cpu per call: {nodes} containers={containers:.0f}us", flush=True)
    finally:
        await platform.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", choices=("serve", "split"), default="split")
    parser.add_argument("--clients", default="1", help="comma-separated client counts (default 1)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of wrk per client count")
    args = parser.parse_args()
    asyncio.run(main(args.topology, [int(c) for c in args.clients.split(",")], args.duration))
