"""What a runner says when it is out of something it needs to start containers or to reach them (disk space, file
descriptors): once when calls begin to be refused for it, and once when a launch works again, not a line per call.

The refusals are NACKs (`fn_core.errors.RunnerOutOfResources`): the LB places the calls on other runners, whose
disks are not this one's, so the operator's only news of a full disk would otherwise be a log line per call.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable

from fn_core.errors import RunnerOutOfResources

log = logging.getLogger(__name__)

#: what the runner's own system calls fail with when the runner (or its host) is out of something, and what: its
#: want, neither the call's nor its peer's (a container, the Docker engine), and another runner may not share it
EXHAUSTED = {errno.ENOSPC: "disk space", errno.EDQUOT: "disk space", errno.EMFILE: "file descriptors",
             errno.ENFILE: "file descriptors", errno.ENOBUFS: "socket buffers", errno.ENOMEM: "memory"}


def runner_out_of(exc: BaseException, doing: str) -> RunnerOutOfResources | None:
    """The NACK for ``exc`` when it is, or wraps, an `EXHAUSTED` OSError (the runner could not do ``doing``); else
    None."""
    found = _exhausted(exc, depth=6)
    if found is None:
        return None
    return RunnerOutOfResources(f"the runner is out of {EXHAUSTED[found]}: it could not {doing} ({exc})")


def _exhausted(exc: BaseException, depth: int) -> int | None:
    """The `EXHAUSTED` errno of ``exc`` or of what it wraps: its cause, its context, an argument (the docker SDK's
    requests and urllib3 errors carry the OSError so)."""
    if isinstance(exc, OSError) and exc.errno in EXHAUSTED:
        return exc.errno
    if depth == 0:
        return None
    inner = [exc.__cause__, exc.__context__, *(arg for arg in exc.args if isinstance(arg, BaseException))]
    return next((code for e in inner if e is not None and (code := _exhausted(e, depth - 1)) is not None), None)


class LaunchShortage:
    """One runner's running account of a shortage: since when, and how many calls it refused for it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.since: float | None = None
        self.refused = 0

    def refusal(self, error: RunnerOutOfResources) -> None:
        """A launch (or a connection to a container) failed for ``error``; the first of a shortage is logged with what it
        said."""
        if self.since is None:
            self.since = self.clock()
            log.warning("%s: calls that need it are refused (NACK: the LB places them on other runners) until a launch "
                        "works again", error.message)
        self.refused += 1

    def launched(self) -> None:
        """A container was started: a shortage, if there was one, is over."""
        if self.since is not None:
            log.warning("a launch works again after %.1f s out of resources (%d refused meanwhile)",
                        self.clock() - self.since, self.refused)
            self.since, self.refused = None, 0
