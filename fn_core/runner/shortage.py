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

#: what opening the runner's end of a connection fails with when the runner (or the host) is out of descriptors or
#: socket buffers: the runner's want, not the peer's (a container, the Docker engine) fault
OUT_OF_DESCRIPTORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def out_of_descriptors(exc: BaseException, depth: int = 6) -> bool:
    """Whether ``exc`` is, or wraps (as its cause, its context, or an argument: the docker SDK's requests and urllib3
    errors carry the OSError so), an `OUT_OF_DESCRIPTORS` OSError."""
    if isinstance(exc, OSError) and exc.errno in OUT_OF_DESCRIPTORS:
        return True
    if depth == 0:
        return False
    inner = [exc.__cause__, exc.__context__, *(arg for arg in exc.args if isinstance(arg, BaseException))]
    return any(out_of_descriptors(e, depth - 1) for e in inner if e is not None)


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
