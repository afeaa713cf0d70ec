"""What the numbers were measured on: cores, memory, kernel, Docker, Python, fn-core commit."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def describe() -> dict[str, object]:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    repo = Path(__file__).resolve().parents[2]
    wrk = shutil.which("wrk")
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _run("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "docker": _run("docker", "version", "--format", "{{.Server.Version}}"),
        "python": platform.python_version(),
        # which build: a distribution's (PGO + LTO) runs the nodes' Python ~12 % faster than a plain source build
        "python_executable": os.path.realpath(sys._base_executable),
        "wrk": (_run(wrk, "-v").splitlines() or [""])[0] if wrk else None,
        "fn_core_commit": _run("git", "-C", str(repo), "rev-parse", "--short", "HEAD"),
        "fn_core_dirty": bool(_run("git", "-C", str(repo), "status", "--porcelain", "fn_core", "fn_plugins_builtin")),
    }
