"""Process metrics read from /proc: the node's own process, and a command found by its name."""

from __future__ import annotations

import os
import resource
import time

from fn_core.config import load_config
from fn_core.process_metrics import CommandProcess, ProcessMetrics, command_names, metric_namespace, read_process
from fn_core.testing import metric_samples


def test_the_own_process_figures_match_what_the_process_itself_sees():
    figures = read_process(os.getpid())
    assert figures is not None
    assert figures["process_cpu_seconds_total"] > 0
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the peak, in KiB on Linux
    assert 0 < figures["process_resident_memory_bytes"] <= max_rss + (1 << 20)
    assert figures["process_virtual_memory_bytes"] >= figures["process_resident_memory_bytes"]
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert figures["process_max_fds"] == (float("inf") if soft == resource.RLIM_INFINITY else soft)
    with open(os.devnull) as extra:  # one more fd open: counted
        opened = read_process(os.getpid())
        assert opened is not None and extra.fileno() >= 0
        assert opened["process_open_fds"] == figures["process_open_fds"] + 1
    assert figures["process_start_time_seconds"] < time.time()


def test_a_command_is_found_by_its_name_followed_across_restarts_and_left_out_when_gone(sleeper):
    command = CommandProcess(sleeper.name)
    assert command.find() is None

    before = time.time()
    first = sleeper()
    assert command.find() == first.pid
    figures = read_process(first.pid)
    assert figures is not None
    assert abs(figures["process_start_time_seconds"] - before) < 2.0
    assert figures["process_resident_memory_bytes"] > 0

    first.kill()
    first.wait()
    assert command.find() is None  # the remembered pid is checked, not trusted
    second = sleeper()
    assert command.find() == second.pid


def test_render_names_each_command_metric_safe_and_leaves_out_commands_not_running(sleeper):
    metrics = ProcessMetrics([CommandProcess(sleeper.name), CommandProcess("no-such-command-anywhere")])
    process = sleeper()
    text = metrics.render()
    found = metric_samples(text)
    prefix = metric_namespace(sleeper.name)
    assert prefix == sleeper.name.replace("-", "_")
    for metric in ("cpu_seconds_total", "open_fds", "max_fds", "virtual_memory_bytes", "resident_memory_bytes",
                   "start_time_seconds"):
        assert f"fn_process_{metric}" in found
        assert f"{prefix}_process_{metric}" in found
    assert f"# TYPE {prefix}_process_cpu_seconds_total counter" in text
    assert not any(name.startswith("no_such_command") for name in found)
    process.kill()
    process.wait()
    assert not any(name.startswith(prefix) for name in metric_samples(metrics.render()))


def test_the_list_is_fns_whitespace_separated_names_with_its_default_and_empty_for_none():
    assert command_names(load_config(env={}).process_collector_list) == ["dockerd", "docker-containerd"]
    assert command_names(load_config(env={"FN_PROCESS_COLLECTOR_LIST": " dockerd\tcontainerd  "}).process_collector_list) == [
        "dockerd", "containerd"]
    assert ProcessMetrics.from_config(load_config(env={"FN_PROCESS_COLLECTOR_LIST": ""})).commands == []
    assert metric_namespace("docker-containerd") == "docker_containerd"
    assert metric_namespace("my.daemon:1") == "my_daemon:1"
