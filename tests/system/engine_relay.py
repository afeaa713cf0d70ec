"""A unix-socket relay between a runner under test and the Docker engine (its DOCKER_HOST), and the helpers of the
tests that place calls on a broken runner and a healthy one.

Taking the relay down is what a stopped or restarting dockerd looks like to the runner (the socket gone,
connections cut); holding every byte what a hung one looks like; answering requests itself with an engine's 500
what an engine that refuses them does (its creates with "no space left on device": its disk is full). The engine
other tests share is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

import aiohttp

from fn_core.testing import metric_samples, wait_until
from fn_plugins_builtin.placer_ch import fn_hash, jump_hash

ENGINE_SOCKET = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
#: the engine's answer to a create when the disk under /var/lib/docker is full (dockerd 20.10's words)
DISK_FULL_REASON = "mkdir /var/lib/docker/overlay2/4f1e0c9a2b7d-init: no space left on device"


def _engine_error(status: str, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    return (f"HTTP/1.1 {status}\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class EngineRelay:
    """A unix socket that relays every byte to the Docker engine's, until `down` (socket removed, every open
    connection cut) and again after `up`. While ``hung``, it takes connections and bytes and passes none on. A
    request that a `refuse` rule matches it answers itself, with the engine's 500."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.server: asyncio.AbstractServer | None = None
        self.open: set[asyncio.StreamWriter] = set()
        self.hung = False
        self.rules: list[list] = []  # [method, path fragment, message, answers left]
        self.refused: list[bytes] = []  # the request lines answered with a refusal

    def refuse(self, method: str, fragment: str, message: str, times: int = 1 << 30) -> None:
        """Answer the next ``times`` requests ``method`` whose path holds ``fragment`` with a 500 saying ``message``
        (the first matching rule answers)."""
        self.rules.append([method.encode(), fragment.encode(), message, times])

    def relent(self) -> None:
        """Relay every request again."""
        self.rules.clear()

    def _refusal(self, request_line: bytes) -> str | None:
        method, _, rest = request_line.partition(b" ")
        for rule in self.rules:
            if rule[0] == method and rule[1] in rest.split(b" ", 1)[0] and rule[3] > 0:
                rule[3] -= 1
                self.refused.append(request_line)
                return rule[2]
        return None

    async def up(self) -> None:
        self.server = await asyncio.start_unix_server(self._relay, self.path)

    async def down(self) -> None:
        assert self.server is not None
        self.hung = False
        self.server.close()
        for writer in list(self.open):
            writer.transport.abort()
        await self.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        engine_reader, engine_writer = await asyncio.open_unix_connection(ENGINE_SOCKET)
        self.open |= {client_writer, engine_writer}
        try:
            await asyncio.gather(self._requests(client_reader, engine_writer, client_writer),
                                 self._pump(engine_reader, client_writer))
        finally:
            self.open -= {client_writer, engine_writer}

    async def _requests(self, reader: asyncio.StreamReader, engine: asyncio.StreamWriter, client: asyncio.StreamWriter) -> None:
        """The client's requests one by one (the SDK waits for each answer: none is in flight when a create is
        answered here), until one upgrades the connection (attach) or has a body of no stated length: bytes then."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
                fields = {name.strip().lower(): value.strip() for name, value in fields.items()}
                if b"upgrade" in fields or b"content-length" not in fields and b"transfer-encoding" in fields:
                    await self._write(engine, head)
                    break
                body = await reader.readexactly(int(fields.get(b"content-length", b"0")))
                refusal = self._refusal(head.split(b"\r\n", 1)[0])
                if refusal is not None:
                    await self._write(client, _engine_error("500 Internal Server Error", refusal))
                    continue
                await self._write(engine, head + body)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, RuntimeError):
            engine.transport.abort()
            return
        await self._pump(reader, engine)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._write(writer, data)
        except (ConnectionError, OSError, RuntimeError):  # RuntimeError: the other side was cut by `down`
            pass
        finally:
            writer.transport.abort()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        while self.hung:
            await asyncio.sleep(0.05)
        writer.write(data)
        await writer.drain()


async def call_lines(lb, count: int) -> dict[str, tuple[str, int, int]]:
    """fn id -> (runner, status, attempts) of the LB's call lines, once there are ``count`` (each is logged after its
    answer)."""
    await wait_until(lambda: len(lb.proc.call_lines()) >= count, f"{count} call lines")
    return {fn: (runner, status, attempts) for _, fn, runner, status, attempts in lb.proc.call_lines()}


async def new_fn(session: aiohttp.ClientSession, app_id: str, image: str, name: str) -> str:
    async with session.post("/v2/fns", json={"name": name, "app_id": app_id, "image": image}) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["id"]


async def fn_homed_on(session: aiohttp.ClientSession, app_id: str, image: str, home: int, runners: int, prefix: str) -> str:
    """A new fn whose first runner in `ch`'s order is ``home``."""
    for i in range(40):  # each fn id is random: half of them land on either of two runners
        fn_id = await new_fn(session, app_id, image, f"{prefix}{i}")
        if jump_hash(fn_hash(fn_id), runners) == home:
            return fn_id
    raise AssertionError("no fn id landed on the runner")


async def broken_and_healthy(platform, relay: EngineRelay | None = None, **env: str):
    """A runner that reaches the engine through ``relay`` (with ``env``), one that reaches it directly, and an LB
    placing on both with `ch`."""
    if relay is not None:
        env["DOCKER_HOST"] = f"unix://{relay.path}"
    broken = await platform.runner(**env)
    healthy = await platform.runner()
    return broken, healthy, await platform.lb([broken, healthy], placer="ch")


async def placed_elsewhere(session: aiohttp.ClientSession, lb, app_id: str, image: str, broken, healthy, said: str,
                           reason: str) -> None:
    """Three new fns homed on ``broken`` (0 of 2): each call needs a cold start there first, is refused, and answers
    200 from ``healthy`` at the second attempt; ``broken`` logs ``said`` once (not per call), and counts the three
    launches refused for ``reason`` and their calls refused, none failed."""
    homed = [await fn_homed_on(session, app_id, image, 0, 2, f"{reason}{n}-") for n in range(3)]
    for fn_id in homed:
        async with session.post(f"/invoke/{fn_id}", data=b"placed elsewhere") as r:
            assert (r.status, await r.read()) == (200, b"placed elsewhere")
    lines = await call_lines(lb, 3)
    assert [lines[fn_id] for fn_id in homed] == [(healthy.address, 200, 2)] * 3  # refused, then the other
    log = broken.proc.log()
    assert log.count(said) == 1 and "failed to start" not in log
    samples = await runner_metrics(broken)
    assert samples[f'fn_runner_container_launches_refused_total{{reason="{reason}"}}'] == 3
    assert samples['fn_runner_calls_total{result="refused"}'] == 3
    assert samples['fn_runner_calls_total{result="error"}'] == 0
    assert samples['fn_runner_container_launches_total{result="failed"}'] == 0


async def runner_metrics(runner) -> dict[str, float]:
    async with aiohttp.ClientSession(runner.url) as direct, direct.get("/metrics") as r:
        return metric_samples(await r.text())
