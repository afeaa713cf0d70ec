"""Load generators: wrk (preferred), an asyncio keep-alive client (fallback), and a raw blocking client.

The raw client is the cheapest Python client there is (one prebuilt request, `sendall`, parse the
reply by hand): the sequential floor and the sequential end-to-end path are both measured with it,
call for call, so the client's own cost is the same on both sides of the ratio.
Every run is bounded by a wall-clock limit (wrk: its duration; asyncio: a deadline, and optionally a count).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import free_port, percentiles

WRK = shutil.which("wrk")
NULL_SERVER = Path(__file__).with_name("nullserver.py")


def http_request(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
             "Content-Type: application/octet-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RawClient:
    """One keep-alive HTTP/1.1 connection (TCP or unix socket) sending the same request again and again."""

    def __init__(self, address: str | tuple[str, int], request: bytes) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(60)
        self.sock.connect(address)
        self.request = request
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def call(self) -> tuple[int, bytes]:
        self.sock.sendall(self.request)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
        status = int(head.split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head.split("\r\n")[1:])}
        if "content-length" in fields:
            size = int(fields["content-length"])
            while len(self.buf) < size:
                self._fill()
            body, self.buf = self.buf[:size], self.buf[size:]
            return status, body
        parts = []  # chunked
        while True:
            while (eol := self.buf.find(b"\r\n")) < 0:
                self._fill()
            size = int(self.buf[:eol].split(b";")[0], 16)
            while len(self.buf) < eol + 2 + size + 2:
                self._fill()
            parts.append(self.buf[eol + 2:eol + 2 + size])
            self.buf = self.buf[eol + 2 + size + 2:]
            if size == 0:
                return status, b"".join(parts)

    def close(self) -> None:
        self.sock.close()


def alternate(clients: dict[str, RawClient], body: bytes, calls: int, warm: int = 200) -> dict[str, list[float]]:
    """Each client in turn, call for call, so the machine's drift hits all alike: latencies (s) by name.
    Every answer must be 200 with ``body`` (the echo function); ``warm`` rounds first are not timed."""
    for _ in range(warm):  # warm every connection and code path
        for name, client in clients.items():
            assert client.call() == (200, body), name
    latencies: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(calls):
        for name, client in clients.items():
            t0 = time.perf_counter()
            status, out = client.call()
            latencies[name].append(time.perf_counter() - t0)
            assert status == 200 and out == body, (name, status)
    return latencies


# --- wrk ------------------------------------------------------------------------------------------
WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
local f = io.open("{body_file}", "rb"); wrk.body = f:read("*a"); f:close()
local paths = {{}}
for line in io.lines("{paths_file}") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, paths[(i - 1) % #paths + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def run_wrk(url: str, paths: list[str], body: bytes, connections: int, *, duration_s: float, timeout_s: int = 30) -> dict[str, float]:
    """wrk with keep-alive, POST `body` to `paths` in order (cycled), for `duration_s` (wrk stops on time only)."""
    with tempfile.TemporaryDirectory(prefix="fnb-wrk-") as tmp:
        (Path(tmp) / "body").write_bytes(body)
        (Path(tmp) / "paths").write_text("\n".join(paths) + "\n")
        script = Path(tmp) / "bench.lua"
        script.write_text(WRK_LUA.format(body_file=f"{tmp}/body", paths_file=f"{tmp}/paths"))
        cmd = [WRK or "wrk", "-t1", f"-c{connections}", f"-d{max(1, int(duration_s))}s", f"--timeout={timeout_s}s",
               "-s", str(script), url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")
    r = json.loads(line[8:])
    errors = {k: r[k] for k in ("connect", "read", "write", "status", "timeout")}
    return {"tool": "wrk", "clients": connections, "calls": r["requests"], "p50_ms": r["p50_us"] / 1000,
            "p90_ms": r["p90_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "mean_ms": round(r["mean_us"] / 1000, 3),
            "max_ms": r["max_us"] / 1000, "throughput_per_s": round(r["requests"] / (r["duration_us"] / 1e6), 1),
            "errors": sum(errors.values()), "error_kinds": errors}


# --- asyncio fallback ----------------------------------------------------------------------------------
async def _async_client(connect, requests: list[bytes], stats: dict, deadline: float, limit: int) -> None:
    try:
        reader, writer = await connect()
    except OSError:  # e.g. a container retired between listing its socket and connecting
        stats["errors"] += 1
        return
    try:
        while time.monotonic() < deadline and (limit <= 0 or stats["sent"] < limit):
            req = requests[stats["sent"] % len(requests)]
            stats["sent"] += 1
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            size = next(int(ln.split(b":")[1]) for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:"))
            await reader.readexactly(size)
            stats["lat"].append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 2"):
                stats["errors"] += 1
    except (OSError, asyncio.IncompleteReadError, StopIteration):
        stats["errors"] += 1
    finally:
        writer.close()


async def run_asyncio(url: str, paths: list[str], body: bytes, connections: int, *, duration_s: float,
                      limit: int = 0) -> dict[str, float]:
    """The fallback generator: `connections` keep-alive asyncio clients (needs Content-Length replies)."""
    host, port = url.split("//")[1].split(":")
    requests = [http_request(p, body) for p in paths]
    stats: dict = {"sent": 0, "lat": [], "errors": 0}
    t0 = time.monotonic()
    connect = lambda: asyncio.open_connection(host, int(port))  # noqa: E731
    await asyncio.gather(*(_async_client(connect, requests, stats, t0 + duration_s, limit) for _ in range(connections)))
    wall = time.monotonic() - t0
    return {"tool": "asyncio", "clients": connections, "calls": len(stats["lat"]), **percentiles(stats["lat"]),
            "throughput_per_s": round(len(stats["lat"]) / wall, 1), "errors": stats["errors"]}


async def run_direct(sockets: list[str], body: bytes, connections: int, *, duration_s: float) -> dict[str, float]:
    """The concurrent floor: asyncio clients straight to the hot containers' sockets, at most one per container
    (a hot container serves one request at a time, as the runner uses it)."""
    connections = min(connections, len(sockets))
    request = http_request("/call", body, {"Fn-Call-Id": "bench", "Fn-Deadline": "2099-01-01T00:00:00Z"})
    stats: dict = {"sent": 0, "lat": [], "errors": 0}
    t0 = time.monotonic()

    def connect(i: int):
        return lambda: asyncio.open_unix_connection(sockets[i % len(sockets)])

    await asyncio.gather(*(_async_client(connect(i), [request], stats, t0 + duration_s, 0) for i in range(connections)))
    wall = time.monotonic() - t0
    return {"tool": "asyncio", "clients": connections, "connections": connections, "calls": len(stats["lat"]),
            **percentiles(stats["lat"]), "throughput_per_s": round(len(stats["lat"]) / wall, 1), "errors": stats["errors"]}


async def load(url: str, paths: list[str], body: bytes, connections: int, *, duration_s: float, limit: int = 0,
               force_asyncio: bool = False) -> dict[str, float]:
    if WRK and not force_asyncio:
        return await asyncio.to_thread(run_wrk, url, paths, body, connections, duration_s=duration_s)
    return await run_asyncio(url, paths, body, connections, duration_s=duration_s, limit=limit)


async def generator_cost(duration_s: float, force_asyncio: bool = False) -> dict[str, object]:
    """The load generator's own ceiling: the same load against a null HTTP server (answers at once)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(NULL_SERVER), str(port)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        levels = [await load(url, ["/"], b"x" * 16, c, duration_s=duration_s, force_asyncio=force_asyncio) for c in (1, 16)]
    finally:
        proc.terminate()
        proc.wait(10)
    return {"tool": levels[0]["tool"], "against": "null asyncio HTTP server (one process)", "c1": levels[0], "c16": levels[1]}
