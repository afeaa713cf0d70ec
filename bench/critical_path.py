"""Where a warm sequential call's time goes, hop by hop: each node's share of the critical path and each wire.

A sequential call is one chain of reads and writes: the client writes to the LB, the LB reads it and
(after its work) writes to the runner, ... the container answers, and the answer comes back the same
way. The time from a process's read returning to its next write entering is that process's work *on*
the call's path; the time from a write returning to the next process's read returning is the wire
(loopback + the wake-up of the reader, which on a VM includes waking its idle vCPU). Work a node does
after its write (logs, metrics, releasing a container) is off the path: it overlaps the next hop.

This records every process's system calls with ``perf`` (the kernel's ``raw_syscalls`` tracepoints;
x86_64, root) while one client thread alternates a call through the platform with a call straight to
the hot container's socket (the floor), then rebuilds each call's chain from the trace. The trace
costs each system call a microsecond or two, so absolute figures run ~10-20 % above the warm bench's;
the split between the hops is what this is for.

Usage: ``.venv/bin/python bench/critical_path.py [--topology split|serve] [--seconds 1.5] [--out FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import docker
from cpu_per_call import container_pids, cpu_seconds
from fnbench.loadgen import RawClient, http_request
from fnbench.platform import start_platform
from fnbench.warm import DIRECT_HEADERS

from fn_core.images import build_named_function

IMAGE = "fn-core-bench/echo:latest"
BODY = b"0123456789abcdef"
# x86_64 system call numbers of the reads and writes the platform, the fdk and the client make
READS = {0: "read", 17: "pread64", 19: "readv", 45: "recvfrom", 47: "recvmsg"}
WRITES = {1: "write", 18: "pwrite64", 20: "writev", 44: "sendto", 46: "sendmsg"}
_LINE = re.compile(r"\s*(\d+)/(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit): NR (\d+) (.*)")


def chain(nodes: list[str]) -> list[tuple[str, str]]:
    """The (process, read|write) steps of one call: client -> nodes -> container -> nodes reversed -> client."""
    steps = [("client", "w")]
    for node in [*nodes, "container", *reversed(nodes)]:
        steps += [(node, "r"), (node, "w")]
    return [*steps, ("client", "r")]


def segment_names(steps: list[tuple[str, str]]) -> list[str]:
    """One name per gap between steps: a process's work on the request or on the response, or a wire."""
    names, seen = [], set()
    for (a, kind_a), (b, _) in zip(steps, steps[1:], strict=False):
        if kind_a == "w":
            names.append(f"{a} -> {b}")
        else:
            names.append(f"{a} {'response' if a in seen else 'request'}" if a != "container" else a)
            seen.add(a)
    return names


def read_trace(data: Path, roles: dict[int, str], client_tid: int) -> list[tuple[float, str, str, int]]:
    """(time us, role, r|w, fd) of every successful read and write of the processes in `roles`, in time order."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid,tid,time,event,trace"],
                         capture_output=True, text=True, check=True).stdout
    entered: dict[int, tuple[int, int]] = {}
    events = []
    for line in out.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        pid, tid, nr = int(m[1]), int(m[2]), int(m[5])
        role = roles.get(pid)
        if role is None or (nr not in READS and nr not in WRITES) or (role == "client" and tid != client_tid):
            continue
        if m[4] == "enter":
            entered[tid] = (nr, int(m[6].strip("()").split(",")[0], 16))
            continue
        nr_fd = entered.pop(tid, None)
        if nr_fd is None or nr_fd[0] != nr or int(m[6].split("=")[1]) <= 0:
            continue
        events.append((float(m[3]) * 1e6, role, "r" if nr in READS else "w", nr_fd[1]))
    events.sort()
    return events


def match_calls(events, steps: list[tuple[str, str]], client_fd: int) -> list[list[float]]:
    """Each call's step times: the first matching event after the previous step (a client event on another fd ends it)."""
    calls, current = [], []
    for t, role, kind, fd in events:
        if role == "client" and fd != client_fd:
            current = []  # the other kind of call: this chain is not the one being rebuilt
            continue
        if (role, kind) == steps[len(current)]:
            current.append(t)
            if len(current) == len(steps):
                calls.append(current)
                current = []
        elif (role, kind) == steps[0]:
            current = [t]
    return calls


def summarise(calls: list[list[float]], steps: list[tuple[str, str]]) -> dict[str, object]:
    if not calls:
        raise SystemExit(f"no whole call {' '.join(p for p, _ in steps)} in the trace (is perf allowed to trace every process?)")
    names = segment_names(steps)
    p50 = {name: round(statistics.median(c[i + 1] - c[i] for c in calls), 1) for i, name in enumerate(names)}
    by_node: dict[str, float] = {}
    wires = 0.0
    for name, value in p50.items():
        if " -> " in name:
            wires += value
        else:
            node = name.split(" ")[0]
            by_node[node] = round(by_node.get(node, 0) + value, 1)
    total = statistics.median(c[-1] - c[0] for c in calls)
    return {"calls": len(calls), "p50_us": round(total, 1), "segments_p50_us": p50,
            "on_path_by_process_us": by_node, "wires_us": round(wires, 1)}


def client_loop(via: RawClient, direct: RawClient, stop: threading.Event, ready: list[int]) -> None:
    ready.append(threading.get_native_id())
    while not stop.is_set():
        assert via.call() == (200, BODY)
        assert direct.call() == (200, BODY)


async def main(topology: str, seconds: float, out: str | None) -> None:
    if shutil.which("perf") is None or host.machine() != "x86_64":
        raise SystemExit("critical_path needs perf (Debian: linux-perf) on x86_64, run as root")
    build_named_function(docker.from_env(), "echo", IMAGE)
    platform = await start_platform(f"crit{os.getpid() % 1000}", topology)
    try:
        fn_id = await platform.deploy_warm(IMAGE)
        [sock] = platform.sockets()
        port = int(platform.url.rsplit(":", 1)[1])
        via = RawClient(("127.0.0.1", port), http_request(f"/invoke/{fn_id}", BODY))
        direct = RawClient(sock, http_request("/call", BODY, DIRECT_HEADERS))
        via_fd, direct_fd = via.sock.fileno(), direct.sock.fileno()
        nodes = [proc.name for proc in platform.procs]  # split: lb, runner0; serve: serve
        roles = {proc.pid: proc.name for proc in platform.procs}
        roles.update({pid: "container" for pid in container_pids(platform.runner_tags)})
        roles[os.getpid()] = "client"
        stop, ready = threading.Event(), []
        thread = threading.Thread(target=client_loop, args=(via, direct, stop, ready))
        thread.start()
        try:
            await asyncio.sleep(1.0)  # both paths warm and steady before the trace
            cpu_before = {proc.name: cpu_seconds(proc.pid) for proc in platform.procs}
            with tempfile.TemporaryDirectory(prefix="fnb-crit-") as tmp:
                data = Path(tmp) / "perf.data"
                started = time.monotonic()
                subprocess.run(["perf", "record", "-q", "-a", "-e", "raw_syscalls:sys_enter,raw_syscalls:sys_exit",
                                "-o", str(data), "--", "sleep", str(seconds)], check=True, capture_output=True)
                elapsed = time.monotonic() - started
                cpu_after = {proc.name: cpu_seconds(proc.pid) for proc in platform.procs}
                stop.set()
                thread.join()
                events = read_trace(data, roles, ready[0])
        finally:
            stop.set()
            thread.join()
            via.close()
            direct.close()
        steps, floor_steps = chain(nodes), chain([])
        path = summarise(match_calls(events, steps, via_fd), steps)
        floor = summarise(match_calls(events, floor_steps, direct_fd), floor_steps)
        calls_in_window = path["calls"]
        cpu = {name: round((cpu_after[name] - cpu_before[name]) / calls_in_window * 1e6 * seconds / elapsed, 1)
               for name in cpu_before}
        report = {"topology": topology, "seconds": seconds, "platform": path, "floor_direct_uds": floor,
                  "cpu_per_call_us": cpu, "ratio_p50": round(path["p50_us"] / floor["p50_us"], 2)}
    finally:
        await platform.stop()
    print(json.dumps(report, indent=2))
    if out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", choices=("serve", "split"), default="split")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of the trace (default 1.5)")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args()
    asyncio.run(main(args.topology, args.seconds, args.out))
