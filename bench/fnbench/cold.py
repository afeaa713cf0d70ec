"""Cold start: create -> ready -> first response, split into parts, beside the end-to-end cold call.

* `direct launch` (the floor): the runner's own Docker driver (`fn_plugins_builtin.driver_docker`)
  builds the same `containers.create()` options the runner uses; this process times
  docker create, docker start, start -> `lsnr.sock` ready (an inotify watch of the socket dir, as the runner) and the first
  POST /call over the socket.
* `end to end`: a new fn each time (a new slot, so a new container starts) called once through
  `fn-core lb` -> `fn-core runner`; the runner's split is read from the outside with Docker events
  (`create` and `start` timeNano of the runner's labelled container) against the client's send time
  on the same wall clock. Two variants, one after the other, each with its own runner:
  - `own network` (`e2e_*`): the runner as configured by default; each container gets its own network.
    Issue 6's cold target compares this one with the direct launch.
  - `prefork pool` (`prefork.e2e_*`): the runner started with Fn's prefork pool
    (`FN_EXPERIMENTAL_PREFORK_POOL_SIZE` = the variant's cold calls + 2, warm-up included; donors of the echo image waiting in
    python, as `bench/prefork_cold.py`), so each new container joins a donor's network namespace instead
    of getting its own. Every call's container is inspected: `calls_in_donor_namespace` counts those that
    did join one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import threading
import time

import docker

from fn_core.config import load_config
from fn_core.models import Call
from fn_core.runner.agent import container_env
from fn_core.runner.dirwatch import DirWatcher
from fn_core.runner.uds import wait_ready
from fn_plugins_builtin.driver_docker import DockerDriver
from fn_plugins_builtin.prefork import DONOR_LABEL

from .common import CLASSIFIER
from .loadgen import RawClient, http_request
from .platform import start_platform


class _NoHooks:
    def modify_container_options(self, **_: object) -> None:
        pass


def direct_launch(client, image: str, tag: str, iofs_root: str) -> dict[str, float]:
    """One container started the way the runner starts it, each step timed from here (ms)."""
    return asyncio.run(_direct_launch(client, image, tag, iofs_root))


async def _direct_launch(client, image: str, tag: str, iofs_root: str) -> dict[str, float]:
    config = load_config(env={"FN_CONTAINER_LABEL_TAG": tag, "FN_IOFS_PATH": iofs_root})
    driver = DockerDriver(config, _NoHooks())
    call = Call(id="bench-cold", app_id="bench", fn_id="bench-cold", image=image, memory=128)
    iofs = os.path.join(iofs_root, os.urandom(4).hex())
    os.makedirs(iofs, mode=0o777)
    os.chmod(iofs, 0o777)
    options = driver.container_options(call, iofs, container_env(call))
    watcher = DirWatcher()
    watch = watcher.watch(iofs)  # as the runner: watched from before the start
    container = None
    try:
        t0 = time.perf_counter()
        container = client.containers.create(**options)  # blocking, as each step is timed alone
        t1 = time.perf_counter()
        container.start()
        t2 = time.perf_counter()
        await wait_ready(iofs, 10.0, watch)
        t3 = time.perf_counter()
        conn = RawClient(os.path.join(iofs, "lsnr.sock"),
                         http_request("/call", b"x", {"Fn-Call-Id": "c", "Fn-Deadline": "2099-01-01T00:00:00Z"}))
        status, _ = conn.call()
        t4 = time.perf_counter()
        conn.close()
        assert status == 200, status
    finally:
        watch.close()
        watcher.close()
        if container is not None:
            container.remove(force=True)
        shutil.rmtree(iofs, ignore_errors=True)
    return {"create_ms": (t1 - t0) * 1000, "start_ms": (t2 - t1) * 1000, "ready_ms": (t3 - t2) * 1000,
            "first_response_ms": (t4 - t3) * 1000, "total_ms": (t4 - t0) * 1000}


class EventLog:
    """Docker `create`/`start` events of containers with a given label, on a thread."""

    def __init__(self, client, label: str) -> None:
        self.events: list[dict] = []
        self._stream = client.events(decode=True, filters={"type": "container", "label": label})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self._stream:
                self.events.append(ev)
        except Exception:  # closed
            pass

    def first(self, action: str, since_ns: int) -> tuple[int, str] | None:
        """(timeNano, container id) of the first `action` event since `since_ns`, prefork donors left out."""
        found = [(e["timeNano"], e.get("Actor", {}).get("ID") or e.get("id", "")) for e in self.events
                 if e.get("Action") == action and e["timeNano"] >= since_ns
                 and DONOR_LABEL not in e.get("Actor", {}).get("Attributes", {})]
        return min(found) if found else None

    def close(self) -> None:
        self._stream.close()


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]}


# What a donor runs: the echo image's python, waiting for ever (as bench/prefork_cold.py).
PREFORK_CMD = "python3 -c 'import signal; signal.pause()'"


async def end_to_end(client, run_tag: str, image: str, runs: int, runner_env: dict[str, str]) -> tuple[list[dict], int]:
    """`runs` + 1 cold calls (a new fn each) through a fresh lb + runner, the first one a warm-up not kept.
    Returns the kept calls' split (ms) and how many of the kept calls' containers joined a prefork donor."""
    platform = await start_platform(run_tag, "split", runner_env={"FN_LOG_LEVEL": "warning", **runner_env})
    events = EventLog(client, f"{CLASSIFIER}={platform.runner_tags[0]}")
    e2e: list[dict] = []
    in_donor = 0
    try:
        port = int(platform.url.rsplit(":", 1)[1])
        for i in range(runs + 1):
            fn_id = await platform.deploy(f"cold{i}", image, memory=128)
            warm_lookup = RawClient(("127.0.0.1", port), http_request(f"/invoke/{fn_id}", b"x"))
            sent_ns = time.time_ns()
            t0 = time.perf_counter()
            status, _ = await asyncio.to_thread(warm_lookup.call)
            total_ms = (time.perf_counter() - t0) * 1000
            warm_lookup.close()
            assert status == 200, status
            await asyncio.sleep(0.3)  # let the events arrive
            created, started = events.first("create", sent_ns), events.first("start", sent_ns)
            if i == 0 or created is None or started is None:
                continue  # the first run warms the LB's and runner's code paths
            (created_ns, container_id), (started_ns, _) = created, started
            mode = (await asyncio.to_thread(client.api.inspect_container, container_id))["HostConfig"]["NetworkMode"]
            in_donor += mode.startswith("container:")
            e2e.append({"to_create_ms": (created_ns - sent_ns) / 1e6, "create_to_start_ms": (started_ns - created_ns) / 1e6,
                        "start_to_response_ms": total_ms - (started_ns - sent_ns) / 1e6, "total_ms": total_ms})
    finally:
        events.close()
        await platform.stop()  # the runner removes its containers and its donors
    return e2e, in_donor


async def run(run_tag: str, image: str, *, runs: int) -> dict[str, object]:
    client = docker.from_env()
    iofs_root = f"/tmp/fnb-{run_tag}-d"
    direct = []
    try:
        await asyncio.to_thread(direct_launch, client, image, f"{run_tag}-d", iofs_root)  # warm Docker's caches for this image
        for _ in range(runs):
            direct.append(await asyncio.to_thread(direct_launch, client, image, f"{run_tag}-d", iofs_root))
    finally:
        shutil.rmtree(iofs_root, ignore_errors=True)

    pool_size = runs + 1 + 2  # every call of the variant (warm-up included) finds a free donor, with 2 to spare
    prefork_env = {"FN_EXPERIMENTAL_PREFORK_POOL_SIZE": str(pool_size), "FN_EXPERIMENTAL_PREFORK_IMAGE": image,
                   "FN_EXPERIMENTAL_PREFORK_CMD": PREFORK_CMD}
    try:
        e2e, own_in_donor = await end_to_end(client, run_tag, image, runs, {})
        if not e2e:
            raise RuntimeError(f"no Docker events for the cold calls of {runs} runs")
        assert own_in_donor == 0, own_in_donor
        d, e = _median(direct), _median(e2e)
        floor = d["create_ms"] + d["start_ms"] + d["ready_ms"]
        prefork: dict[str, object] = {"env": prefork_env, "pool_size": pool_size}
        try:  # a failure here keeps the own-network figures (and issue 6's target) of this run
            pool_e2e, pool_in_donor = await end_to_end(client, f"{run_tag}p", image, runs, prefork_env)
            if not pool_e2e:
                raise RuntimeError(f"no Docker events for the cold calls of {runs} runs")
            pe = _median(pool_e2e)
            prefork.update({
                "calls_in_donor_namespace": pool_in_donor,
                "e2e_median": pe,
                "e2e_runs": [{k: round(v, 2) for k, v in r.items()} for r in pool_e2e],
                "e2e_minus_own_network_ms": round(pe["total_ms"] - e["total_ms"], 2),
                "e2e_minus_create_start_ready_ms": round(pe["total_ms"] - floor, 2),
            })
        except Exception as exc:
            prefork["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return {
        "runs": runs,
        "direct_launch_median": d,
        "direct_launch_runs": [{k: round(v, 2) for k, v in r.items()} for r in direct],
        "e2e_median": e,
        "e2e_runs": [{k: round(v, 2) for k, v in r.items()} for r in e2e],
        "docker_create_start_ready_ms": round(floor, 2),
        "e2e_minus_create_start_ready_ms": round(e["total_ms"] - floor, 2),
        "prefork": prefork,
        "how": "direct: timed around the runner's own driver options + docker SDK calls; e2e: client send time vs "
               "Docker events timeNano (create, start) of the runner's labelled container, same wall clock; "
               "prefork: the same e2e with a second runner started with FN_EXPERIMENTAL_PREFORK_* (see env), each "
               "container's HostConfig.NetworkMode inspected",
    }
