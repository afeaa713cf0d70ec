"""Large bodies through `fn-core lb` -> `fn-core runner`: 1 MB in, 5 MB out, with the LB's and runner's memory.

For each case: VmRSS before, the peak during the calls (VmHWM, reset first through
/proc/<pid>/clear_refs so it is this case's peak) and VmRSS a second after; latency of
sequential calls beside the direct unix-socket call with the same body.
"""

from __future__ import annotations

import asyncio
import json
import time

from .common import hwm_mb, percentiles, reset_peak, rss_mb
from .loadgen import RawClient, http_request
from .platform import start_platform

MB = 1024 * 1024
DIRECT_HEADERS = {"Fn-Call-Id": "bench", "Fn-Deadline": "2099-01-01T00:00:00Z"}


def cases() -> dict[str, tuple[bytes, int]]:
    """name -> (request body, expected response size)."""
    text = "x" * (MB - 64)
    big_out = json.dumps({"repeat": 5, "text": text}).encode()
    return {
        "1MB_in_1MB_out": (b"x" * MB, MB),
        "small_in_5MB_out": (json.dumps({"repeat": 5 * MB, "text": "x"}).encode(), 5 * MB),
        "1MB_in_5MB_out": (big_out, 5 * len(text)),
    }


def timed_calls(client: RawClient, calls: int, size: int) -> list[float]:
    lat = []
    for _ in range(calls):
        t0 = time.perf_counter()
        status, out = client.call()
        lat.append(time.perf_counter() - t0)
        assert status == 200 and len(out) == size, (status, len(out))
    return lat


async def run(run_tag: str, image: str, *, calls: int) -> dict[str, object]:
    platform = await start_platform(run_tag, "split")
    pids = {"lb": platform.lb.pid, "runner": platform.runners[0].pid}
    results: dict[str, object] = {}
    try:
        fn_id = await platform.deploy("large", image, memory=256)
        assert (await platform.call(fn_id, b"warm"))[0] == 200
        [sock] = platform.sockets()
        port = int(platform.url.rsplit(":", 1)[1])
        for name, (body, size) in cases().items():
            via_lb = RawClient(("127.0.0.1", port), http_request(f"/invoke/{fn_id}", body))
            direct = RawClient(sock, http_request("/call", body, DIRECT_HEADERS))
            try:
                await asyncio.to_thread(timed_calls, direct, 2, size)  # the container's own first-time costs
                before = {k: rss_mb(p) for k, p in pids.items()}
                for p in pids.values():
                    reset_peak(p)
                lb_lat = await asyncio.to_thread(timed_calls, via_lb, calls, size)
                peak = {k: hwm_mb(p) for k, p in pids.items()}
                floor = await asyncio.to_thread(timed_calls, direct, calls, size)
            finally:
                via_lb.close()
                direct.close()
            await asyncio.sleep(1.0)
            after = {k: rss_mb(p) for k, p in pids.items()}
            results[name] = {
                "request_bytes": len(body), "response_bytes": size, "calls": calls,
                "e2e": percentiles(lb_lat), "floor_direct_uds": percentiles(floor),
                "rss_mb": {k: {"before": before[k], "peak": peak[k], "after": after[k],
                               "peak_minus_before": round(peak[k] - before[k], 2)} for k in pids},
                "lb_peak_growth_per_response_size": round((peak["lb"] - before["lb"]) * MB / size, 2),
            }
    finally:
        await platform.stop()
    return results
