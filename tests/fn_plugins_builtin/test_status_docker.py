"""status-docker: Docker's health and free memory/CPU in custom_status, from a cache refreshed off-loop."""

from __future__ import annotations

import time

from fn_core.records import RunnerStatus
from fn_plugins_builtin import status_docker


def wait_refreshed(probe: status_docker.DockerProbe) -> None:
    for _ in range(300):
        if probe.healthy is not None:
            return
        time.sleep(0.01)
    raise AssertionError("the probe never answered")


def test_reports_docker_ok_and_free_resources(docker_client, monkeypatch):
    probe = status_docker.DockerProbe()
    monkeypatch.setattr(status_docker, "PROBE", probe)
    first = RunnerStatus()
    status_docker.runner_status(first, None)
    assert first.custom_status["docker"] == "checking" and not first.failed  # never waits for Docker
    wait_refreshed(probe)
    status = RunnerStatus()
    status_docker.runner_status(status, None)
    assert status.custom_status["docker"] == "ok" and not status.failed
    assert int(status.custom_status["host.mem_available_bytes"]) > 0
    assert int(status.custom_status["host.cpus"]) >= 1
    assert int(status.custom_status["host.cpu_free_mcpus"]) >= 0


def test_unreachable_docker_marks_the_runner_failed(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/fn-core-test-no-docker.sock")
    probe = status_docker.DockerProbe()
    monkeypatch.setattr(status_docker, "PROBE", probe)
    status_docker.runner_status(RunnerStatus(), None)
    wait_refreshed(probe)
    status = RunnerStatus()
    status_docker.runner_status(status, None)
    assert status.failed and status.error_code == 503
    assert status.custom_status["docker"].startswith("unreachable")


def test_does_nothing_on_the_lb(monkeypatch):
    probe = status_docker.DockerProbe()
    monkeypatch.setattr(status_docker, "PROBE", probe)
    status = RunnerStatus()
    status_docker.runner_status(status, "10.0.0.1:9190")
    assert status.custom_status == {} and probe.refreshed_at == 0.0  # no probe started
