"""Runners sharing a Docker host: a starting runner removes what an earlier one left only under a tag set for it
(FN_CONTAINER_LABEL_TAG), as Fn; with none, runners of one host leave each other's containers alone."""

from __future__ import annotations

import os

import pytest

from fn_core.testing import wait_until

INSTANCE_LABEL = "fn-agent-instance"


@pytest.fixture
def untagged(docker_client):
    """``untagged.append(node)``: its containers (labelled ``fn-core``, not the test's tag) are removed after the test
    even when it failed half-way; found by the node's own instance label, never by the shared ``fn-core`` one."""
    nodes: list = []
    yield nodes
    for node in nodes:
        for container in docker_client.containers.list(all=True, filters={"label": f"{INSTANCE_LABEL}={node.driver.instance}"}):
            container.remove(force=True)


async def test_a_runner_started_without_a_tag_leaves_a_running_neighbours_containers_alone(start, rc, docker_client, untagged):
    first = await start(container_label_tag="")
    untagged.append(first)
    assert (await rc.run(first.address, rc.call(), b"before")).body == b"before"
    [hot] = first.agent.containers()
    labels = docker_client.containers.get(hot.id).labels
    assert labels["fn-agent-classifier"] == "fn-core"  # still labelled, for operators (and `docker ps --filter`)

    second = await start(container_label_tag="")  # a second runner on the host, or the first one's restart elsewhere
    untagged.append(second)

    assert docker_client.containers.get(hot.id).status == "running"
    assert os.path.isdir(hot.iofs_dir)
    after = await rc.run(first.address, rc.call(), b"after")
    assert after.finished.success and after.body == b"after"
    assert first.agent.containers() == [hot]  # the same hot container, not a cold start after a 502


async def test_a_runner_with_its_tag_set_removes_what_the_previous_runner_of_that_tag_left(start, rc, label_tag):
    """The other side of the rule (the runner fixture sets a tag per test): a runner killed with -9 is never told to
    stop; the next one with its tag removes its containers at start-up."""
    killed = await start()
    assert (await rc.run(killed.address, rc.call(), b"x")).finished.success
    [left] = killed.agent.containers()
    assert [c.id for c in rc.containers()] == [left.id]

    successor = await start()
    await wait_until(lambda: left.id not in {c.id for c in rc.containers()}, "the killed runner's container removed")
    assert (await rc.run(successor.address, rc.call(), b"y")).body == b"y"
