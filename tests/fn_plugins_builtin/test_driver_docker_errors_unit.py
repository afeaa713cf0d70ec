"""How the Docker driver reads the engine's refusals: a full disk is the runner's want (a NACK, another runner's engine
may have room), anything else the call's error. Without an engine (the system tests run it against a real one)."""

from __future__ import annotations

import docker.errors
import pytest

from fn_core.config import load_config
from fn_core.errors import APIError, RunnerOutOfResources
from fn_plugins_builtin import driver_docker
from fn_plugins_builtin.driver_docker import DockerDriver

DISK_FULL = "mkdir /var/lib/docker/overlay2/4f1e-init: no space left on device"


@pytest.mark.parametrize("reason", [DISK_FULL, "write /var/lib/docker/containers/x/config: disk quota exceeded"])
def test_an_engine_whose_disk_is_full_refuses_for_the_runner_not_the_call(reason):
    error = driver_docker._engine_refusal("create the container", reason)
    assert isinstance(error, RunnerOutOfResources) and error.status == 503
    assert error.message == f"the Docker engine's disk is full: it could not create the container: {reason}"


def test_other_refusals_of_the_engine_are_a_500_that_says_what():
    error = driver_docker._engine_refusal("start the container", "OCI runtime create failed")
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
