"""The agent: hot containers per slot key, launched on demand, reused LIFO, reaped when idle.

Re-derived from Fn's agent (slots, launcher, resource tracker, evictor) for one asyncio loop:
a slot queue holds idle containers (a stack: the most recently used is the warmest) and the
calls waiting for one (a FIFO of futures). A freed container is handed straight to the oldest
waiter, so a queue never has both idle containers and waiters. A container is launched only
when waiters outnumber idle plus starting containers, and only with its memory/CPU reserved.

When is a wait worth a launch? A slot with no container, running or starting, launches at once
(nothing else can serve the call). Otherwise waiting for one of the slot's own containers (busy,
or still starting) is renting, and a launch (~300 ms, and on a full runner another function's
warm container) is buying; ski rental says buy once the rent paid reaches the price:

- a single call that has waited as long as a cold start takes gets a launch (a long call holds
  the container);
- a backlog, calls waiting one after another for busy containers, gets a launch each time their
  waits add up to a cold start's time. A 1 ms function under steady load makes every call wait a
  few ms: no single wait justifies a launch, but their sum does, and the added container ends the
  backlog. A backlog ends when a container goes idle with nobody waiting. It grows one container at
  a time, counting afresh once that one is up, and into free room only: its calls are being
  served, and taking room from another function is what churns.

Counting waiting calls instead (as a first version did) launched on every check under a steady
stream, whether the waits were long or not.

On a blocking runner full of busy containers, each one freed goes to the next call of its own slot: a
function whose calls keep coming would hold its room for as long as its load lasts, and a call of
another function wait all that time. So a call that has waited for room for two cold starts takes the
room of the next container of another slot to finish a call (one that served at least one since it
started: functions that take turns each get calls served).

A slot's key comes from the call's sender (Fn's `slot_hash_id`), who may be anyone who reaches the gRPC port; a
call joins a slot only if it would start the very containers the slot has (`fn_core.runner.slots.starts_the_same`),
and otherwise gets a key of the runner's own. So no key lets one fn's call into another's containers, nor its image
into their slot.

Eviction takes the containers idle the longest first. On a non-blocking runner it takes only
containers idle for at least FN_EVICT_MIN_IDLE_MSECS and otherwise NACKs, so that the LB places
the call on another runner. When more functions are busy on one runner than it has room for,
evicting warm containers trades each one for its function's next cold start, which evicts
another in turn: a churn that feeds on itself (the placement bench saw 9 busy functions on an
8-container runner start ~150 containers in 3000 calls). The NACK instead moves the extra function
to a runner with room, where it stays warm. A call this runner has refused for that long (it
keeps coming back: every runner has refused it) may evict any idle container, so a full cluster
delays a new function by about that much instead of starving it. That is timed from its first
refusal here, by this runner's clock: the LB's `created_at` stamp would make a runner whose clock
runs ahead of the LB's take every call for one refused everywhere (churn), and one behind never.

A launch this runner cannot make for a want of its own (`RunnerCannotLaunch`: its engine does not answer, its disk
or its engine's is full, it is out of file descriptors) is a NACK too: another runner may not share the want. Such a
call sent here again (so every runner refused it) waits `CANNOT_LAUNCH_PAUSE_S` before it asks for a container:
an engine takes seconds to come back, a disk to be freed, and the LB would otherwise send it every
FN_RETRY_ALL_DELAY_MSECS. A shortage is logged when it begins and when a launch works again (`LaunchShortage`).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fn_core.config import Config
from fn_core.errors import (
    APIError,
    BadRequest,
    CallResourceTooBig,
    CallTimeout,
    ContainerExited,
    CutAtShutdown,
    FunctionResponseError,
    RunnerCannotLaunch,
    RunnerOutOfResources,
    ServerTooBusy,
)
from fn_core.hook_calls import refusal_logged
from fn_core.models import MAX_CALLS_PER_CONTAINER, START_TIMEOUT_MSECS, Call
from fn_core.runner.dirwatch import DirWatch, DirWatcher
from fn_core.runner.driver import REMOVE_RETRY_S, ContainerDriver, ExitStatus
from fn_core.runner.iofs import SocketDirs
from fn_core.runner.metrics import RetireReason, RunnerMetrics
from fn_core.runner.output import FunctionOutput
from fn_core.runner.resources import MB, Budget, budget_from_config, call_needs
from fn_core.runner.shortage import LaunchShortage, runner_out_of
from fn_core.runner.slots import HotContainer, OnEnd, Relay, SlotQueue, Waiter, idle_until, own_slot_key, starts_the_same
from fn_core.runner.uds import (
    LISTENER_ENV,
    SOCKET_NAME,
    ContainerBroken,
    HotConnection,
    OnData,
    OnStart,
    ResponseLimits,
    wait_ready,
)

log = logging.getLogger(__name__)

EXIT_WAIT_S = 2.0  # how long a container whose connection broke is given to be seen exiting (its exit code)
INITIAL_LAUNCH_ESTIMATE_S = 0.3  # docker create + start + fdk ready, measured on a 2-core machine
EWMA_WEIGHT = 0.2
#: a refused call's first NACK is remembered this long (past Fn's longest placer timeout, 360 s) ...
FORGET_REFUSAL_S = 600.0
#: ... and for this many calls at most (the oldest forgotten first)
MAX_REMEMBERED_REFUSALS = 10_000
#: a call refused here because the runner could not launch (its engine did not answer, its disk was full), sent here
#: again (so every runner refused it), waits this long before it asks for a container again: waiting out an outage
#: costs a NACK a second, not a hundred
CANNOT_LAUNCH_PAUSE_S = 1.0


def _remember(refused: dict[str, float], call_id: str) -> None:
    """Note a call's first NACK here (by the loop's clock); forgotten once no placer could still be retrying it."""
    now = asyncio.get_running_loop().time()
    refused.setdefault(call_id, now)
    while refused and (len(refused) > MAX_REMEMBERED_REFUSALS or refused[next(iter(refused))] < now - FORGET_REFUSAL_S):
        del refused[next(iter(refused))]  # a dict keeps insertion order: the first is the oldest


def moving_average(previous: float | None, sample: float) -> float:
    return sample if previous is None else previous + EWMA_WEIGHT * (sample - previous)


def _consume_outcome(task: asyncio.Task[Any]) -> None:
    """An outcome nobody waits for: an abandoned call's (its container was already settled), or a starting
    container's exit watch that its socket beat."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("%s ended unawaited with %r", task.get_name(), task.exception())


def exit_error(status: ExitStatus) -> ContainerExited:
    """Fn's 502 for a container that exited. Fn reads 137 (a SIGKILL) as the OOM killer's; a driver that knows
    (Docker's OOMKilled) says which, so a `docker kill` or `docker rm -f` is not reported as out of memory."""
    if status.out_of_memory:
        return ContainerExited("container out of memory")
    return ContainerExited(f"container exit code {status.code}")


def launch_error(exc: Exception) -> APIError:
    """What a failed launch tells its waiting call: the driver's or a plugin's `APIError` as it is; the runner out of
    disk space or file descriptors for its own part (making the socket dir) a NACK; anything else a 500."""
    if isinstance(exc, APIError):
        return exc
    return runner_out_of(exc, "start a container") or APIError(f"could not start a container: {exc}", status=500)


def container_env(call: Call) -> dict[str, str]:
    env = dict(call.config)
    env.setdefault("FN_APP_ID", call.app_id)
    env.setdefault("FN_FN_ID", call.fn_id)
    env["FN_MEMORY"] = str(call.memory)  # the limit it gets, also when an override_call plugin changed it
    env.setdefault("FN_TYPE", call.type or "sync")
    env["FN_LISTENER"] = LISTENER_ENV
    env["FN_FORMAT"] = "http-stream"
    return env


class Agent:
    def __init__(
        self, config: Config, driver: ContainerDriver, budget: Budget | None = None, *, function_output: bool = False
    ) -> None:
        """``function_output``: log what containers write (`fn_core.runner.output`; `fn-core serve`)."""
        self.driver = driver
        self.budget = budget or budget_from_config(config.max_total_memory_bytes, config.max_total_cpu_mcpus)
        self.non_blocking = config.enable_nb_resource_tracker
        # blocking mode has no other runner to send a call to: any idle container may be evicted
        self.evict_min_idle_s = config.evict_min_idle_msecs / 1000 if self.non_blocking else 0.0
        self.max_calls = config.max_calls_per_container  # 0: no limit; an fn's annotation may say otherwise
        self.response_limits = ResponseLimits(config.max_response_size, config.max_hdr_response_size)
        self.start_timeout_ms = config.hot_start_timeout_msecs  # an fn's annotation may say otherwise
        self.freeze_s = config.freeze_idle_msecs / 1000 if config.freeze_idle_msecs >= 0 else None
        self.socket_dirs = SocketDirs.from_config(config)
        self.dir_watcher = DirWatcher()  # readiness of the containers starting: one inotify instance for all
        self.queues: dict[bytes, SlotQueue] = {}
        self.closing = False
        self.cutting = False  # the stop's grace is over: running calls are being ended (`cut_running_calls`)
        self._starved: dict[bytes, SlotQueue] = {}  # blocking mode: queues waiting for memory/CPU
        self._refused_at: dict[str, float] = {}  # non-blocking mode: call id -> loop time of its first NACK here
        self._launch_refused: dict[str, float] = {}  # call id -> when it was last NACKed here for a `RunnerCannotLaunch`
        self.shortage = LaunchShortage()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._launching: set[asyncio.Task[Any]] = set()  # cut short at close: a start nobody waits for any more
        # container id -> (its socket dir, the memory and CPU it holds): removals the engine refused, tried again
        self._unremoved: dict[str, tuple[str, int, int]] = {}
        self._retrying: asyncio.Task[None] | None = None
        self.launch_s = INITIAL_LAUNCH_ESTIMATE_S  # moving average of create -> ready
        if function_output and "output" not in inspect.signature(driver.launch).parameters:
            log.warning("driver %s cannot hand over its containers' output: functions' stdout/stderr are not logged",
                        type(driver).__name__)
            function_output = False
        #: bytes of output logged per call (FN_MAX_LOG_SIZE_BYTES), or None: output not logged
        self.output_limit: int | None = config.max_log_size_bytes if function_output else None
        self.metrics = RunnerMetrics()
        #: whether the driver tells when a starting container exits (`ContainerDriver.wait_exit`)
        self.watches_starts = callable(getattr(driver, "wait_exit", None))
        if not self.watches_starts:
            log.info("driver %s cannot tell when a starting container exits: a function that crashes at start fails "
                     "its call at the start timeout", type(driver).__name__)

    # --- public -----------------------------------------------------------------------------
    def containers(self) -> list[HotContainer]:
        return [c for q in self.queues.values() for c in q.containers]

    def container_states(self) -> dict[str, int]:
        """Containers now by state: starting, busy, idle, paused (idle and frozen)."""
        states = {"starting": sum(q.starting for q in self.queues.values()), "busy": 0, "idle": 0, "paused": 0}
        for container in self.containers():
            state = "paused" if container.state == "idle" and container.paused else container.state
            states[state] += 1
        return states

    def calls_waiting(self) -> int:
        return sum(q.waiting() for q in self.queues.values())

    async def run(
        self,
        call: Call,
        key: bytes,
        extensions: dict[str, str],
        body: bytes,
        on_start: OnStart,
        on_data: OnData,
        on_committed: Callable[[], Awaitable[None]] | None = None,
        on_end: OnEnd | None = None,
        on_dropped: Callable[[asyncio.Future[None]], None] | None = None,
    ) -> None:
        """Run one call in a hot container. `ServerTooBusy` raised here means nothing was committed.

        ``on_committed`` is awaited once a container is taken for the call: from then on it runs.
        ``on_end`` is awaited with the exchange's outcome (None, or the exception then raised
        here) in the same turn of the loop as the response's last part, so that a caller's final
        message can leave with it (one send, one wake-up of the LB): after a success before the
        container is released (the answer does not wait for the bookkeeping, and the container
        is idle again before the runner reads its next request, unless the send waits for flow
        control), after an error once the container is settled. It is not called for a caller
        that was cancelled, nor when no container was taken.
        ``on_dropped`` is called instead, for a caller cancelled while its container runs the call (which goes on
        unseen, below), with the exchange: done when the container is done with the call (its outcome consumed).
        """
        container = await self.acquire(call, key, extensions)
        if on_committed is not None:
            try:
                await on_committed()
            except BaseException:
                # the caller is gone (the send failed, or was cancelled waiting for flow control) before the
                # container saw anything of the call: it is as healthy as it was, and serves the next one
                self.release(container)
                raise
        relay = Relay(on_start, on_data, on_end)
        exchange = self._spawn(self._exchange(container, call, body, relay), f"call {call.id}")
        try:
            await asyncio.shield(exchange)
        except asyncio.CancelledError:
            # The caller went away (client gone, LB stream cancelled). Killing the container would
            # cost a cold start; instead it finishes this request unseen (bounded by the call's
            # timeout, after which it is killed as usual) and then serves the next call.
            relay.detach()
            exchange.add_done_callback(_consume_outcome)
            if on_dropped is not None:
                on_dropped(exchange)
            raise

    async def _exchange(self, container: HotContainer, call: Call, body: bytes, relay: Relay) -> None:
        try:
            await self._request(container, call, body, relay)
        except Exception as exc:
            await relay.end(exc)
            raise

    async def _request(self, container: HotContainer, call: Call, body: bytes, relay: Relay) -> None:
        """The request to the container, and what its outcome means for the container."""
        container.calls += 1
        if container.output is not None:
            container.output.begin_call(call.id)
        try:
            async with asyncio.timeout(call.timeout) as container.deadline:
                if self.cutting:
                    container.deadline.reschedule(-1)  # the stop's grace ended as this call took its container
                if container.pause_task or container.paused:
                    await self._thaw(container)
                await container.conn.call(call, body, relay.start, relay.data, self.response_limits)
        except TimeoutError:
            if self.cutting:  # its `finished` says so: a cut stream would leave the LB guessing
                self.retire(container, "shutdown")
                raise CutAtShutdown() from None
            self.retire(container, "call_timeout")  # kill it: a late write must never reach the next call
            raise CallTimeout() from None
        except ContainerBroken as exc:
            self.retire(container, "bad_response" if exc.spoke_bad_http else "exited", remove=False)
            raise await self._why_broken(container, exc, call) from None
        except APIError as exc:
            if getattr(exc, "retire", False):
                self.retire(container, "bad_response")
            else:
                self.release(container)
                if isinstance(exc, RunnerOutOfResources):  # no connection to it: nothing was sent, the call is NACKed
                    self.shortage.refusal(exc)
            raise
        except BaseException:
            self.retire(container, "cancelled")  # cancelled mid-request (shutdown): the connection state is unknown
            raise
        finally:
            container.deadline = None
        try:
            await relay.end(None)  # the caller's answer is complete: it leaves before the bookkeeping below
        finally:
            self.release(container)

    def _new_queue(self, key: bytes, call: Call, extensions: dict[str, str]) -> SlotQueue:
        """A slot's queue, with the fn's own settings where its annotations give them (part of the slot key)."""
        try:
            max_calls = MAX_CALLS_PER_CONTAINER.of(call.annotations, self.max_calls)
            start_timeout_ms = START_TIMEOUT_MSECS.of(call.annotations, self.start_timeout_ms)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return SlotQueue(key=key, call=call, extensions=extensions, max_calls=max_calls,
                         start_timeout_s=start_timeout_ms / 1000)

    async def acquire(self, call: Call, key: bytes, extensions: dict[str, str]) -> HotContainer:
        if self._launch_refused.pop(call.id, None) is not None and not self._idle_in(key):
            await asyncio.sleep(CANNOT_LAUNCH_PAUSE_S)  # it is back: no runner could start it; give the want time to pass
        if self.closing:
            raise ServerTooBusy()
        memory, mcpus = call_needs(call.memory, call.tmpfs_size, call.cpus)
        if not self.budget.possible(memory, mcpus):
            raise CallResourceTooBig()
        while True:
            queue = self.queues.get(key)  # again after a dead container: retiring it may have dropped the queue
            if queue is None:
                queue = self.queues[key] = self._new_queue(key, call, extensions)
            elif not starts_the_same(queue, call, extensions):
                key = own_slot_key(call, extensions, key)
                continue
            else:
                queue.call, queue.extensions = call, extensions  # the same containers: e.g. its newest call id
            if not queue.idle:
                break
            container = self._take(queue.idle.pop())
            if container.conn.open:
                self.metrics.observe_start("idle", 0.0)
                return container
            try:  # its connection closed while idle: still there? (checked before the call is committed)
                alive = await container.conn.reopen()
            except BaseException as exc:
                self.release(container)
                if isinstance(exc, RunnerOutOfResources):
                    self.shortage.refusal(exc)  # the NACK; the container is fine
                raise
            if alive:
                self.metrics.observe_start("idle", 0.0)
                return container
            self._gone_while_idle(container)
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiter = Waiter(loop.create_future(), now, now + self.launch_s, call)
        queue.waiters.append(waiter)
        if queue.containers or queue.starting:
            # its own containers are busy or coming up: waiting for one beats a cold start (module doc)
            loop.call_at(waiter.launch_at, self._check_launch, queue, waiter.launch_at)
        else:
            self._check_launch(queue)
        future = waiter.future
        try:
            container = await future
        except BaseException:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result())  # handed a container just as we were cancelled
            elif waiter in queue.waiters:
                queue.waiters.remove(waiter)
            self._drop_if_unused(queue)  # refused (non-blocking, full) or given up: nothing else may keep it
            raise
        # a container that has served no call was launched (for this call or another waiting one): a cold start
        self.metrics.observe_start("freed" if container.calls else "new", loop.time() - now)
        return container

    def release(self, container: HotContainer) -> None:
        """The call is over and the container healthy: hand it on or park it idle."""
        if self.closing or container.state == "retired":
            self.retire(container, "shutdown")  # a no-op for a container already retired
            return
        if container.queue.max_calls and container.calls >= container.queue.max_calls:
            self.retire(container, "recycled")  # a waiting call gets a new container (`_after_capacity_change`)
            return
        if self._starved and container.calls and self._starving_for(container):
            self.retire(container, "evicted")  # its room goes to the starved call (`_after_capacity_change`)
            return
        self._make_idle(container)

    def _starving_for(self, container: HotContainer) -> bool:
        """Whether a call of another slot has waited for room (blocking mode: the runner is full of busy
        containers) as long as two cold starts take, and would fit in this container's room. Each freed
        container would otherwise go to the next call of its own slot, and a full runner serve its busy
        functions for as long as their load lasts while the starved one waits. Two cold starts: the
        eviction costs one to the starved function and one, later, to the evicted one (ski rental, as
        for launches); and only a container that served a call since it started is given up, so that
        functions that take turns each get calls served."""
        since = asyncio.get_running_loop().time() - 2 * self.launch_s
        free_memory = self.budget.free_memory + container.memory
        free_mcpus = self.budget.free_mcpus + container.mcpus
        for queue in self._starved.values():
            if queue is container.queue or not queue.waiters or queue.waiters[0].since > since:
                continue
            memory, mcpus = call_needs(queue.call.memory, queue.call.tmpfs_size, queue.call.cpus)
            if memory <= free_memory and mcpus <= free_mcpus:
                return True
        return False

    def retire(self, container: HotContainer, reason: RetireReason, *, remove: bool = True) -> None:
        """Take a container out of service now (its resources free at once); removal runs in background.
        ``reason`` is counted in /metrics."""
        if container.state == "retired":
            return
        self.metrics.observe_retired(reason)
        queue = container.queue
        if container.state == "idle":
            queue.idle.remove(container)
        container.state = "retired"
        for timer in (container.idle_timer, container.freeze_timer):
            if timer:
                timer.cancel()
        queue.containers.discard(container)
        self.budget.release(container.memory, container.mcpus)
        self._spawn(self._dispose(container, remove), "remove container")
        self._after_capacity_change(queue)

    def begin_shutdown(self) -> None:
        """New calls and waiting calls get the NACK; running calls finish."""
        self.closing = True
        for queue in self.queues.values():
            while queue.waiters:
                waiter = queue.waiters.popleft()
                if waiter.waiting():
                    waiter.future.set_exception(ServerTooBusy())
        self._starved.clear()

    def cut_running_calls(self) -> None:
        """End the calls still running (a stop's grace is over): each ends with `CutAtShutdown` in its `finished`,
        its container retired; never a NACK, as each was committed."""
        self.cutting = True
        for container in self.containers():
            if container.deadline is not None:
                container.deadline.reschedule(-1)  # in the past: expires at the loop's next turn

    async def close(self) -> None:
        """Remove every container of ours (after `begin_shutdown` and the in-flight calls)."""
        self.begin_shutdown()
        for task in self._launching:  # nobody waits for them now (their calls got the NACK): not the start timeout
            task.cancel()
        if self._retrying is not None:
            self._retrying.cancel()
            for container_id, (iofs_dir, _, _) in list(self._unremoved.items()):  # a last try (the driver sweeps after us)
                self._spawn(self._remove_quietly(container_id, iofs_dir), "remove container")
        while True:
            for container in self.containers():
                self.retire(container, "shutdown")
            if not self._tasks:
                break
            tasks = list(self._tasks)
            await asyncio.gather(*tasks, return_exceptions=True)
            # out of the set now, not by their done callbacks: from Python 3.12 a gather of tasks that are all done
            # returns without yielding to the loop, so those callbacks would never run and this loop never end
            self._tasks.difference_update(tasks)
        self.dir_watcher.close()

    # --- launching --------------------------------------------------------------------------
    def _check_launch(self, queue: SlotQueue, due: float = 0.0) -> None:
        """Launch what the queue's waiting calls justify (module doc). ``due``: the launch time a timer
        was set for (timers may fire a little early by the loop's clock: uvloop's resolution is 1 ms)."""
        if queue.containers or queue.starting:
            waiting = queue.overdue(max(asyncio.get_running_loop().time(), due))
        else:
            waiting = queue.waiting()  # nothing else can serve them
        need = waiting - len(queue.idle) - queue.starting
        memory, mcpus = call_needs(queue.call.memory, queue.call.tmpfs_size, queue.call.cpus)
        while need > 0 and not self.closing:
            if not self.budget.try_reserve(memory, mcpus):
                if not (self._evict_for(queue, memory, mcpus) and self.budget.try_reserve(memory, mcpus)):
                    if self.non_blocking:  # the newest waiter is refused; older ones keep their turn
                        refused = self._fail_one_waiter(queue, ServerTooBusy(), newest=True)
                        if refused is not None:
                            self._remember_refusal(refused.call.id)
                        need -= 1
                        continue
                    self._starved[queue.key] = queue
                    return
            queue.starting += 1
            need -= 1
            self._start_launch(queue, memory, mcpus)

    def _grow(self, queue: SlotQueue) -> None:
        """One more container for a backlog, into free room only: its calls are being served, so it
        neither evicts another function's container nor refuses a call (module doc)."""
        if queue.starting or self.closing:
            return  # one at a time: the backlog is judged again once that one serves
        memory, mcpus = call_needs(queue.call.memory, queue.call.tmpfs_size, queue.call.cpus)
        if self.budget.try_reserve(memory, mcpus):
            queue.starting += 1
            self._start_launch(queue, memory, mcpus)

    def _start_launch(self, queue: SlotQueue, memory: int, mcpus: int) -> None:
        launch = self._launch(queue, queue.call, dict(queue.extensions), memory, mcpus)
        task = self._spawn(launch, f"launch {queue.call.fn_id}")
        self._launching.add(task)
        task.add_done_callback(self._launching.discard)

    def _evict_for(self, queue: SlotQueue, memory: int, mcpus: int) -> bool:
        """Retire idle containers of other slots, idle the longest first, only if that frees enough."""
        min_idle_s = self.evict_min_idle_s
        if min_idle_s and self._refused_for_s(queue) >= min_idle_s:
            min_idle_s = 0.0  # refused everywhere for that long: room now, at some warm container's cost
        cold_since = asyncio.get_running_loop().time() - min_idle_s
        candidates = sorted(
            (c for other in self.queues.values() if other is not queue for c in other.idle
             if c.idle_since <= cold_since and (c.memory or c.mcpus)),
            key=lambda c: c.idle_since,
        )
        chosen: list[HotContainer] = []
        free_mem, free_cpu = self.budget.free_memory, self.budget.free_mcpus
        for container in candidates:
            if free_mem >= memory and free_cpu >= mcpus:
                break
            chosen.append(container)
            free_mem += container.memory
            free_cpu += container.mcpus
        if free_mem < memory or free_cpu < mcpus or not chosen:
            return False
        for container in chosen:
            log.debug("evicting idle container %s for slot %s", container.id[:12], queue.key.hex()[:12])
            self.retire(container, "evicted")
        return True

    async def _launch(self, queue: SlotQueue, call: Call, extensions: dict[str, str], memory: int, mcpus: int) -> None:
        iofs_dir = ""
        container_id = ""
        output: FunctionOutput | None = None
        watch: DirWatch | None = None
        try:
            iofs_dir = self.socket_dirs.make()
            watch = self.dir_watcher.watch(iofs_dir)  # before the container starts (as Fn): its socket cannot come unseen
            began = time.monotonic()
            if self.output_limit is None:
                container_id = await self.driver.launch(call, extensions, iofs_dir, container_env(call))
            else:
                output = FunctionOutput(call, self.output_limit)
                container_id = await self.driver.launch(call, extensions, iofs_dir, container_env(call), output=output)
            self.metrics.observe_driver("launch", time.monotonic() - began)
            await self._until_ready(container_id, iofs_dir, queue.start_timeout_s, watch)
            launch_s = time.monotonic() - began
            self.launch_s = moving_average(self.launch_s, launch_s)
            self.metrics.observe_launch(True, launch_s)
            self.shortage.launched()
        except BaseException as exc:
            queue.starting -= 1
            self.budget.release(memory, mcpus)
            self._spawn(self._remove_quietly(container_id, iofs_dir, memory, mcpus), "remove container")
            if not isinstance(exc, Exception):
                raise  # cancelled (shutdown): nobody to tell
            error = launch_error(exc)
            if isinstance(error, RunnerCannotLaunch):
                self.metrics.observe_launch_refused(error.reason)
                if isinstance(error, RunnerOutOfResources):
                    self.shortage.refusal(error)
            else:
                self.metrics.observe_launch(False, 0.0)
            # a plugin's refusal (503) is logged by hook_calls, once per plugin and message; an engine outage by the
            # driver; a shortage by `LaunchShortage`
            if not refusal_logged(error) and not isinstance(error, RunnerCannotLaunch):
                # the function's fault (its image, its exit) is its call's line; the platform's is the operator's
                level = logging.INFO if error.user_error else logging.WARNING
                log.log(level, "container for call %s failed to start: %s", call.id, error)
            refused = self._fail_one_waiter(queue, error)
            if refused is not None and isinstance(error, RunnerCannotLaunch):
                _remember(self._launch_refused, refused.call.id)
            if error.user_error and not queue.containers and not queue.starting:
                # the function's own fault (its image missing, its crash at start): each call still waiting would
                # launch and fail the same way, each evicting another function's warm container on a full runner
                while self._fail_one_waiter(queue, error) is not None:
                    pass
            self._after_capacity_change(queue)
            return
        finally:
            if watch is not None:
                watch.close()
        queue.starting -= 1
        queue.backlog_wait_s, queue.backlog_from = 0.0, asyncio.get_running_loop().time()  # earlier waits were for this one
        container = HotContainer(
            id=container_id, queue=queue, iofs_dir=iofs_dir, conn=HotConnection(os.path.join(iofs_dir, SOCKET_NAME)),
            memory=memory, mcpus=mcpus, idle_timeout_s=call.idle_timeout, output=output,
        )
        queue.containers.add(container)
        self.release(container)

    async def _until_ready(self, container_id: str, iofs_dir: str, timeout_s: float, watch: DirWatch) -> None:
        """Wait for the container's socket; one that exits first fails its launch at once with how it ended (Fn
        watches a starting container), not with a 504 at the start timeout. A cold start's path only."""
        if not self.watches_starts:
            await wait_ready(iofs_dir, timeout_s, watch)
            return
        loop = asyncio.get_running_loop()
        ready = loop.create_task(wait_ready(iofs_dir, timeout_s, watch), name=f"ready {container_id[:12]}")
        exited = loop.create_task(self.driver.wait_exit(container_id), name=f"exit watch {container_id[:12]}")
        exited.add_done_callback(_consume_outcome)  # an outcome nobody asks for (the socket came first) is no warning
        try:
            done, _ = await asyncio.wait((ready, exited), return_when=asyncio.FIRST_COMPLETED)
            if exited in done and not (ready in done and ready.exception() is None):
                status = self._start_exit(exited, container_id)
                if status is not None:
                    raise exit_error(status)
            await ready  # the socket (ready, bad, or timed out) decides; the driver could not tell an exit
        finally:
            exited.cancel()  # the driver stops watching
            ready.cancel()

    def _start_exit(self, exited: asyncio.Task[ExitStatus | None], container_id: str) -> ExitStatus | None:
        """How a starting container ended, counted; None when the driver could not tell (its error is logged)."""
        error = exited.exception()
        if error is not None:
            log.warning("could not learn whether starting container %s exited: %r", container_id[:12], error)
            return None
        status = exited.result()
        self._count_exit(status)
        return status

    def _fail_one_waiter(self, queue: SlotQueue, error: BaseException, *, newest: bool = False) -> Waiter | None:
        while queue.waiters:
            waiter = queue.waiters.pop() if newest else queue.waiters.popleft()
            if waiter.waiting():
                waiter.future.set_exception(error)
                return waiter
        return None

    def _remember_refusal(self, call_id: str) -> None:
        """The call got a NACK here: from its first one on, its coming back counts as refused everywhere
        (module doc)."""
        _remember(self._refused_at, call_id)

    def _idle_in(self, key: bytes) -> bool:
        queue = self.queues.get(key)
        return queue is not None and bool(queue.idle)

    def _refused_for_s(self, queue: SlotQueue) -> float:
        """How long ago this runner first refused the queue's oldest waiting call (0: never), in seconds."""
        for waiter in queue.waiters:
            if waiter.waiting():
                first = self._refused_at.get(waiter.call.id)
                return 0.0 if first is None else asyncio.get_running_loop().time() - first
        return 0.0

    def _after_capacity_change(self, queue: SlotQueue) -> None:
        """Resources were freed or a container went away: waiting calls may need a launch now."""
        if self.closing:
            return
        self._wake_starved()  # first: they have waited for room, this queue's calls maybe not
        if queue.waiters:
            self._check_launch(queue)
        else:
            self._drop_if_unused(queue)

    def _wake_starved(self) -> None:
        """The calls that waited for memory or CPU may have it now."""
        if self.closing:
            return
        starved, self._starved = self._starved, {}
        for other in starved.values():
            self._check_launch(other)

    def _drop_if_unused(self, queue: SlotQueue) -> None:
        """Forget a slot with no call waiting, no container and none starting: a runner sees fns come and go for
        months, and each slot holds its last call whole (a refused fn's too)."""
        if queue.waiters or queue.containers or queue.starting or self.queues.get(queue.key) is not queue:
            return
        del self.queues[queue.key]
        if self._starved.get(queue.key) is queue:
            del self._starved[queue.key]

    # --- idle life --------------------------------------------------------------------------
    # A container's idle timers are checks that re-arm themselves from `idle_since` when they fire early
    # (the container was used meanwhile): a warm call touches no timer, where cancelling and setting two
    # per call cost ~3 us of the runner's hot path; a busy container's check fires at most once a period.
    def _take(self, container: HotContainer) -> HotContainer:
        container.state = "busy"
        return container

    def _make_idle(self, container: HotContainer) -> None:
        queue = container.queue
        loop = asyncio.get_running_loop()
        while queue.waiters:
            waiter = queue.waiters.popleft()
            if waiter.waiting():
                container.state = "busy"
                waiter.future.set_result(container)
                now = loop.time()
                queue.backlog_wait_s += now - max(waiter.since, queue.backlog_from)
                if queue.backlog_wait_s >= self.launch_s:
                    queue.backlog_wait_s = 0.0
                    self._grow(queue)
                return
        queue.backlog_wait_s = 0.0  # idle with nobody waiting: the backlog is over
        container.state = "idle"
        now = container.idle_since = loop.time()
        queue.idle.append(container)
        if container.idle_timer is None:  # else the armed check finds the new idle_since and waits on
            due = now + container.idle_timeout_s
            container.idle_timer = loop.call_at(due, self._idle_check, container, due)
        if self.freeze_s is not None and container.freeze_timer is None:
            due = now + self.freeze_s
            container.freeze_timer = loop.call_at(due, self._freeze_check, container, due)
        if self._starved:  # an idle container is evictable: calls starved for resources may fit now
            self._after_capacity_change(queue)

    def _idle_check(self, container: HotContainer, fired_for: float) -> None:
        container.idle_timer = None
        if container.state != "idle":
            return  # busy: armed again when it next goes idle; retired: nothing to do
        if (due := idle_until(container, container.idle_timeout_s, fired_for)) is not None:
            container.idle_timer = asyncio.get_running_loop().call_at(due, self._idle_check, container, due)
            return
        log.debug("container %s idle for %ss: removing", container.id[:12], container.idle_timeout_s)
        self.retire(container, "idle_timeout")

    def _freeze_check(self, container: HotContainer, fired_for: float) -> None:
        container.freeze_timer = None
        if container.state != "idle" or container.pause_task is not None or self.freeze_s is None:
            return
        if (due := idle_until(container, self.freeze_s, fired_for)) is not None:
            container.freeze_timer = asyncio.get_running_loop().call_at(due, self._freeze_check, container, due)
            return
        container.pause_task = self._spawn(self._pause(container), "pause container")

    async def _pause(self, container: HotContainer) -> None:
        began = time.monotonic()
        await self.driver.pause(container.id)
        self.metrics.observe_driver("pause", time.monotonic() - began)
        container.paused = True

    async def _thaw(self, container: HotContainer) -> None:
        task, container.pause_task = container.pause_task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if container.paused:
            began = time.monotonic()
            await self.driver.unpause(container.id)
            self.metrics.observe_driver("unpause", time.monotonic() - began)
            container.paused = False

    # --- clean-up ---------------------------------------------------------------------------
    def _gone_while_idle(self, container: HotContainer) -> None:
        """An idle container that died (OOM, killed, its process exited): the call takes another one
        instead of failing with a 502, as Fn's first call after idle did (fn#1470)."""
        self.retire(container, "exited", remove=False)
        self._spawn(self._report_gone(container), "container gone")

    async def _report_gone(self, container: HotContainer) -> None:
        try:
            status = await self._exit_status(container.id)
        finally:  # removed whatever the driver could tell (its room held while the engine refuses: it may still run)
            self._spawn(self._dispose(container, True), "remove container")
        how = "is gone" if status is None else "is gone, how unknown" if isinstance(status, Exception) else (
            "was killed for memory" if status.out_of_memory else f"exited with code {status.code}"
        )
        log.warning("hot container %s of fn %s %s while idle: retired, calls go to another", container.id[:12],
                    container.queue.call.fn_id, how)

    async def _why_broken(self, container: HotContainer, cause: ContainerBroken, call: Call) -> APIError:
        # a connection lost may be the process ending: give the engine a moment to see the exit; one that spoke
        # bad HTTP is alive (asked once, no wait)
        try:
            status = await self._exit_status(container.id, wait_s=0.0 if cause.spoke_bad_http else EXIT_WAIT_S)
        finally:  # removed whatever the driver could tell (or if this call is cancelled meanwhile)
            self._spawn(self._dispose(container, True), "remove container")
        if isinstance(status, Exception):
            return ContainerExited("container exit code unknown")
        if status is None:  # Fn's ErrFunctionResponse; what went wrong is for the operator, not the client
            log.warning("hot container %s of fn %s answered call %s badly: %s", container.id[:12],
                        call.fn_id, call.id, cause)
            return FunctionResponseError()
        return exit_error(status)

    async def _exit_status(self, container_id: str, wait_s: float = EXIT_WAIT_S) -> ExitStatus | None | Exception:
        """How a dead container ended (counted), None if it still runs, or the driver's error: a container whose end
        cannot be read is still removed, and its call still gets Fn's 502, never a 500 for the engine's trouble."""
        try:
            status = await self.driver.exit_status(container_id, wait_s=wait_s)
        except Exception as exc:
            log.warning("could not learn how container %s ended: %r", container_id[:12], exc)
            return exc
        self._count_exit(status)
        return status

    def _count_exit(self, status: ExitStatus | None) -> None:
        if status is not None:
            self.metrics.observe_exit(status.code, status.out_of_memory)

    async def _dispose(self, container: HotContainer, remove: bool) -> None:
        await container.conn.close()
        if container.pause_task is not None:
            await asyncio.gather(container.pause_task, return_exceptions=True)
        if remove:
            await self._remove_quietly(container.id, container.iofs_dir, container.memory, container.mcpus)

    async def _remove_quietly(self, container_id: str, iofs_dir: str, memory: int = 0, mcpus: int = 0) -> None:
        """Remove the container and its socket dir; one the engine would not remove is tried again (`_retry_removals`)
        until the runner closes. ``memory`` and ``mcpus``: what the container had reserved (freed when it was
        retired); a container the engine would not remove may still run, so they are taken again until it is gone."""
        try:
            if container_id:
                began = time.monotonic()
                await self.driver.remove(container_id)
                self.metrics.observe_driver("remove", time.monotonic() - began)
                unremoved = self._unremoved.pop(container_id, None)
                if unremoved is not None:
                    log.info("removed container %s at last", container_id[:12])
                    self.budget.release(unremoved[1], unremoved[2])
                    self._wake_starved()
        except Exception as exc:
            if self.closing:
                log.warning("could not remove container %s: %r", container_id[:12], exc)
            else:
                if container_id not in self._unremoved:
                    log.warning("could not remove container %s (%r): trying again, its %d MB held meanwhile",
                                container_id[:12], exc, memory // MB)
                    self.budget.hold(memory, mcpus)
                    self._unremoved[container_id] = (iofs_dir, memory, mcpus)
                if self._retrying is None or self._retrying.done():
                    self._retrying = self._spawn(self._retry_removals(), "retry removals")
                return  # its socket dir goes with it: the container may still be using it
        if iofs_dir:
            self.socket_dirs.remove(iofs_dir)

    async def _retry_removals(self) -> None:
        """Try the refused removals again, less often the longer the engine refuses, until none is left."""
        for delay in itertools.chain(REMOVE_RETRY_S, itertools.repeat(REMOVE_RETRY_S[-1])):
            await asyncio.sleep(delay)
            for container_id, (iofs_dir, _, _) in list(self._unremoved.items()):
                await self._remove_quietly(container_id, iofs_dir)  # a refusal keeps it in `_unremoved`, said once
            if not self._unremoved:
                return

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)  # named: /debug/stacks shows what each is
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
