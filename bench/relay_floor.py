"""What the split path would cost if its two nodes did no work: the floor for any Python LB + runner.

Starts split on 127.0.0.1 (an LB and one runner; or serve, both in one process), deploys and warms the echo function, and puts two byte
relays (`fnbench/relay.py`: uvloop, every byte passed on as it comes) in front of the hot container's
socket: ``relay1`` (client -> relay -> container, one process more, as serve) and ``relay2``
(client -> relay -> relay -> container, two processes more and a TCP hop between them, as split).
One raw client then alternates, call for call, the direct unix-socket round trip (the floor), relay1,
relay2 and the platform's path (`/invoke` through the LB and the runner), so the machine's drift hits
all four alike. Prints p50/p99 of each, in ms, and each p50 over the floor's.

What the real path takes above relay2 is the work of the two nodes themselves (HTTP, the runner
protocol, placement, the call's bookkeeping); what relay2 takes above the floor is the processes and
hops alone: their wake-ups and the loopback.
Usage: ``.venv/bin/python bench/relay_floor.py [--topology split|serve] [--calls 3000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import docker
from fnbench.common import free_port, percentiles
from fnbench.loadgen import RawClient, alternate, http_request
from fnbench.platform import start_platform
from fnbench.warm import DIRECT_HEADERS

from fn_core.images import build_named_function

IMAGE = "fn-core-bench/echo:latest"
RELAY = Path(__file__).parent / "fnbench" / "relay.py"
BODY = b"x" * 16


async def main(topology: str, calls: int) -> None:
    build_named_function(docker.from_env(), "echo", IMAGE)
    platform = await start_platform(f"relay{os.getpid() % 10000}", topology)
    relays: list[subprocess.Popen] = []
    clients: dict[str, RawClient] = {}
    try:
        fn_id = await platform.deploy_warm(IMAGE)
        [sock] = platform.sockets()
        lifetime = str(calls / 100 + 120)  # the relays stop by themselves
        one, inner, outer = free_port(), free_port(), free_port()
        for port, upstream in ((one, sock), (inner, sock), (outer, f"127.0.0.1:{inner}")):
            relay = subprocess.Popen([sys.executable, str(RELAY), str(port), upstream, lifetime], stdout=subprocess.PIPE)
            relays.append(relay)
            assert relay.stdout is not None and relay.stdout.readline() == b"listening\n", f"relay on {port} did not start"

        direct = http_request("/call", BODY, DIRECT_HEADERS)
        clients = {
            "floor_direct_uds": RawClient(sock, direct),
            "relay1": RawClient(("127.0.0.1", one), direct),
            "relay2": RawClient(("127.0.0.1", outer), direct),
            topology: RawClient(("127.0.0.1", int(platform.url.rsplit(":", 1)[1])), http_request(f"/invoke/{fn_id}", BODY)),
        }
        latencies = await asyncio.to_thread(alternate, clients, BODY, calls, 300)
        floor = percentiles(latencies["floor_direct_uds"])["p50_ms"]
        report = {}
        for name, samples in latencies.items():
            stats = percentiles(samples)
            report[name] = {"p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"], "p50_over_floor": round(stats["p50_ms"] / floor, 2)}
        print(json.dumps({"topology": topology, "calls": calls, **report}))
    finally:
        for client in clients.values():
            client.close()
        for relay in relays:
            relay.kill()
            relay.wait()
        await platform.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", choices=("split", "serve"), default="split")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(main(args.topology, args.calls))
