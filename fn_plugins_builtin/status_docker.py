"""Runner status: does Docker answer, how much memory/CPU the machine has free.

The Status RPC runs on the runner's event loop, and asking Docker blocks, so the answer comes from
a cache that a worker thread refreshes when it is older than `REFRESH_S` (the RPC never waits for
it). Until the first probe has answered, ``docker`` reads ``checking``. When Docker does not
answer, the runner is marked ``failed`` (503): a placer that reads status should stop sending calls.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from fn_core import hookimpl

log = logging.getLogger(__name__)

REFRESH_S = 2.0
PROBE_TIMEOUT_S = 2


def _mem_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@hookimpl
def configure(config, plugin_manager):
    plugin_manager.register(DockerProbe(), name="status-docker:probe")  # one cache per node, none at import


class DockerProbe:
    """Cached facts about the engine and the machine, refreshed off the event loop."""

    def __init__(self) -> None:
        self.facts: dict[str, str] = {"docker": "checking"}
        self.healthy: bool | None = None
        self.refreshed_at = 0.0
        self._refreshing = False
        self._lock = threading.Lock()

    def snapshot(self) -> tuple[bool | None, dict[str, str]]:
        with self._lock:
            if not self._refreshing and time.monotonic() - self.refreshed_at > REFRESH_S:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="fn-status-docker", daemon=True).start()
            return self.healthy, dict(self.facts)

    def _refresh(self) -> None:
        facts: dict[str, str] = {}
        healthy = False
        try:
            import docker

            client = docker.from_env(timeout=PROBE_TIMEOUT_S)
            try:
                info: dict[str, Any] = client.info()
            finally:
                client.close()
            ncpu = int(info.get("NCPU") or os.cpu_count() or 1)
            load = os.getloadavg()[0]
            facts = {
                "docker": "ok",
                "docker.version": str(info.get("ServerVersion", "")),
                "docker.containers_running": str(info.get("ContainersRunning", "")),
                "host.mem_available_bytes": str(_mem_available_bytes()),
                "host.cpus": str(ncpu),
                "host.cpu_free_mcpus": str(max(0, int(ncpu * 1000 - load * 1000))),
            }
            healthy = True
        except Exception as exc:  # anything that stops us talking to Docker means "unreachable"
            facts = {"docker": f"unreachable: {type(exc).__name__}: {exc}"[:300], "host.mem_available_bytes": str(_mem_available_bytes())}
            log.warning("Docker does not answer: %s", exc)
        with self._lock:
            self.facts, self.healthy = facts, healthy
            self.refreshed_at = time.monotonic()
            self._refreshing = False

    @hookimpl(trylast=True)  # registered in configure, it would run first: built-ins run after third-party plugins
    def runner_status(self, status, runner):
        if runner is not None:
            return  # on the LB: nothing to add
        healthy, facts = self.snapshot()
        status.custom_status.update(facts)
        if healthy is False:
            status.failed = True
            status.error_code = 503
            status.error_str = facts["docker"]
