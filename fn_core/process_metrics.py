"""Process metrics on /metrics, as Fn has them: the node's own process, and the commands of ``FN_PROCESS_COLLECTOR_LIST``.

Fn registers Prometheus' process collector for itself under the ``fn`` namespace, and one more for each
command name of ``FN_PROCESS_COLLECTOR_LIST`` (whitespace-separated; default ``dockerd docker-containerd``;
set and empty: none), under the name made metric-safe (``docker-containerd`` -> ``docker_containerd``). So
an operator sees the node's and the Docker engine's CPU, memory and file descriptors beside the calls::

    fn_process_resident_memory_bytes 5.1e+07
    dockerd_process_cpu_seconds_total 12.3

A command is the first process whose ``argv[0]`` has that base name; its pid is remembered, and checked
again at each scrape (a restarted dockerd is found anew). A command not running (or not in this node's pid
namespace), or a figure this node may not read (another user's fds), has no sample, not a zero: as in Fn,
whose collector then reports nothing for it. A name never found costs a scan of ``/proc`` at each scrape.
Everything is read from ``/proc`` (Linux), in a thread: a scrape never holds the event loop.
"""

from __future__ import annotations

import logging
import os
import re

import attrs

log = logging.getLogger(__name__)

#: the node's own namespace, as Fn's
OWN_NAMESPACE = "fn"

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

# (name, type, help) as Prometheus' process collector has them
_METRICS = (
    ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds."),
    ("process_open_fds", "gauge", "Number of open file descriptors."),
    ("process_max_fds", "gauge", "Maximum number of open file descriptors."),
    ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes."),
    ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes."),
    ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds."),
)


def metric_namespace(command: str) -> str:
    """A command name as a metric prefix: Prometheus allows letters, digits, ``_`` and ``:``, but no digit first
    (``9p-fuse`` -> ``_9p_fuse``)."""
    namespace = re.sub(r"[^0-9A-Za-z_:]", "_", command)
    return f"_{namespace}" if namespace[:1].isdigit() else namespace


def command_names(value: str) -> list[str]:
    """``FN_PROCESS_COLLECTOR_LIST`` as Fn reads it: whitespace-separated names."""
    return value.split()


def read_process(pid: int) -> dict[str, float] | None:
    """The figures of `_METRICS` for ``pid`` (those this process may read), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after the command, which may hold spaces
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    # proc(5): utime 14, stime 15, starttime 22, vsize 23, rss 24; fields[0] is field 3
    figures = {
        "process_cpu_seconds_total": (int(fields[11]) + int(fields[12])) / _TICKS_PER_S,
        "process_virtual_memory_bytes": float(fields[20]),
        "process_resident_memory_bytes": float(int(fields[21]) * _PAGE_BYTES),
        "process_start_time_seconds": _boot_time() + int(fields[19]) / _TICKS_PER_S,
    }
    try:
        figures["process_open_fds"] = float(len(os.listdir(f"/proc/{pid}/fd")))
    except OSError:  # another user's process: its fds are not ours to list
        pass
    soft = _max_open_files(pid)
    if soft is not None:
        figures["process_max_fds"] = soft
    return figures


def _boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


def _max_open_files(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line[len("Max open files"):].split()[0]
                    return float("inf") if soft == "unlimited" else float(soft)
    except OSError:
        pass
    return None


def _argv0_name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
    except OSError:
        return None
    return os.path.basename(argv0.decode(errors="replace")) if argv0 else None


@attrs.define
class CommandProcess:
    """The process of one command name, found by scanning ``/proc`` and remembered while it runs."""

    name: str
    pid: int = 0

    def find(self) -> int | None:
        if self.pid and _argv0_name(self.pid) == self.name:
            return self.pid
        self.pid = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _argv0_name(int(entry)) == self.name:
                self.pid = int(entry)
                return self.pid
        return None


@attrs.define
class ProcessMetrics:
    """The node's process (``fn_process_*``) and the configured commands' (``<command>_process_*``)."""

    commands: list[CommandProcess]
    own_pid: int = attrs.field(factory=os.getpid)

    def __attrs_post_init__(self) -> None:
        # one family per name: a second command with the same namespace (``a-b`` and ``a_b``, a name listed twice,
        # or ``fn``, the node's own) would repeat a family, and Prometheus refuses the whole scrape then
        taken = {OWN_NAMESPACE: "this node"}
        kept = []
        for command in self.commands:
            namespace = metric_namespace(command.name)
            if namespace in taken:
                log.warning("FN_PROCESS_COLLECTOR_LIST: %r left out, its metrics %s_process_* would be those of %s",
                            command.name, namespace, taken[namespace])
                continue
            taken[namespace] = repr(command.name)
            kept.append(command)
        self.commands = kept

    @classmethod
    def from_config(cls, config) -> ProcessMetrics:
        return cls([CommandProcess(name) for name in command_names(config.process_collector_list)])

    def render(self) -> str:
        """The exposition text; blocking (``/proc`` reads): call it in a thread."""
        sources = [(OWN_NAMESPACE, self.own_pid)]
        for command in self.commands:
            pid = command.find()
            if pid is not None:
                sources.append((metric_namespace(command.name), pid))
        read = [(namespace, figures) for namespace, pid in sources if (figures := read_process(pid)) is not None]
        lines = []
        for metric, kind, help_text in _METRICS:
            for namespace, figures in read:
                if metric in figures:
                    name = f"{namespace}_{metric}"
                    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_value(figures[metric])}"]
        return "\n".join(lines) + "\n"


def _value(number: float) -> str:
    return "+Inf" if number == float("inf") else repr(number)
