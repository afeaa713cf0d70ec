"""Many big answers at once through `fn-core lb` -> `fn-core runner`: the LB's memory while they pass.

`.venv-bench/bin/python bench/large_concurrent.py [--clients 16] [--rounds 3] [--mb 5]`

Starts the split topology (real processes, real Docker), warms one container per client, then runs
`--rounds` rounds of `--clients` concurrent calls that each answer `--mb` MB, every body checked. It reads
the LB's VmRSS before and its VmHWM after (reset through `clear_refs` first): what the LB holds of the
answers in flight. Every container carries the run's label and is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp
import docker
from fnbench.platform import start_platform

from fn_core.images import build_named_function

IMAGE = "fn-core-bench/echo:latest"


def memory_mb(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(key))


async def main(clients: int, rounds: int, mb: int) -> None:
    build_named_function(docker.from_env(), "echo", IMAGE)
    size = mb * 1_000_000
    platform = await start_platform(f"lc{os.getpid() % 1000}", "split", runner_env={"FN_MAX_TOTAL_MEMORY_BYTES": str(8 << 30)})
    try:
        fn_id = await platform.deploy("large", IMAGE, memory=256)
        async with aiohttp.ClientSession() as session:

            async def one() -> None:
                async with session.post(f"{platform.url}/invoke/{fn_id}", data=f'{{"repeat": {size}}}') as r:
                    body = await r.read()
                    assert (r.status, len(body)) == (200, size), (r.status, len(body))

            await asyncio.gather(*(one() for _ in range(clients)))  # as many hot containers as clients
            lb = platform.lb.pid
            with open(f"/proc/{lb}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            before = memory_mb(lb, "VmRSS:")
            began = time.monotonic()
            for _ in range(rounds):
                await asyncio.gather(*(one() for _ in range(clients)))
            took = time.monotonic() - began
            peak = memory_mb(lb, "VmHWM:")
        print(f"{clients} concurrent {mb} MB answers x {rounds} rounds in {took:.1f} s: LB RSS {before:.1f} MB before, "
              f"peak {peak:.1f} MB (+{peak - before:.1f} MB for {clients * mb} MB in flight)")
    finally:
        await platform.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=int, default=5, help="MB each answer carries (default 5)")
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.rounds, args.mb))
