"""What the agent needs from a container driver (the selected `Driver` record's factory builds one).

The agent owns everything that is the same for every driver: slot queues, the socket dir, readiness,
the HTTP round trip over the unix socket. A driver only turns a call into a running container and
takes it away again. Every method is a coroutine; a driver built on a blocking SDK runs it in a
thread, never on the event loop. None of these run per call on the warm path.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from fn_core.models import Call

#: the label value of our containers and socket dirs when FN_CONTAINER_LABEL_TAG is unset
UNSET_LABEL_TAG = "fn-core"
#: pauses (s) between tries of a container removal the engine refused, the last repeated until it is gone: the agent's
#: of the containers it retired, a driver's of those its failed launches made
REMOVE_RETRY_S = (1.0, 2.0, 5.0, 10.0)


def label_tag(config: Any) -> str:
    """What our containers' ``fn-agent-classifier`` label and our socket dirs' owner files say: FN_CONTAINER_LABEL_TAG,
    or `UNSET_LABEL_TAG`. Only a tag that was set sweeps, at start-up, what an earlier runner with it left (Fn's
    rule): runners without one may share a host, and must not remove each other's containers."""
    return str(config.container_label_tag) or UNSET_LABEL_TAG


def sweeps_leftovers(config: Any) -> bool:
    """Whether a starting runner removes the containers and socket dirs of earlier runners with its tag (`label_tag`)."""
    return bool(config.container_label_tag)


class OutputSink(Protocol):
    """Where a driver hands a container's stdout and stderr (`fn_core.runner.output.FunctionOutput`)."""

    def write(self, stream: str, data: bytes) -> None:
        """Bytes the container wrote to ``stream`` ("stdout" or "stderr"); called on the event loop."""

    def close(self) -> None:
        """The container's output ended (it stopped, or was removed)."""


@attrs.frozen
class ExitStatus:
    """How a container ended: its exit code and whether the kernel's OOM killer ended it (None: the driver cannot
    tell, and an exit code of 137, a SIGKILL, is then read as the OOM killer's, as Fn reads it)."""

    code: int
    oom_killed: bool | None = None

    @property
    def out_of_memory(self) -> bool:
        return bool(self.oom_killed) or (self.oom_killed is None and self.code == 137)


class ContainerDriver(Protocol):
    async def start(self) -> None:
        """Get ready (connect to the engine) and remove containers leaked by an earlier crash of ours."""

    async def launch(
        self, call: Call, extensions: dict[str, str], iofs_dir: str, env: dict[str, str], output: OutputSink | None = None
    ) -> str:
        """Create and start a hot container for ``call``; return its id.

        ``iofs_dir`` is the fresh host dir to mount at /tmp/iofs; ``env`` the full environment.
        ``output``, when given, gets everything the container writes to stdout and stderr from its
        first byte on, until `remove` (`fn-core serve` logs it at debug). A driver that cannot do
        that leaves the parameter out: the agent then says so once at start-up and passes none.
        Raises `fn_core.errors.APIError` for outcomes the caller should see (bad image, 503 ...);
        `fn_core.errors.ContainerEngineUnavailable` when the engine cannot be reached: the call is NACKed (nothing
        ran; the LB tries another runner), and the agent logs nothing per call: say once that the engine is down.
        `fn_core.errors.RunnerOutOfResources` when the engine's disk is full: NACKed too; the agent logs the
        shortage once, and its end at the next launch that works.
        """

    async def exit_status(self, container_id: str, wait_s: float) -> ExitStatus | None:
        """Wait up to ``wait_s`` for the container to stop and say how; None if it still runs, or if the engine
        cannot say (the container is gone, or the engine errs): what a broken call then reports is the agent's."""

    async def wait_exit(self, container_id: str) -> ExitStatus | None:
        """Return once the (just launched) container has stopped, with how (`exit_status`); None when the driver
        can no longer tell whether it runs.

        The agent races this against the container's readiness and cancels it once the socket is ready: the
        driver may stop watching then. A function that crashes at start (a bad import, bad config) so fails its
        call at once with its exit code, as Fn's, not at the start timeout. Optional: the agent waits for the
        socket alone with a driver that has no ``wait_exit``. Must not hold a thread while it waits: many
        containers may be starting at once.
        """

    async def remove(self, container_id: str) -> None:
        """Kill and remove the container (force); never raises for an already gone container."""

    async def pause(self, container_id: str) -> None: ...

    async def unpause(self, container_id: str) -> None: ...

    async def close(self) -> None:
        """Release the engine connection (containers are removed by the agent before this).

        Also called when `start` failed part-way: release whatever it had opened.
        """
