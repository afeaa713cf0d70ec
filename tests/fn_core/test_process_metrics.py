"""Process metrics read from /proc: the node's own process, and a command found by its name."""

from __future__ import annotations

import collections
import logging
import os
import re
import resource
import shutil
import subprocess
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
    assert metric_namespace("9p-fuse") == "_9p_fuse"  # a metric name may not start with a digit


def families_named_twice(text: str) -> list[str]:
    types = collections.Counter(line.split()[2] for line in text.splitlines() if line.startswith("# TYPE "))
    return [name for name, count in types.items() if count > 1]


def test_names_listed_twice_or_made_alike_give_each_family_once_and_the_log_says_which_was_left_out(sleeper, caplog):
    caplog.set_level(logging.WARNING, logger="fn_core.process_metrics")
    alike = sleeper.name.replace("-", "_")  # a different command, the same metric names
    metrics = ProcessMetrics([CommandProcess(n) for n in (sleeper.name, sleeper.name, alike, "fn")])
    assert [c.name for c in metrics.commands] == [sleeper.name]
    process = sleeper()
    text = metrics.render()
    assert families_named_twice(text) == []
    assert f"{alike}_process_cpu_seconds_total" in metric_samples(text)  # the first listed, under its metric-safe name
    assert metric_samples(text)["fn_process_max_fds"] > 0  # the node's own, not a command called fn
    left_out = [r.getMessage() for r in caplog.records]
    assert len(left_out) == 3 and all(m.startswith("FN_PROCESS_COLLECTOR_LIST: ") for m in left_out)
    assert f"{alike!r} left out, its metrics {alike}_process_* would be those of {sleeper.name!r}" in left_out[1]
    assert "'fn' left out, its metrics fn_process_* would be those of this node" in left_out[2]
    process.kill()
    process.wait()


def test_a_command_whose_name_starts_with_a_digit_gets_a_valid_metric_name(tmp_path):
    program = tmp_path / f"9p-test-{os.getpid()}"
    shutil.copy(shutil.which("sleep"), program)
    process = subprocess.Popen([str(program), "60"])
    try:
        metrics = ProcessMetrics([CommandProcess(program.name)])
        deadline = time.monotonic() + 5
        while metrics.commands[0].find() is None:  # exec has begun, the new argv may not be there yet
            assert time.monotonic() < deadline, f"{program.name} never showed in /proc"
            time.sleep(0.01)
        names = list(metric_samples(metrics.render()))
        namespace = f"_9p_test_{os.getpid()}"
        assert f"{namespace}_process_resident_memory_bytes" in names
        assert all(re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name) for name in names)
    finally:
        process.kill()
        process.wait()
