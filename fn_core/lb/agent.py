"""The LB agent: overrides, slot key, the placement loop, and the end-of-call listeners.

Placement follows Fn's placer loop with the ordering delegated to the selected placer plugin:
each pass asks `place_call` for an order, tries the runners in it, skips the ones that refuse
or cannot be reached, and after a full pass waits ``retry_all_delay_ms`` and asks again, until
a runner takes the call, the client goes away (the handler task is cancelled),
``placer_timeout_s`` passes (503 + Retry-After) or the LB's stop ends placing (`LBAgent.stop_placing`: 503
"Server is shutting down", just before the stop cuts the handlers). A committed call is never re-sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import attrs

from fn_core.errors import APIError, CutAtShutdown, ServerTooBusy
from fn_core.hook_calls import failed_plugin, failure_log, plugin_names, run_failing_call, run_isolated
from fn_core.lb.call import CALL_FIELD_NAMES, CallTemplate, per_call_state, wrong_extensions, wrong_field
from fn_core.lb.metrics import LBMetrics
from fn_core.lb.pool import RunnerSet
from fn_core.lb.runner_client import AnswerSink, ExecResult
from fn_core.models import PER_CALL_FIELDS, Call, slot_key
from fn_core.records import CallOutcome, RunnerRef
from fn_core.wire import CallOffer

log = logging.getLogger(__name__)


@attrs.define
class Placement:
    """Where and how a call ended up: the runner's result, or the error that stopped placement."""

    result: ExecResult | None = None
    error: APIError | None = None
    runner: str = ""
    attempts: int = 0


class ShuttingDown(ServerTooBusy):
    """The LB's stop ended a call no runner had: never run, so safe to send again (the 503's Retry-After)."""

    message = "Server is shutting down"


class LBCutAtShutdown(CutAtShutdown):
    """The LB's stop ended its grace with the call on a runner (committed, as the runner's own `CutAtShutdown`): 500,
    as a 503 would have the client send again a call that ran, in part or whole."""

    message = "call cut short: the LB is shutting down"


def cut_by_stop(placement: Placement) -> APIError:
    """The error of a call the LB's stop cut: the 503 only while no runner had it (``runner`` is set from the try on)."""
    return LBCutAtShutdown() if placement.runner else ShuttingDown()


class LBAgent:
    def __init__(self, config, pm, pool: RunnerSet, metrics: LBMetrics | None = None) -> None:
        self.pm = pm
        self.pool = pool
        self.metrics = metrics or LBMetrics()
        self.placer_timeout_s = config.placer_timeout_s
        self.detached_placer_timeout_s = config.detached_placer_timeout_s
        self.execution_headroom_s = config.execution_headroom_msecs / 1000
        self.retry_delay_s = config.retry_all_delay_ms / 1000
        self.closing = False
        self.placing_ends_at = math.inf  # loop time: set by the stop (`stop_placing`)
        self.background: set[asyncio.Task] = set()

    def prepare(self, call: Call, template: CallTemplate | None = None) -> CallOffer:
        """Run the `override_call` hooks, then take the slot key (after them: they may change the call, and the
        extensions they set are part of it).

        A call made from ``template`` that no such hook changed is the template's call: its slot key
        and most of its JSON are the template's, worked out once per fn version.

        What the hooks changed is checked against the types of `Call`'s fields (extensions: str -> str), and only
        that: a wrong one fails the call with 500 naming the plugin, here, not with a traceback deep in the core.
        """
        hook = self.pm.hook.override_call
        if template is not None and not hook.get_hookimpls():
            return CallOffer(call, template.slot_key, shared_json=template.shared_json)
        extensions: dict[str, str] = {}
        before = per_call_state(call)
        run_failing_call(hook, call=call, extensions=extensions)
        if template is not None and template.unchanged(call):  # the shared fields equal the template's
            changed = per_call_state(call) != before
            if changed or extensions:
                self._check_override(hook, call, extensions, PER_CALL_FIELDS if changed else ())
            return CallOffer(call, template.slot_key_with(extensions), extensions, shared_json=template.shared_json)
        self._check_override(hook, call, extensions, CALL_FIELD_NAMES)
        return CallOffer(call, slot_key(call, extensions), extensions)

    def _check_override(self, hook, call: Call, extensions: dict[str, str], names: tuple[str, ...]) -> None:
        """`APIError` 500 naming the `override_call` plugins when one put a wrong type into ``call`` or ``extensions``
        (which one did cannot be told without running them one by one: all that implement it are named)."""
        problem = wrong_extensions(extensions) or wrong_field(call, names)
        if problem is None:
            return
        blamed = plugin_names(hook)
        failure_log(hook).failed(
            " or ".join(blamed), hook.name, TypeError(problem),
            "override_call of plugin %s put a wrong type into call %s: %s; the call failed with 500",
            " or ".join(repr(name) for name in blamed), call.id, problem, traceback=False,
            what=problem.partition(" is ")[0],  # the field: a wrong type in another one is another mistake
        )
        raise APIError(f"internal server error (plugin {' or '.join(blamed)} failed)", status=500)

    async def place(
        self,
        offer: CallOffer,
        body: bytes,
        on_start: Callable[[ExecResult], None] | None = None,
        timeout_s: float | None = None,
        sink: AnswerSink | None = None,
        placement: Placement | None = None,
    ) -> Placement:
        """Place the call (and run it): ``timeout_s`` bounds the search for a runner (default: the placer timeout).
        A big answer goes to ``sink`` as it comes (`fn_core.lb.runner_client.ReplyReader`).

        The outcome is filled into ``placement`` (a new one if None) and returned. It is filled as the search
        goes (the runner being tried, the attempts so far), so a caller whose task is cancelled mid-call (the
        client went away) still knows where the call was."""
        placement = Placement() if placement is None else placement
        if self.closing:
            placement.error = ShuttingDown()
            return placement
        call = offer.call
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.placer_timeout_s if timeout_s is None else timeout_s)
        while True:
            try:
                order = self.pm.hook.place_call(call=call, runners=self.pool.refs)
                # a RunnerRef the placer made itself has no channel (handle): only the pool's may be tried
                if not isinstance(order, (list, tuple)) or not all(
                    isinstance(ref, RunnerRef) and ref.handle is not None for ref in order
                ):
                    raise TypeError(f"place_call must return a list of the RunnerRefs it was given, got {order!r:.300}")
            except Exception as exc:
                placement.error = self._placer_failed(exc)
                placement.runner = ""
                return placement
            for ref in order:
                placement.attempts += 1
                placement.runner = ref.address
                result = await ref.handle.try_exec(offer, body, on_start, sink, min(deadline, self.placing_ends_at))
                if result is not None:
                    placement.result = result
                    return placement
                placement.runner = ""  # not placed there
                self.metrics.placement_retries += 1
                if loop.time() >= min(deadline, self.placing_ends_at):
                    break
            now = loop.time()
            if now >= self.placing_ends_at:
                # the stop cuts the handlers next: a call never placed gets its 503 now, rather than a closed connection
                placement.error = ShuttingDown()
                return placement
            remaining = deadline - now
            if remaining <= 0:
                self.metrics.placer_timeouts += 1
                placement.error = ServerTooBusy()
                return placement
            await asyncio.sleep(min(self.retry_delay_s, remaining, self.placing_ends_at - now))

    def _placer_failed(self, exc: Exception) -> APIError:
        """The error of a call whose `place_call` failed, naming the plugin whose code raised (a wrapper's, or the
        selected placer's); an answer that is no list of the pool's refs is the placer's."""
        hook = self.pm.hook.place_call
        name = self.pm.placer.name if self.pm.placer else "?"
        raised_by = failed_plugin(hook, exc)
        if raised_by not in ("?", f"placer:{name}"):  # a wrapper, not the placer
            failure_log(hook).failed(raised_by, hook.name, exc, "plugin %r failed in place_call", raised_by)
            return APIError(f"internal server error (plugin {raised_by} failed)")
        owner = self.pm.placers[name][1] if name in self.pm.placers else "?"
        failure_log(hook).failed(owner, hook.name, exc, "placer %r of plugin %r failed in place_call", name, owner)
        return APIError(f"internal server error (placer {name} failed)")

    def finished(self, call: Call, placement: Placement, status: int, started: float, request_id: str = "") -> None:
        """Metrics and the `call_finished` listeners (each isolated: a listener never changes the result)."""
        duration = time.monotonic() - started
        self.metrics.observe_call(status, duration)
        result = placement.result
        error = placement.error or (result.error if result else None)
        outcome = CallOutcome(
            status=status,
            error=error.message if error else "",
            runner=placement.runner,
            attempts=placement.attempts,
            duration_s=duration,
            request_id=request_id,
            wait_s=result.finished.schedulerDuration / 1e9 if result and result.finished else None,
        )
        run_isolated(self.pm.hook.call_finished, call=call, outcome=outcome)

    def keep(self, task: asyncio.Task) -> None:
        """Detached calls go on after the client got its 202; shutdown waits for them."""
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def stop_placing(self, at: float) -> None:
        """The LB stops: no new call is placed, and the calls still waiting for a runner at loop time ``at`` end with
        503 "Server is shutting down" (never placed: the client may send them again)."""
        self.closing = True
        self.placing_ends_at = at

    async def close(self, grace_s: float = 30.0) -> None:
        self.closing = True
        if self.background:
            await asyncio.wait(set(self.background), timeout=grace_s)
        # detached calls still running at the grace's end are cut here, each ending as the stop's cut (`cut_by_stop`),
        # before their connections close under them (which would read as their runners lost)
        cut = [task for task in self.background if not task.done()]
        for task in cut:
            task.cancel()
        if cut:
            await asyncio.wait(cut)
        await self.pool.close()
