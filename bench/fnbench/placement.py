"""Multi-function placement: 20 fns x 3 runners, a seeded Zipf(1.1) call mix, 8 keep-alive clients, per placer.

Each runner has a 1 GiB container budget with the non-blocking tracker (full -> NACK, the LB tries
the next runner) and every fn asks 128 MB, so a runner holds 8 containers: 24 slots for 20 fns.

Counted precisely, from the outside:
* containers started: Docker `start` events of each runner's own label tag (one event stream);
* warm hits: successful calls minus container starts (each start serves exactly one first call:
  the runner launches only for a waiting call), as a share of successful calls;
* memory reserved: running containers x their memory limit, at the end (docker inspect) and at the
  peak (running count from the start/die events over time);
* calls per runner: the LB's call log line (`runner=host:port`) of every call.
"""

from __future__ import annotations

import asyncio
import random
import re
import time

import aiohttp
import docker

from .common import CLASSIFIER, StartEvents, percentiles
from .platform import start_platform

FNS, RUNNERS, CLIENTS, MEMORY_MB, SEED, ZIPF_S = 20, 3, 8, 128, 20260601, 1.1
PLACERS = ("ch", "naive", "ch-bounded")
RUNNER_ENV = {"FN_MAX_TOTAL_MEMORY_BYTES": str(1 << 30), "FN_ENABLE_NB_RESOURCE_TRACKER": "1"}
CALL_LINE = re.compile(r"call finished .* runner=(\S+) status=(\d+) attempts=(\d+)")


def zipf_sequence(n: int) -> list[int]:
    weights = [1 / (k ** ZIPF_S) for k in range(1, FNS + 1)]
    return random.Random(SEED).choices(range(FNS), weights=weights, k=n)


async def drive(url: str, paths: list[str], limit_s: float) -> tuple[list[float], dict[int, int], float, list[float]]:
    """8 keep-alive clients take the next call of the sequence until it is done or the time is up.

    Returns latencies, statuses, wall time and the monotonic end time of each successful call.
    """
    latencies: list[float] = []
    ok_times: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(paths)
    deadline = time.monotonic() + limit_s
    timeout = aiohttp.ClientTimeout(total=60)

    async def client(session: aiohttp.ClientSession) -> None:
        for path in queue:
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            try:
                async with session.post(path, data=b"x") as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError):
                status = 599
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                ok_times.append(time.monotonic())

    t0 = time.monotonic()
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(CLIENTS)))
    return latencies, statuses, time.monotonic() - t0, ok_times


def steady_warm_hit(ok_times: list[float], start_times: list[float]) -> float:
    """Warm-hit rate after the warm-up: over the calls after the first third, and the starts after it."""
    if len(ok_times) < 3:
        return 0.0
    ok_times = sorted(ok_times)
    boundary = ok_times[len(ok_times) // 3]
    calls = sum(1 for t in ok_times if t > boundary)
    starts = sum(1 for t in start_times if t > boundary)
    return round((calls - starts) / calls, 4) if calls else 0.0


def reserved_mb(client, tags: list[str]) -> int:
    total = 0
    for c in client.containers.list(filters={"label": CLASSIFIER}, sparse=True):
        if (c.attrs.get("Labels") or {}).get(CLASSIFIER) in tags:
            try:
                total += client.api.inspect_container(c.id)["HostConfig"]["Memory"] // (1 << 20)
            except docker.errors.NotFound:  # evicted meanwhile
                pass
    return total


async def run_placer(run_tag: str, image: str, placer: str, calls: int, limit_s: float, client) -> dict[str, object]:
    platform = await start_platform(run_tag, "split", runners=RUNNERS, placer=placer, runner_env=RUNNER_ENV,
                                    lb_env={"FN_LOG_LEVEL": "info"})  # info: the per-call log line names the runner
    events = StartEvents(client, platform.runner_tags)
    try:
        fn_ids = [await platform.deploy(f"f{i:02d}", image, memory=MEMORY_MB) for i in range(FNS)]
        paths = [f"/invoke/{fn_ids[i]}" for i in zipf_sequence(calls)]
        latencies, statuses, wall, ok_times = await drive(platform.url, paths, limit_s)
        await asyncio.sleep(0.5)  # the last events
        end_reserved = await asyncio.to_thread(reserved_mb, client, platform.runner_tags)
    finally:
        events.close()
        await platform.stop()
    addresses = re.findall(r"--runner (\S+)", " ".join(platform.lb.args))
    per_runner = {a: 0 for a in addresses}
    for line in (platform.workdir / "lb.log").read_text(errors="replace").splitlines():
        m = CALL_LINE.search(line)
        if m and m.group(1) in per_runner:
            per_runner[m.group(1)] += 1
    ok = statuses.get(200, 0)
    starts = sum(events.starts.values())
    return {
        "placer": placer,
        "calls": len(latencies),
        "ok": ok,
        "errors": len(latencies) - ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "stopped_by_time_limit": len(latencies) < calls,
        **percentiles(latencies),
        "throughput_per_s": round(len(latencies) / wall, 1),
        "containers_started": starts,
        "starts_per_runner": list(events.starts.values()),
        "warm_hit_rate": round((ok - starts) / ok, 4) if ok else 0.0,
        "warm_hit_rate_steady": steady_warm_hit(ok_times, events.start_times),
        "calls_per_runner": list(per_runner.values()),
        "memory_reserved_mb_end": end_reserved,
        "memory_reserved_mb_peak": events.peak_running * MEMORY_MB,
    }


async def run(run_tag: str, image: str, *, calls: int, limit_s: float) -> dict[str, object]:
    client = docker.from_env()
    try:
        results = {p: await run_placer(f"{run_tag}{i}", image, p, calls, limit_s, client) for i, p in enumerate(PLACERS)}
    finally:
        client.close()
    return {
        "setup": {"fns": FNS, "runners": RUNNERS, "clients": CLIENTS, "fn_memory_mb": MEMORY_MB, "runner_budget_mb": 1024,
                  "zipf_s": ZIPF_S, "seed": SEED, "calls": calls, "time_limit_s": limit_s, "nb_resource_tracker": True},
        "placers": results,
        "fn_go_reference": {
            "ch": {"calls": 3000, "throughput_per_s": 11.7, "p50_ms": 154, "p99_ms": 2514, "containers_started": 36,
                   "warm_hit_rate": 0.988, "calls_per_runner": [888, 0, 2175]},
            "naive": {"throughput_per_s": 8.3, "p50_ms": 713, "containers_started": 34, "warm_hit_rate": 0.989},
        },
    }
