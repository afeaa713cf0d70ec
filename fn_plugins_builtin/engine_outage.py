"""What the Docker driver knows of its engine's outages: while the engine does not answer, cold starts are NACKed.

A launch that cannot reach the engine (its socket gone or refusing, as while dockerd restarts; or no answer within
the SDK's timeout) fails its call with `ContainerEngineUnavailable`, the NACK: nothing ran, so the LB tries another
runner. Until a launch reaches the engine again, the others are refused at once, without asking it: one launch
at a time tries, at most every `RETRY_S`, so an outage costs neither a thread per call nor a wait on a hung engine
per call. Hot containers do not need the engine: those still running (a stopped dockerd stops them, unless its
live-restore is on) serve their calls on. The outage is logged when it is found and when it ends, not per call.
A call that comes back to the runner after such a NACK (every runner refused it) waits a second there before it
asks again (`fn_core.runner.agent.ENGINE_REFUSED_PAUSE_S`): with every engine down, a waiting call costs a NACK a
second, not one every FN_RETRY_ALL_DELAY_MSECS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fn_core.errors import ContainerEngineUnavailable

log = logging.getLogger(__name__)

#: while the engine is down, a launch tries it at most this often (the others are refused without asking)
RETRY_S = 1.0


def engine_unreachable(exc: BaseException) -> bool:
    """Whether ``exc``, raised by the docker SDK, means the engine was not reached (or did not answer in time):
    not that it answered with an error, which is about the container and is the call's to report."""
    import requests.exceptions

    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))


class EngineOutage:
    """The engine's state as the launches found it: `admit` before a launch asks it, then `answered` or `failed`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.down_since: float | None = None  # when a launch first found the engine unreachable; None while it answers
        self._next_try = 0.0
        self._trying = False  # a launch is finding out whether the engine answers again
        self._refused = 0  # launches refused without asking the engine, this outage

    def admit(self) -> None:
        """Before a launch asks the engine. Raises `ContainerEngineUnavailable` while the engine is down and another
        launch is trying it, or tried it less than `RETRY_S` ago. Otherwise the launch must then call `answered`,
        `failed`, or `abandoned` (it ended before the engine said either)."""
        if self.down_since is None:
            return
        if self._trying or self._clock() < self._next_try:
            self._refused += 1
            raise ContainerEngineUnavailable()
        self._trying = True

    def answered(self) -> None:
        """A launch reached the engine (whether or not its container started)."""
        self._trying = False
        if self.down_since is None:
            return
        log.warning("the Docker engine answers again after %.1f s; cold starts go on (%d were refused meanwhile)",
                    self._clock() - self.down_since, self._refused)
        self.down_since, self._refused = None, 0

    def failed(self, exc: BaseException) -> ContainerEngineUnavailable:
        """A launch could not reach the engine: the error its call gets (a NACK)."""
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
        """An admitted launch ended otherwise (cancelled, or an error before it asked the engine)."""
        self._trying = False
