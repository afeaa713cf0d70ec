"""The runner's memory and CPU budget (Fn's resource tracker, re-derived).

Each hot container reserves its fn's memory (plus its /tmp tmpfs) and milli-CPUs from launch until
removal, idle or not. The budget comes from the machine (MemAvailable, the cgroup v1 limit, minus
headroom; CPUs x 1000, the CFS quota) and is clamped by FN_MAX_TOTAL_MEMORY_BYTES /
FN_MAX_TOTAL_CPU_MCPUS. Pure bookkeeping: single-threaded, called from the event loop only.
"""

from __future__ import annotations

import os

import attrs

MB = 1024 * 1024
_NO_CGROUP_LIMIT = 1 << 62  # cgroup v1 reports "unlimited" as a huge number


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def machine_memory_bytes() -> int:
    """Memory containers may use: MemAvailable clamped by our cgroup, minus 10 % headroom in [256 MiB, 5 GiB]."""
    available = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    limit = _read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    if limit and limit < _NO_CGROUP_LIMIT:
        available = min(available, limit)
    headroom = min(max(available // 10, 256 * MB), 5 * 1024 * MB)
    return max(available - headroom, 0)


def machine_milli_cpus() -> int:
    cpus = (os.cpu_count() or 1) * 1000
    quota = _read_int("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    period = _read_int("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota and quota > 0 and period:
        cpus = min(cpus, quota * 1000 // period)
    return cpus


def budget_from_config(max_memory_bytes: int, max_milli_cpus: int) -> Budget:
    memory = machine_memory_bytes()
    cpus = machine_milli_cpus()
    if max_memory_bytes:
        memory = min(memory, max_memory_bytes) if memory else max_memory_bytes
    if max_milli_cpus:
        cpus = min(cpus, max_milli_cpus)
    return Budget(total_memory=memory, total_mcpus=cpus)


@attrs.define
class Budget:
    total_memory: int  # bytes
    total_mcpus: int
    used_memory: int = 0
    used_mcpus: int = 0

    @property
    def free_memory(self) -> int:
        return self.total_memory - self.used_memory

    @property
    def free_mcpus(self) -> int:
        return self.total_mcpus - self.used_mcpus

    def possible(self, memory: int, mcpus: int) -> bool:
        """Could this ever fit, with every other container gone? (No -> 400.)"""
        return memory <= self.total_memory and mcpus <= self.total_mcpus

    def fits(self, memory: int, mcpus: int) -> bool:
        return memory <= self.free_memory and mcpus <= self.free_mcpus

    def try_reserve(self, memory: int, mcpus: int) -> bool:
        if not self.fits(memory, mcpus):
            return False
        self.used_memory += memory
        self.used_mcpus += mcpus
        return True

    def hold(self, memory: int, mcpus: int) -> None:
        """Count resources as used whether they fit or not (a container the engine would not remove may still
        run): free can go below zero until they are released."""
        self.used_memory += memory
        self.used_mcpus += mcpus

    def release(self, memory: int, mcpus: int) -> None:
        self.used_memory -= memory
        self.used_mcpus -= mcpus


def call_needs(memory_mb: int, tmpfs_mb: int, mcpus: int) -> tuple[int, int]:
    """What one container of a call reserves: (bytes, milli-CPUs)."""
    return (memory_mb + tmpfs_mb) * MB, mcpus
