"""Start the platform under test as real processes on 127.0.0.1 and deploy functions through the v2 API.

Topologies: `serve` (one `fn-core serve` process) and `split` (`fn-core lb` + N `fn-core runner`
processes). Each runner gets its own container label tag and iofs dir, so its containers can be
counted and removed apart from the others (and from other users of a shared Docker engine).
"""

from __future__ import annotations

import asyncio
import glob
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from .common import FnProc, free_port, wait_http, wait_tcp


@dataclass
class Platform:
    url: str
    lb: FnProc
    runners: list[FnProc]
    runner_tags: list[str]
    iofs_dirs: list[str]
    workdir: Path
    session: aiohttp.ClientSession | None = None
    app_id: str = ""
    fns: dict[str, str] = field(default_factory=dict)  # name -> id

    @property
    def procs(self) -> list[FnProc]:
        return [self.lb, *[r for r in self.runners if r is not self.lb]]

    async def deploy(self, name: str, image: str, memory: int = 64, idle_timeout: int = 3600) -> str:
        assert self.session is not None
        if not self.app_id:
            async with self.session.post("/v2/apps", json={"name": "bench"}) as r:
                self.app_id = (await r.json())["id"]
        spec = {"name": name, "app_id": self.app_id, "image": image, "memory": memory, "idle_timeout": idle_timeout}
        async with self.session.post("/v2/fns", json=spec) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"deploying {name}: {r.status} {body}")
        self.fns[name] = body["id"]
        return body["id"]

    async def deploy_warm(self, image: str, calls: int = 300) -> str:
        """Deploy the echo fn from `image` and call it `calls` times: its container hot, both nodes warm."""
        fn_id = await self.deploy("echo", image)
        for _ in range(calls):
            await self.call(fn_id, b"warm")
        return fn_id

    async def call(self, fn_id: str, body: bytes = b"x") -> tuple[int, bytes]:
        assert self.session is not None
        async with self.session.post(f"/invoke/{fn_id}", data=body) as r:
            return r.status, await r.read()

    def sockets(self) -> list[str]:
        """Unix sockets of the hot containers of this platform's runners."""
        return sorted(p for d in self.iofs_dirs for p in glob.glob(f"{d}/*/lsnr.sock"))

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        # LB first (it stops placing), then the runners (each removes its containers on SIGTERM).
        for proc in [self.lb, *[r for r in self.runners if r is not self.lb]]:
            await asyncio.to_thread(proc.stop)
        for d in self.iofs_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _runner_env(tag: str, iofs: str, extra: dict[str, str]) -> dict[str, str]:
    return {"FN_CONTAINER_LABEL_TAG": tag, "FN_IOFS_PATH": iofs, "FN_LOG_LEVEL": "warning", **extra}


async def start_platform(
    run_tag: str,
    topology: str,
    *,
    runners: int = 1,
    placer: str = "ch",
    runner_env: dict[str, str] | None = None,
    lb_env: dict[str, str] | None = None,
) -> Platform:
    """`serve`: one process; `split`: an LB and `runners` runner processes. Waits until they answer."""
    workdir = Path(tempfile.mkdtemp(prefix=f"fnb-{run_tag}-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    common = ["--host", "127.0.0.1"]
    db = ["--db", f"sqlite3://{workdir}/fn.db"]
    extra = {"FN_FREEZE_IDLE_MSECS": "-1", **(runner_env or {})}
    grpc_ports: list[int] = []
    if topology == "serve":
        tag, iofs = f"{run_tag}-s", f"/tmp/fnb-{run_tag}-s"  # short: unix socket paths are <= 108 bytes
        env = {**_runner_env(tag, iofs, extra), **(lb_env or {})}
        lb = FnProc("serve", ["serve", *common, "--port", str(port), *db],
                    env, workdir / "serve.log")
        platform = Platform(url, lb, [lb], [tag], [iofs], workdir)
    else:
        procs, tags, dirs = [], [], []
        for i in range(runners):
            tag, iofs, grpc_port = f"{run_tag}-r{i}", f"/tmp/fnb-{run_tag}-r{i}", free_port()
            procs.append(FnProc(f"runner{i}", ["runner", *common, "--grpc-port", str(grpc_port), "--port", "0"],
                                _runner_env(tag, iofs, extra), workdir / f"runner{i}.log"))
            tags.append(tag)
            dirs.append(iofs)
            grpc_ports.append(grpc_port)
        lb_args = ["lb", *common, "--port", str(port), "--placer", placer, *db]
        for grpc_port in grpc_ports:
            lb_args += ["--runner", f"127.0.0.1:{grpc_port}"]
        lb = FnProc("lb", lb_args, {"FN_LOG_LEVEL": "warning", **(lb_env or {})}, workdir / "lb.log")
        platform = Platform(url, lb, procs, tags, dirs, workdir)
    try:
        for proc in platform.runners:
            if proc is not lb:
                proc.start()
        for proc, grpc_port in zip(platform.runners, grpc_ports, strict=False):  # split only: serve has none
            await asyncio.to_thread(wait_tcp, grpc_port, proc)
        lb.start()
        await wait_http(url, platform.procs)
        platform.session = aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=64))
    except BaseException:
        await platform.stop()
        raise
    return platform
