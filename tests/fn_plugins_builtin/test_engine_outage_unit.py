"""The Docker driver's view of engine outages (`EngineOutage`) with a fake clock; the real engine's in
tests/system/test_engine_outage_system.py."""

from __future__ import annotations

import logging

import docker.errors
import pytest
import requests.exceptions

from fn_core.errors import ContainerEngineUnavailable, ServerTooBusy
from fn_plugins_builtin.engine_outage import RETRY_S, EngineOutage, engine_unreachable

GONE = requests.exceptions.ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_unreachable_engine_is_told_from_one_that_answered_with_an_error():
    assert engine_unreachable(GONE)
    assert engine_unreachable(requests.exceptions.ReadTimeout("read timed out"))
    assert not engine_unreachable(docker.errors.APIError("500 Server Error: no such network"))
    assert not engine_unreachable(docker.errors.ImageNotFound("no such image"))


def test_while_the_engine_is_down_one_launch_a_second_asks_it_and_the_others_are_nacked_at_once(caplog):
    clock = Clock()
    outage = EngineOutage(clock)
    outage.admit()  # the engine was never found down: every launch asks it
    outage.admit()
    caplog.set_level(logging.INFO, "fn_plugins_builtin.engine_outage")

    error = outage.failed(GONE)
    assert isinstance(error, ContainerEngineUnavailable) and isinstance(error, ServerTooBusy)  # the NACK
    assert (error.status, error.message) == (503, "the runner's container engine does not answer")
    outage.failed(GONE)  # a second launch that was already asking: the same outage
    with pytest.raises(ContainerEngineUnavailable):
        outage.admit()  # refused without asking the engine
    clock.now += RETRY_S
    outage.admit()  # this one tries the engine again ...
    with pytest.raises(ContainerEngineUnavailable):
        outage.admit()  # ... and no other meanwhile
    outage.failed(GONE)
    clock.now += RETRY_S
    outage.admit()
    outage.abandoned()  # cancelled before the engine said anything: the next may try
    outage.admit()
    outage.answered()
    outage.admit()  # up: every launch asks it again
    outage.admit()

    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2  # the outage once, its end once: not a line per call
    assert said[0].startswith("the Docker engine does not answer (('Connection aborted.'")
    assert said[1] == "the Docker engine answers again after 2.0 s; cold starts go on (2 were refused meanwhile)"


def test_a_launch_the_engine_answered_with_an_error_ends_the_outage_too():
    clock = Clock()
    outage = EngineOutage(clock)
    outage.failed(GONE)
    clock.now += RETRY_S
    outage.admit()
    outage.answered()  # e.g. the engine refused the container: it answers
    assert outage.down_since is None
    outage.admit()
