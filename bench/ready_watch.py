"""Container readiness: an inotify watch of the socket dir against 1 ms polling, interleaved.

`.venv/bin/python bench/ready_watch.py [--launches 10]`

Starts the echo image the way the runner does (its own Docker driver's options), `--launches` times
per way, alternating, and times in this process from `docker start` returning to fdk's `lsnr.sock`
appearing: the wall time and this process's CPU time over that wait (what a runner spends on it while
the container, on the same cores, starts). Every container carries the label `fn-agent-classifier=fnb-ready`
and is removed at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time

import docker
from fnbench.cold import _NoHooks

from fn_core.config import load_config
from fn_core.images import build_named_function
from fn_core.models import Call
from fn_core.runner.agent import container_env
from fn_core.runner.dirwatch import DirWatcher
from fn_core.runner.uds import wait_ready
from fn_plugins_builtin.driver_docker import DockerDriver

IMAGE = "fn-core-bench/echo:latest"
IOFS_ROOT = "/tmp/fnb-ready"


def one_launch(client, driver: DockerDriver, watched: bool) -> tuple[float, float]:
    """(ms from start to ready, ms of this process's CPU meanwhile)."""
    return asyncio.run(_one_launch(client, driver, watched))


async def _one_launch(client, driver: DockerDriver, watched: bool) -> tuple[float, float]:
    call = Call(id="ready", app_id="bench", fn_id="bench-ready", image=IMAGE, memory=128)
    iofs = os.path.join(IOFS_ROOT, os.urandom(4).hex())
    os.makedirs(iofs, mode=0o777)
    os.chmod(iofs, 0o777)
    watcher = DirWatcher()
    watch = watcher.watch(iofs) if watched else None  # before the start, as the runner
    container = client.containers.create(**driver.container_options(call, iofs, container_env(call)))
    try:
        container.start()
        wall, cpu = time.perf_counter(), time.process_time()
        await wait_ready(iofs, 10.0, watch)
        return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000
    finally:
        if watch is not None:
            watch.close()
        watcher.close()
        container.remove(force=True)
        shutil.rmtree(iofs, ignore_errors=True)


def main(launches: int) -> None:
    client = docker.from_env()
    build_named_function(client, "echo", IMAGE)
    driver = DockerDriver(load_config(env={"FN_CONTAINER_LABEL_TAG": "fnb-ready", "FN_IOFS_PATH": IOFS_ROOT}), _NoHooks())
    rows: dict[str, list[tuple[float, float]]] = {"polled (1 ms)": [], "watched (inotify)": []}
    for _ in range(launches):
        rows["polled (1 ms)"].append(one_launch(client, driver, watched=False))
        rows["watched (inotify)"].append(one_launch(client, driver, watched=True))
    for way, got in rows.items():
        print(f"{way:18} start -> ready p50 {statistics.median(r[0] for r in got):6.1f} ms, "
              f"this process's CPU meanwhile p50 {statistics.median(r[1] for r in got):5.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=10, help="launches per way (default 10)")
    main(parser.parse_args().launches)
