"""What the Docker driver knows of its engine's outages: while the engine does not answer, cold starts are NACKed.

A launch that cannot reach the engine (its socket gone or refusing, as while dockerd restarts) fails its call with
`ContainerEngineUnavailable`, the NACK: nothing ran, so the LB tries another runner. So does one the engine leaves
unanswered (hung): a create and start still unanswered after `ENGINE_SLOW_S` make the driver ping the engine, and a
ping unanswered within its own short timeout ends the wait (the create's thread goes on; what it makes is removed).
A busy engine answers the ping, and its launches are waited for. Removals go the same way, so a runner stopping
while its engine hangs is done in seconds (leaving its containers to the engine), not minutes.

Until a launch reaches the engine again, the others are refused at once, without asking it: one launch at a time
tries, at most every `RETRY_S`, and pings the engine first, so an outage costs neither a thread per call nor a
wait on a hung engine per call. Hot containers do not need the engine: those still running (a stopped dockerd
stops them, unless its live-restore is on) serve their calls on. The outage is logged when it is found and when it
ends, not per call. A call that comes back to the runner after such a NACK (every runner refused it) waits a
second there before it asks again (`fn_core.runner.agent.CANNOT_LAUNCH_PAUSE_S`): with every engine down, a
waiting call costs a NACK a second, not one every FN_RETRY_ALL_DELAY_MSECS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from fn_core.errors import ContainerEngineUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: while the engine is down, a launch tries it at most this often (the others are refused without asking)
RETRY_S = 1.0
#: a create and start unanswered this long make the driver ask whether the engine answers at all
ENGINE_SLOW_S = 5.0
#: how long a ping of the engine may take (the driver's ping client's timeout)
PING_TIMEOUT_S = 2.0


class EngineSilent(Exception):
    """The engine did not answer a ping while a launch or a removal waited for it: it is hung."""


def engine_unreachable(exc: BaseException) -> bool:
    """Whether ``exc``, raised by the docker SDK, means the engine was not reached (or did not answer in time):
    not that it answered with an error, which is about the container and is the call's to report."""
    import requests.exceptions

    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, EngineSilent))


class EngineOutage:
    """The engine's state as the launches (and removals) found it: `admit` before one asks it, `answer` for what it
    asked, then `answered` or `failed`.

    ``ping`` starts a ping of the engine in a thread of its own (not the loop's executor, whose threads a hung
    engine may all hold) and returns its future: an error when the engine did not answer within `PING_TIMEOUT_S`.
    """

    def __init__(self, ping: Callable[[], asyncio.Future[None]], clock: Callable[[], float] = time.monotonic) -> None:
        self._ping = ping
        self._clock = clock
        self.down_since: float | None = None  # when a launch first found the engine unreachable; None while it answers
        self._next_try = 0.0
        self._trying = False  # a launch is finding out whether the engine answers again
        self._refused = 0  # launches and removals refused without asking the engine, this outage
        self._pinging: asyncio.Future[None] | None = None  # the one ping under way

    async def admit(self) -> None:
        """Before a launch asks the engine. Raises `ContainerEngineUnavailable` while the engine is down and another
        launch is trying it, or tried it less than `RETRY_S` ago, or when it does not answer a ping now. Otherwise
        the launch must then call `answered`, `failed`, or `abandoned` (it ended before the engine said either)."""
        if self.down_since is None:
            return
        if self._trying or self._clock() < self._next_try:
            self._refused += 1
            raise ContainerEngineUnavailable()
        self._trying = True
        try:
            await self._pinged()  # a hung engine would hold the launch's thread for the SDK's 60 s
        except asyncio.CancelledError:
            self._trying = False
            raise
        except Exception as exc:
            raise self.failed(exc) from None

    async def answer(self, asked: asyncio.Future[T]) -> T:
        """What the engine answered (``asked``: the future of the thread that asked it, which this shields);
        `EngineSilent` when it is slower than `ENGINE_SLOW_S` and does not answer a ping either. The thread then goes
        on alone."""
        while True:
            done, _ = await asyncio.wait({asked}, timeout=ENGINE_SLOW_S)
            if done:
                return asked.result()
            try:
                await self._pinged()
            except Exception as exc:
                raise EngineSilent(f"no answer in {ENGINE_SLOW_S:g} s, nor to a ping in {PING_TIMEOUT_S:g} s "
                                   f"({type(exc).__name__})") from None

    async def _pinged(self) -> None:
        """One ping at a time, whoever asks: raises when the engine did not answer it."""
        if self._pinging is None or self._pinging.done():
            self._pinging = self._ping()
        await asyncio.shield(self._pinging)

    def answered(self) -> None:
        """A launch or removal reached the engine (whether or not it did what was asked)."""
        self._trying = False
        if self.down_since is None:
            return
        log.warning("the Docker engine answers again after %.1f s; cold starts go on (%d launches or removals were "
                    "refused meanwhile)",
                    self._clock() - self.down_since, self._refused)
        self.down_since, self._refused = None, 0

    def failed(self, exc: BaseException) -> ContainerEngineUnavailable:
        """A launch or removal could not reach the engine: the error to raise (for a launch, its call's NACK)."""
        self._trying = False
        now = self._clock()
        self._next_try = now + RETRY_S
        if self.down_since is None:
            self.down_since = now
            log.warning("the Docker engine does not answer (%s): cold starts on this runner are refused (a NACK: the "
                        "LB tries another runner) until it does, tried again every %g s; hot containers still running keep serving",
                        exc, RETRY_S)
        return ContainerEngineUnavailable()

    def abandoned(self) -> None:
        """An admitted launch was cancelled before the engine said anything."""
        self._trying = False
