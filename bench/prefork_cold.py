"""Cold calls with and without Fn's prefork pool (``FN_EXPERIMENTAL_PREFORK_POOL_SIZE``).

Starts an LB and a runner in this process (`fn_core.testing.start_platform`: real gRPC, real Docker),
deploys ``--calls`` distinct fns of the echo image and calls each once, so every call is cold. With
the pool, the runner keeps ``--calls`` + 2 donors (the echo image's python, waiting), so no call finds
it empty. Rounds alternate the two set-ups, so the machine's drift hits both alike. Prints each
round's p50 and every call, in ms, then JSON of the medians.

Usage: ``.venv/bin/python bench/prefork_cold.py [--calls 8] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import docker

from fn_core.images import build_named_function
from fn_core.testing import start_platform

WAIT_FOR_EVER = "python3 -c 'import signal; signal.pause()'"


async def cold_calls(client, image: str, calls: int, pool: int) -> list[float]:
    env = {"FN_FREEZE_IDLE_MSECS": "-1", "FN_DISABLE_PLUGINS": "cpu-shares,call-env", "FN_LOG_LEVEL": "warning"}
    if pool:
        env.update(FN_EXPERIMENTAL_PREFORK_POOL_SIZE=str(pool), FN_EXPERIMENTAL_PREFORK_IMAGE=image,
                   FN_EXPERIMENTAL_PREFORK_CMD=WAIT_FOR_EVER)
    with tempfile.TemporaryDirectory() as tmp:
        platform = await start_platform(Path(tmp), client, env=env)
        try:
            times = []
            for i in range(calls):
                fn = await platform.deploy(image, name=f"cold{i}")
                began = time.perf_counter()
                result = await platform.invoke(fn["id"], b"cold")
                times.append((time.perf_counter() - began) * 1000)
                assert result.status == 200, result.body
            return times
        finally:
            await platform.stop()  # removes the containers and the donors


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    client = docker.from_env()
    image = build_named_function(client, "echo", "fn-core-bench/echo:latest")
    medians: dict[str, list[float]] = {"no_pool": [], "prefork": []}
    for round_no in range(args.rounds):
        for label, pool in (("no_pool", 0), ("prefork", args.calls + 2)):
            times = await cold_calls(client, image, args.calls, pool)
            medians[label].append(round(statistics.median(times), 1))
            print(f"round {round_no} {label:8s} p50 {statistics.median(times):6.1f} ms  calls {[round(t) for t in times]}")
    print(json.dumps({"calls": args.calls, "p50_ms_by_round": medians}))


if __name__ == "__main__":
    asyncio.run(main())
