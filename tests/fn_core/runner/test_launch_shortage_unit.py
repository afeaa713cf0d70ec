"""A runner out of something it needs to start containers (disk space, file descriptors): its launches are refused
with the NACK, counted, and logged when the shortage begins and when it ends. Without a driver (fast): the agent's
part is in test_agent_failures_unit, the whole with real disks, Docker, LB and runners in the system tests."""

from __future__ import annotations

import errno
import logging

import pytest

from fn_core.errors import APIError, RunnerOutOfResources, ServerTooBusy
from fn_core.runner.agent import launch_error
from fn_core.runner.shortage import LaunchShortage


@pytest.mark.parametrize(("code", "want"), [(errno.ENOSPC, "disk space"), (errno.EDQUOT, "disk space"),
                                            (errno.EMFILE, "file descriptors"), (errno.ENFILE, "file descriptors")])
def test_the_runner_out_of_disk_or_descriptors_for_a_socket_dir_is_a_nack(code, want):
    error = launch_error(OSError(code, "No space left on device", "/var/lib/fn/iofs/1a2b3c4d.owner"))
    assert isinstance(error, RunnerOutOfResources) and isinstance(error, ServerTooBusy)
    assert error.status == 503 and not error.user_error
    assert error.message.startswith(f"the runner is out of {want}: it could not start a container")


def test_other_launch_failures_keep_their_error():
    refused = APIError("could not create the container: bad option", status=500)
    assert launch_error(refused) is refused
    denied = launch_error(PermissionError(errno.EACCES, "Permission denied"))
    assert (type(denied), denied.status, denied.message) == (APIError, 500, "could not start a container: [Errno 13] Permission denied")


def test_a_shortage_is_said_when_it_begins_and_when_a_launch_works_again(caplog):
    now = [100.0]
    shortage = LaunchShortage(clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="fn_core.runner.shortage")
    for _ in range(3):
        shortage.refusal(RunnerOutOfResources("the runner is out of disk space"))
    now[0] = 104.0
    shortage.launched()
    shortage.launched()  # no shortage now: nothing to say
    assert [r.getMessage() for r in caplog.records] == [
        "the runner is out of disk space: calls that need it are refused (NACK: the LB places them on other runners) "
        "until a launch works again",
        "a launch works again after 4.0 s out of resources (3 refused meanwhile)",
    ]
