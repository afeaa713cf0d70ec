"""Shared pieces: percentiles, fn-core processes (start, wait, stop), Docker clean-up, RSS sampling."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

FN_CORE = str(Path(sys.executable).parent / "fn-core")
CLASSIFIER = "fn-agent-classifier"


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean in ms of latencies given in seconds."""
    if not samples_s:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0, "n": 0}
    ordered = sorted(samples_s)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 3), "n": len(ordered)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FnProc:
    """One server process of this run (`fn-core ...` unless another command is given), with its log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    command: tuple[str, ...] = (FN_CORE,)

    def start(self) -> FnProc:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.command, *self.args], env={**os.environ, **self.env}, stdout=log, stderr=log)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout_s: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)  # graceful: the runner removes its containers
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


async def wait_http(url: str, procs: list[FnProc], timeout_s: float = 60) -> None:
    """Wait until the LB answers /version (and none of the processes died)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            for p in procs:
                if p.proc is not None and p.proc.poll() is not None:
                    raise RuntimeError(f"{p.name} exited during start-up (log: {p.log_path})")
            try:
                async with s.get(url + "/version") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def wait_tcp(port: int, proc: FnProc, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited during start-up (log: {proc.log_path})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout_s}s")


def remove_labelled(client, tag_prefix: str) -> int:
    """Remove this run's containers (label value starts with the run's tag), and only those."""
    count = 0
    # sparse: no inspect per container (one may vanish between the list and the inspect)
    for c in client.containers.list(all=True, filters={"label": CLASSIFIER}, sparse=True):
        if (c.attrs.get("Labels") or {}).get(CLASSIFIER, "").startswith(tag_prefix):
            try:
                c.remove(force=True)
                count += 1
            except Exception:  # already gone (the runner removed it)
                pass
    return count


class StartEvents:
    """Container start/die events of the given runner tags, with the running count over time."""

    def __init__(self, client, tags: list[str]) -> None:
        self.tags = tags
        self.starts = {t: 0 for t in tags}
        self.start_times: list[float] = []  # time.monotonic() of each start, to split warm-up from steady state
        self.running = {t: 0 for t in tags}
        self.peak_running = 0
        self._stream = client.events(decode=True, filters={"type": "container", "label": CLASSIFIER})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self._stream:
                tag = ev.get("Actor", {}).get("Attributes", {}).get(CLASSIFIER)
                if tag not in self.running:
                    continue
                if ev.get("Action") == "start":
                    self.starts[tag] += 1
                    self.start_times.append(time.monotonic())
                    self.running[tag] += 1
                elif ev.get("Action") == "die":
                    self.running[tag] -= 1
                self.peak_running = max(self.peak_running, sum(self.running.values()))
        except Exception:  # the stream was closed
            pass

    def close(self) -> None:
        self._stream.close()


# --- memory -------------------------------------------------------------------------------------
def status_kb(pid: int, key: str) -> int:
    """A /proc/<pid>/status value in kB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs), so a peak is per scenario."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_mb(pid: int) -> float:
    return round(status_kb(pid, "VmRSS") / 1024, 2)


def hwm_mb(pid: int) -> float:
    return round(status_kb(pid, "VmHWM") / 1024, 2)
