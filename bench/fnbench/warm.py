"""Warm calls through LB -> runner -> hot container, beside the direct unix-socket floor, for one topology.

1. Sequential, interleaved call for call with the floor: the raw client alternates one call through
   the LB (TCP) and one straight to the hot container's socket, so drift hits both alike.
2. Sequential and 4/16 concurrent keep-alive clients with the load generator (wrk), each level warmed
   first so the containers it needs are hot; the floor at the same concurrency goes straight to the
   hot containers' sockets with the asyncio client.
"""

from __future__ import annotations

import asyncio

from . import loadgen
from .common import StartEvents, percentiles
from .loadgen import RawClient, alternate, http_request
from .platform import start_platform

DIRECT_HEADERS = {"Fn-Call-Id": "bench", "Fn-Deadline": "2099-01-01T00:00:00Z"}


def interleaved(lb_port: int, path: str, sock: str, body: bytes, calls: int) -> tuple[list[float], list[float]]:
    clients = {"lb": RawClient(("127.0.0.1", lb_port), http_request(path, body)),
               "floor": RawClient(sock, http_request("/call", body, DIRECT_HEADERS))}
    try:
        latencies = alternate(clients, body, calls)
        return latencies["lb"], latencies["floor"]
    finally:
        for client in clients.values():
            client.close()


async def run_topology(client, run_tag: str, topology: str, image: str, *, calls: int, duration_s: float,
                       levels: tuple[int, ...], force_asyncio: bool) -> dict[str, object]:
    platform = await start_platform(run_tag, topology)
    body = b"x" * 16
    try:
        fn_id = await platform.deploy("echo", image)
        status, _ = await platform.call(fn_id, body)  # cold start: not measured here
        assert status == 200, status
        [sock] = platform.sockets()
        path = f"/invoke/{fn_id}"
        port = int(platform.url.rsplit(":", 1)[1])
        lb_lat, floor = await asyncio.to_thread(interleaved, port, path, sock, body, calls)
        seq, floor_stats = percentiles(lb_lat), percentiles(floor)
        result: dict[str, object] = {
            "sequential_raw_client": {**seq, "throughput_per_s": round(1000 / seq["mean_ms"], 1)},
            "floor_direct_uds": {**floor_stats, "throughput_per_s": round(1000 / floor_stats["mean_ms"], 1)},
            "ratio_p50": round(seq["p50_ms"] / floor_stats["p50_ms"], 2),
            "ratio_p99_to_own_p50": round(seq["p99_ms"] / seq["p50_ms"], 2),
        }
        by_level = {}
        for c in levels:
            for _ in range(5):  # warm until this level stops starting containers (bounded)
                hot = len(platform.sockets())
                await loadgen.load(platform.url, [path], body, c, duration_s=2.0, force_asyncio=force_asyncio)
                if len(platform.sockets()) == hot:
                    break
            events = StartEvents(client, platform.runner_tags)  # containers started while measuring: should be none
            try:
                e2e = await loadgen.load(platform.url, [path], body, c, duration_s=duration_s, force_asyncio=force_asyncio)
            finally:
                events.close()
            e2e["containers_started"] = sum(events.starts.values())
            floor_c = await loadgen.run_direct(platform.sockets(), body, c, duration_s=min(duration_s, 5.0))
            by_level[str(c)] = {"e2e": e2e, "floor_direct_uds": floor_c, "hot_containers": len(platform.sockets())}
        result["levels"] = by_level
        if "1" in by_level:
            result["ratio_p50_wrk_c1_vs_floor"] = round(by_level["1"]["e2e"]["p50_ms"] / floor_stats["p50_ms"], 2)
        return result
    finally:
        await platform.stop()
