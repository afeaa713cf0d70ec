"""Memory flatness: VmRSS of `fn-core lb` and `fn-core runner` over a long warm run (wrk, 4 keep-alive clients).

The run is cut in wrk runs of a few seconds (wrk stops on time, not on a count) until `calls` are done
(bounded by a wall-clock limit); RSS is read after each, so the curve is RSS against calls done.
Growth is the last sample minus the first one, taken after a warm-up run.
"""

from __future__ import annotations

import time

from . import loadgen
from .common import rss_mb
from .platform import start_platform

CHUNK_S = 5.0
LIMIT_S = 600.0


async def run(run_tag: str, image: str, *, calls: int, force_asyncio: bool) -> dict[str, object]:
    platform = await start_platform(run_tag, "split")
    pids = {"lb": platform.lb.pid, "runner": platform.runners[0].pid}
    samples, runs = [], []
    try:
        fn_id = await platform.deploy("mem", image)
        path, body = f"/invoke/{fn_id}", b"x" * 16
        # Warm-up: the containers for 4 clients, allocator arenas, caches.
        await loadgen.load(platform.url, [path], body, 4, duration_s=CHUNK_S, force_asyncio=force_asyncio)
        t0, done = time.monotonic(), 0
        samples.append({"calls": 0, "t_s": 0.0, **{f"{k}_rss_mb": rss_mb(p) for k, p in pids.items()}})
        while done < calls and time.monotonic() - t0 < LIMIT_S:
            r = await loadgen.load(platform.url, [path], body, 4, duration_s=CHUNK_S, force_asyncio=force_asyncio)
            done += r["calls"]
            runs.append(r)
            samples.append({"calls": done, "t_s": round(time.monotonic() - t0, 1),
                            **{f"{k}_rss_mb": rss_mb(p) for k, p in pids.items()}})
    finally:
        await platform.stop()
    first, last = samples[0], samples[-1]
    return {
        "calls": done,
        "errors": sum(r["errors"] for r in runs),
        "throughput_per_s": round(done / max(last["t_s"], 1e-9), 1),
        "samples": samples,
        "growth_mb": {k: round(last[f"{k}_rss_mb"] - first[f"{k}_rss_mb"], 2) for k in pids},
        "second_half_growth_mb": {k: round(last[f"{k}_rss_mb"] - samples[len(samples) // 2][f"{k}_rss_mb"], 2) for k in pids},
    }
