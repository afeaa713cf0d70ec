"""The Docker driver's view of engine outages (`EngineOutage`) with a fake clock and fake pings; the real engine's in
tests/system/test_engine_outage_system.py."""

from __future__ import annotations

import asyncio
import logging

import docker.errors
import pytest
import requests.exceptions

from fn_core.errors import ContainerEngineUnavailable, ServerTooBusy
from fn_plugins_builtin import engine_outage
from fn_plugins_builtin.engine_outage import RETRY_S, EngineOutage, EngineSilent, engine_unreachable

GONE = requests.exceptions.ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Pings:
    """The engine's answers to pings: ``answers`` set, each ping ends at once (an error when False); None, each
    waits for `settle`."""

    def __init__(self, answers: bool | None = True) -> None:
        self.answers = answers
        self.started: list[asyncio.Future[None]] = []

    def __call__(self) -> asyncio.Future[None]:
        ping: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.started.append(ping)
        if self.answers is not None:
            self.settle(self.answers)
        return ping

    def settle(self, answers: bool) -> None:
        for ping in self.started:
            if not ping.done():
                ping.set_result(None) if answers else ping.set_exception(requests.exceptions.ReadTimeout("timed out"))


def test_an_unreachable_engine_is_told_from_one_that_answered_with_an_error():
    assert engine_unreachable(GONE)
    assert engine_unreachable(requests.exceptions.ReadTimeout("read timed out"))
    assert engine_unreachable(EngineSilent("no answer to a ping"))
    assert not engine_unreachable(docker.errors.APIError("500 Server Error: no such network"))
    assert not engine_unreachable(docker.errors.ImageNotFound("no such image"))


async def test_while_the_engine_is_down_one_launch_a_second_asks_it_and_the_others_are_nacked_at_once(caplog):
    clock, pings = Clock(), Pings()
    outage = EngineOutage(pings, clock)
    await outage.admit()  # the engine was never found down: every launch asks it, with no ping
    await outage.admit()
    assert pings.started == []
    caplog.set_level(logging.INFO, "fn_plugins_builtin.engine_outage")

    error = outage.failed(GONE)
    assert isinstance(error, ContainerEngineUnavailable) and isinstance(error, ServerTooBusy)  # the NACK
    assert (error.status, error.message) == (503, "the runner's container engine does not answer")
    outage.failed(GONE)  # a second launch that was already asking: the same outage
    with pytest.raises(ContainerEngineUnavailable):
        await outage.admit()  # refused without asking the engine
    clock.now += RETRY_S
    await outage.admit()  # this one tries the engine again (it answers a ping first) ...
    assert len(pings.started) == 1
    with pytest.raises(ContainerEngineUnavailable):
        await outage.admit()  # ... and no other meanwhile
    outage.failed(GONE)
    clock.now += RETRY_S
    await outage.admit()
    outage.abandoned()  # cancelled before the engine said anything: the next may try
    await outage.admit()
    outage.answered()
    await outage.admit()  # up: every launch asks it again
    await outage.admit()

    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2  # the outage once, its end once: not a line per call
    assert said[0].startswith("the Docker engine does not answer (('Connection aborted.'")
    assert said[1] == ("the Docker engine answers again after 2.0 s; cold starts go on (2 launches or removals were refused "
                        "meanwhile)")


async def test_while_the_engine_is_down_a_launch_it_would_not_answer_a_ping_is_refused_without_a_create():
    clock, pings = Clock(), Pings(answers=False)
    outage = EngineOutage(pings, clock)
    outage.failed(GONE)
    clock.now += RETRY_S
    with pytest.raises(ContainerEngineUnavailable):
        await outage.admit()  # pinged: no answer, so no create thread waits on a hung engine
    assert len(pings.started) == 1
    with pytest.raises(ContainerEngineUnavailable):
        await outage.admit()  # and the next try is a second later again
    assert len(pings.started) == 1


async def test_a_launch_the_engine_answered_with_an_error_ends_the_outage_too():
    clock = Clock()
    outage = EngineOutage(Pings(), clock)
    outage.failed(GONE)
    clock.now += RETRY_S
    await outage.admit()
    outage.answered()  # e.g. the engine refused the container: it answers
    assert outage.down_since is None
    await outage.admit()


async def test_a_slow_create_is_waited_for_while_the_engine_answers_pings(monkeypatch):
    monkeypatch.setattr(engine_outage, "ENGINE_SLOW_S", 0.01)
    pings = Pings(answers=True)
    outage = EngineOutage(pings)
    loop = asyncio.get_running_loop()
    create: asyncio.Future[str] = loop.create_future()
    loop.call_later(0.1, create.set_result, "container id")
    assert await outage.answer(create) == "container id"  # busy, not hung: about ten pings, all answered
    assert len(pings.started) >= 2


async def test_a_create_a_hung_engine_leaves_unanswered_ends_when_a_ping_is_not_answered_either(monkeypatch):
    monkeypatch.setattr(engine_outage, "ENGINE_SLOW_S", 0.01)
    pings = Pings(answers=None)
    outage = EngineOutage(pings)
    create: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    waits = [asyncio.ensure_future(outage.answer(create)) for _ in range(3)]  # three launches under way
    await asyncio.sleep(0.05)
    assert len(pings.started) == 1  # one ping for all of them
    pings.settle(answers=False)
    for wait in waits:
        with pytest.raises(EngineSilent):
            await wait
    assert not create.done()  # its thread goes on alone: the driver removes what it makes
