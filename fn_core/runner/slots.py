"""A runner's slots: the queue of hot containers and waiting calls per slot key, and the relay of a response.

`fn_core.runner.agent` keeps a `SlotQueue` per slot key (the containers one fn version with one set of extensions
starts) and decides when to launch, hand over, idle and retire them; what it hands around is defined here.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Awaitable, Callable

import attrs

from fn_core.errors import BadRequest
from fn_core.models import Call, slot_key, slot_values
from fn_core.runner.output import FunctionOutput
from fn_core.runner.uds import SOCKET_NAME, HotConnection, OnData, OnStart

OnEnd = Callable[[Exception | None], Awaitable[None]]

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class HotContainer:
    id: str
    queue: SlotQueue
    iofs_dir: str
    conn: HotConnection
    memory: int
    mcpus: int
    idle_timeout_s: float
    output: FunctionOutput | None = None  # where its stdout/stderr go (`fn-core serve`), else nowhere
    state: str = "busy"  # busy | idle | retired
    calls: int = 0  # calls sent to it
    idle_since: float = 0.0  # loop time it last became idle
    idle_timer: asyncio.TimerHandle | None = None
    freeze_timer: asyncio.TimerHandle | None = None
    pause_task: asyncio.Task[None] | None = None
    paused: bool = False
    deadline: asyncio.Timeout | None = None  # the running call's timeout, which a runner's stop may bring forward

    @property
    def socket_path(self) -> str:
        return os.path.join(self.iofs_dir, SOCKET_NAME)


@attrs.define(eq=False, slots=True)
class Waiter:
    """A call waiting for a container of its slot."""

    future: asyncio.Future[HotContainer]
    since: float  # loop time it began waiting
    launch_at: float  # loop time from which this wait alone justifies a launch
    call: Call

    def waiting(self) -> bool:
        return not self.future.done()


@attrs.define(eq=False)
class SlotQueue:
    key: bytes
    call: Call  # the latest call: what a new container is started from
    extensions: dict[str, str]
    max_calls: int = 0  # its containers are retired after this many calls (0: no limit)
    start_timeout_s: float = 5.0  # start -> socket ready, for each of its containers
    idle: list[HotContainer] = attrs.field(factory=list)  # LIFO
    waiters: collections.deque[Waiter] = attrs.field(factory=collections.deque)
    starting: int = 0
    containers: set[HotContainer] = attrs.field(factory=set)
    backlog_wait_s: float = 0.0  # waits served in the current backlog since its last launch (module doc)
    backlog_from: float = 0.0  # loop time its newest container came up: earlier waits were for that one

    def waiting(self) -> int:
        return sum(1 for w in self.waiters if w.waiting())

    def overdue(self, now: float) -> int:
        """Waiting calls that have waited as long as a launch takes (the FIFO's front)."""
        count = 0
        for w in self.waiters:
            if w.launch_at > now:
                break
            count += w.waiting()
        return count


class Relay:
    """Passes the container's response to the caller until the caller is gone, then drops it.

    The caller is gone when its task was cancelled (`detach`) or when writing to it fails: a
    cancelled Engage stream refuses writes before the servicer's task sees the cancellation. The
    rest of the response is still read from the container, which then serves the next call.
    """

    __slots__ = ("_on_start", "_on_data", "_on_end")

    def __init__(self, on_start: OnStart, on_data: OnData, on_end: OnEnd | None = None) -> None:
        self._on_start: OnStart | None = on_start
        self._on_data: OnData | None = on_data
        self._on_end: OnEnd | None = on_end

    def detach(self) -> None:
        self._on_start = self._on_data = self._on_end = None

    async def end(self, error: Exception | None) -> None:
        on_end = self._on_end
        if on_end is not None:
            self._on_end = None
            try:
                await on_end(error)
            except Exception as exc:
                self._caller_lost(exc)

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        if self._on_start is not None:
            try:
                await self._on_start(status, headers)
            except Exception as exc:
                self._caller_lost(exc)

    async def data(self, chunk: bytes) -> None:
        if self._on_data is not None:
            try:
                await self._on_data(chunk)
            except Exception as exc:
                self._caller_lost(exc)

    def _caller_lost(self, exc: Exception) -> None:
        log.debug("caller gone mid-response (%s): the rest is dropped", type(exc).__name__)
        self.detach()


def starts_the_same(queue: SlotQueue, call: Call, extensions: dict[str, str]) -> bool:
    """Whether ``call`` would start the containers of ``queue``: what the slot key stands for. The key is the LB's
    (any client of the gRPC port's), and the runner does not hash every call to check it (~1 us here, ~15 to hash)."""
    return slot_values(queue.call) == slot_values(call) and queue.extensions == extensions


def own_slot_key(call: Call, extensions: dict[str, str], sent: bytes) -> bytes:
    """The runner's own key for a call whose key (``sent``) names the containers of another call: never theirs.
    33 bytes (a sent key is 32), so no client can name it; `BadRequest` if even it is taken (a SHA-256 collision)."""
    own = b"\0" + slot_key(call, extensions)
    if sent == own:
        raise BadRequest("the call's slot key names containers started for another call")
    return own


def idle_until(container: HotContainer, idle_s: float, fired_for: float) -> float | None:
    """When the container will have been idle ``idle_s``, if that is still to come (it was used after its
    check was armed); None once it has. ``fired_for``: the time the check was set for (uvloop may fire a
    timer up to 1 ms early by the loop's clock)."""
    due = container.idle_since + idle_s
    return due if max(asyncio.get_running_loop().time(), fired_for) < due else None
