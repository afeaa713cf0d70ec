"""Cold starts through a real runner and Docker: a function that dies while it starts fails its call at once, as Fn's."""

from __future__ import annotations

import time

import docker.errors
import pytest

from fn_core.testing import wait_until


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        ({"config": {"PYTHONPATH": "/nonexistent"}}, "container exit code 1"),  # a bad import: the fdk cannot be found
        ({"memory": 6}, "container out of memory"),  # too little memory for Python to start in
    ],
    ids=["bad-import", "too-little-memory"],
)
async def test_a_function_that_crashes_at_start_is_a_quick_502_with_how_it_ended_not_a_504(start, rc, docker_client, fn, message):
    """The container ends before its socket is up. Fn watches a starting container: its call fails with the exit
    code (or the OOM kill), not with ContainerInitTimeout at the end of the start timeout."""
    node = await start(hot_start_timeout_msecs=30000)
    launched = []
    node.agent.driver.launch = _recording(node.agent.driver.launch, launched)
    began = time.monotonic()
    result = await rc.run(node.address, rc.call(**fn), b"hello")
    took = time.monotonic() - began

    assert not result.started
    done = result.finished
    assert (done.success, done.errorCode, done.errorStr, done.errorUser) == (False, 502, message, True)
    assert took < 10, took  # well before the start timeout (30 s)
    assert node.agent.containers() == []
    [crashed] = launched

    def gone() -> bool:
        try:
            docker_client.containers.get(crashed)
        except docker.errors.NotFound:
            return True
        return False

    await wait_until(gone, "the crashed container removed")
    assert rc.containers() == []


async def test_a_pure_runner_lets_go_of_a_containers_output_once_it_is_ready(start, rc):
    """The start is watched through the container's attach stream; once its socket is up, the output of a pure
    runner's function goes nowhere again (as Fn's), not through the runner."""
    node = await start()
    result = await rc.run(node.address, rc.call(), b"warm")
    assert (result.status, result.body) == (200, b"warm")
    assert node.driver._attached == {}


def _recording(launch, launched: list[str]):
    async def recorded(*args, **kwargs):
        container_id = await launch(*args, **kwargs)
        launched.append(container_id)
        return container_id

    return recorded
