"""How the Docker driver reads the engine's refusals: a full disk is the runner's want (a NACK, another runner's engine
may have room), anything else the call's error. Without an engine (the system tests run it against a real one)."""

from __future__ import annotations

import docker.errors
import pytest

from fn_core.config import load_config
from fn_core.errors import APIError, RunnerOutOfResources
from fn_plugins_builtin import driver_docker
from fn_plugins_builtin.docker_engine import engine_refusal
from fn_plugins_builtin.driver_docker import DockerDriver

DISK_FULL = "mkdir /var/lib/docker/overlay2/4f1e-init: no space left on device"


@pytest.mark.parametrize("reason", [DISK_FULL, "write /var/lib/docker/containers/x/config: disk quota exceeded"])
def test_an_engine_whose_disk_is_full_refuses_for_the_runner_not_the_call(reason):
    error = engine_refusal("create the container", reason)
    assert isinstance(error, RunnerOutOfResources) and error.status == 503
    assert error.message == f"the Docker engine's disk is full: it could not create the container: {reason}"


def test_other_refusals_of_the_engine_are_a_500_that_says_what():
    error = engine_refusal("start the container", "OCI runtime create failed")
    assert (type(error), error.status, error.message) == (APIError, 500, "could not start the container: OCI runtime create failed")


class FailingPulls:
    def __init__(self, explanation: str) -> None:
        self.images = self
        self.explanation = explanation

    def pull(self, image, auth_config=None):
        raise docker.errors.APIError("500 Server Error", explanation=self.explanation)


def test_a_pull_that_fills_the_engines_disk_is_the_runners_want_and_a_registrys_refusal_the_images():
    driver = DockerDriver(load_config(env={}), hook=None)
    driver.pull_client = FailingPulls(f"failed to register layer: {DISK_FULL}")
    with pytest.raises(RunnerOutOfResources, match="could not pull image example.com/fn:1"):
        driver._pull_image("example.com/fn:1", None)
    driver.pull_client = FailingPulls("manifest for example.com/fn:1 not found")
    with pytest.raises(APIError) as refused:
        driver._pull_image("example.com/fn:1", None)
    assert (refused.value.status, refused.value.user_error) == (502, True)


def test_the_runner_out_of_descriptors_is_told_apart_from_an_engine_that_does_not_answer():
    """requests wraps the OSError of a connect the runner could not make (urllib3's ProtocolError, 'Connection
    aborted.'): EMFILE is this runner's want, not the engine's outage."""
    import requests.exceptions

    from fn_core.runner.shortage import runner_out_of
    from fn_plugins_builtin.engine_outage import engine_unreachable

    emfile = requests.exceptions.ConnectionError(ConnectionError("Connection aborted.", OSError(24, "Too many open files")))
    refused = requests.exceptions.ConnectionError(ConnectionError("Connection aborted.", FileNotFoundError(2, "No such file")))
    assert runner_out_of(emfile, "x") is not None and engine_unreachable(emfile)  # the driver asks runner_out_of first
    assert runner_out_of(refused, "x") is None and engine_unreachable(refused)


async def test_a_launch_the_runner_could_not_send_for_want_of_descriptors_is_its_nack_and_no_engine_outage():
    import asyncio

    import requests.exceptions

    driver = DockerDriver(load_config(env={}), hook=None)
    asked = asyncio.get_running_loop().create_future()
    asked.set_exception(requests.exceptions.ConnectionError(ConnectionError("Connection aborted.", OSError(24, "Too many open files"))))
    with pytest.raises(RunnerOutOfResources, match="out of file descriptors: it could not reach the Docker engine"):
        await driver._engine_answer(asked)
    assert driver.outage.down_since is None  # launches go on asking the engine: it was never found down


class EngineThatFailsAfterCreate:
    """A docker SDK client whose create works, whose start fails, and whose engine refuses the first
    ``refused_removals`` removals (an engine briefly out of order, or the runner out of descriptors)."""

    def __init__(self, refused_removals: int) -> None:
        self.images = self.containers = self.api = self
        self.refused_removals = refused_removals
        self.removal_attempts = 0
        self.removed: list[str] = []
        self.attrs: dict = {"Config": {}}

    def get(self, image):
        return self

    def create(self, **options):
        return self

    id = "c0ffee" * 10

    def start(self):
        raise docker.errors.APIError("500 Server Error", explanation="OCI runtime create failed: exec format error")

    def remove_container(self, container_id, force=False, v=False):
        self.removal_attempts += 1
        if self.removal_attempts <= self.refused_removals:
            raise docker.errors.APIError("500 Server Error", explanation="could not kill: the engine is busy")
        self.removed.append(container_id)


async def test_a_container_a_failed_launch_could_not_remove_is_removed_once_the_engine_lets_it(monkeypatch):
    """A container made by a launch that then failed is removed at once; one the engine would not remove then was
    left running (or created) and unknown to the runner until its stop. It is now tried again until it is gone."""
    import asyncio

    from fn_core.testing import wait_until

    monkeypatch.setattr(driver_docker, "REMOVE_RETRY_S", (0.05, 0.1))
    driver = DockerDriver(load_config(env={}), hook=None)
    driver._loop = asyncio.get_running_loop()
    driver.client = engine = EngineThatFailsAfterCreate(refused_removals=3)
    with pytest.raises(APIError, match="could not start the container: OCI runtime create failed"):
        await driver._create_and_start_kept({"image": "fn/echo:1", "labels": {}}, output_wanted=False)
    await wait_until(lambda: engine.id in driver.leftovers, "the refused removal handed to the loop")
    await wait_until(lambda: engine.removed == [engine.id], "the removal tried again", timeout_s=5)
    assert engine.removal_attempts == 4 and driver.leftovers == set()

    # a launch whose first removal works leaves nothing behind, and nothing to try again
    driver.client = engine = EngineThatFailsAfterCreate(refused_removals=0)
    with pytest.raises(APIError, match="could not start the container"):
        await driver._create_and_start_kept({"image": "fn/echo:1", "labels": {}}, output_wanted=False)
    assert engine.removed == [engine.id] and driver.leftovers == set()
