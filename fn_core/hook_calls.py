"""Calling hooks so that a failure names its plugin, and listeners stay isolated.

Per-call hooks: the normal path is one ordinary pluggy call (so hook monitoring, e.g. the test
kit's `HookRecorder`, sees it). pluggy stops at the first exception; we find whose impl raised
from the traceback, log it with the plugin's name and, for listener hooks, run the impls that had
not run yet one by one. The status and metrics hooks, whose impls each add their own part, call
every impl by itself (`run_status_hooks`, `plugin_metrics`).

How often a failure is logged (`FailureLog`, one per plugin manager):

* per-call hooks (``override_call``, ``place_call``, ``call_finished``, ``runner_call_finished``,
  ``modify_container_options``) and ``metric_families``: the first failure of a (plugin, hook,
  kind of failure) is logged with its traceback; after it, one short line at most every
  `REPEAT_INTERVAL_S` seconds says how many more there were and the latest error. A count, not
  "said again when it works": a per-call hook may fail for some calls and work for others (one
  app's bad annotation), and a "works again" line would then come, with a new traceback, at every
  turn. A (plugin, hook, kind) that failed no more for a whole interval gets its traceback logged
  again at its next failure. The kind is the exception type and the line that raised it (or what the
  caller names, as the field a plugin set to a wrong type): a plugin's second mistake of the same
  type is a mistake of its own, logged in full, not a count under the first.
* ``runner_status`` runs on every poll, for every runner alike: `run_status_hooks` logs when a
  plugin starts to fail and once more when it works again (its ``failing`` set).
* an `APIError` a plugin raises in a runner-side hook (`modify_container_options`) is a refusal, not
  a fault: it is logged once per plugin and message, and again only after that hook has run clean
  (a 503 refusal makes the LB try the call on other runners, so one refusal comes back for every
  try until the placer timeout).
* a family `metric_families` answers that the text format cannot carry is left out and logged once
  per plugin, family and kind of problem.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import attrs

from fn_core.errors import APIError
from fn_core.metrics import Family, exposition, family_problem, is_core_family
from fn_core.records import RunnerStatus

log = logging.getLogger(__name__)

#: at most one line per (plugin, hook, kind of failure) in this many seconds after the traceback of its first failure
REPEAT_INTERVAL_S = 60.0
#: the hooks whose `APIError` is a refusal logged once (`run_failing_call`); a client's rejection in `override_call` is not
REFUSAL_HOOKS = frozenset(("modify_container_options",))


@attrs.define
class _Streak:
    """The failures of one (plugin, hook, kind of failure) since its traceback was logged."""

    reported: float  # when the traceback or the last short line was logged
    last: float  # the latest failure
    count: int = 0  # failures since then, not yet said
    latest: BaseException | None = None  # the newest of those


class FailureLog:
    """What a plugin manager has logged of its plugins' failures (see the module's doc for the policy).

    :param interval_s: the least time between two lines of one (plugin, hook, kind of failure).
    :param clock: monotonic seconds (tests give their own).
    """

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._streaks: dict[tuple[str, str, str, str], _Streak] = {}
        #: (plugin, hook, status, message) of refusals logged, until the hook runs clean
        self.refusing: set[tuple[str, str, int, str]] = set()
        self._said: set[tuple[str, ...]] = set()

    def failed(
        self, plugin: str, hook: str, exc: BaseException, first: str, *args: Any, traceback: bool = True, what: str = ""
    ) -> None:
        """Log ``first % args`` (with ``exc``'s traceback unless ``traceback`` is False) the first time; after it,
        count, and log a short line with the count at most once per interval. Failures are told apart by ``exc``'s
        type and ``what`` (default: the line that raised ``exc``)."""
        key = (plugin, hook, type(exc).__qualname__, what or _raised_at(exc))
        now = self.clock()
        streak = self._streaks.get(key)
        if streak is not None and now - streak.last >= self.interval_s:  # quiet for a whole interval: news again
            if streak.count:  # the failures since its last line, said before the new traceback
                self._say_count(plugin, hook, key[2], streak, streak.latest, streak.last)
            streak = None
        if streak is None:
            log.error(first, *args, exc_info=exc if traceback else None)
            self._streaks[key] = _Streak(reported=now, last=now)
            return
        streak.count += 1
        streak.last = now
        streak.latest = exc
        if now - streak.reported >= self.interval_s:
            self._say_count(plugin, hook, key[2], streak, exc, now)
            streak.count = 0
            streak.reported = now

    def _say_count(self, plugin: str, hook: str, kind: str, streak: _Streak, exc: BaseException | None, now: float) -> None:
        log.error(
            "plugin %r failed in %s %d more time%s in the last %.0f s, the latest: %s: %.300s (its traceback was "
            "logged at the first; one line per %g s)",
            plugin, hook, streak.count, "" if streak.count == 1 else "s", now - streak.reported, kind, exc, self.interval_s,
        )

    def once(self, *key: str) -> bool:
        """True the first time ``key`` is given: for what is said once and never again."""
        if key in self._said:
            return False
        self._said.add(key)
        return True


def _raised_at(exc: BaseException) -> str:
    """``file:line`` of the frame that raised ``exc`` ('' when it was never raised)."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


#: for hooks of a plain pluggy manager (not `fn_core.plugins.FnPluginManager`)
_PROCESS_FAILURES = FailureLog()


def _manager(hook: Any) -> Any:
    """The plugin manager whose hook ``hook`` is (a HookCaller)."""
    return getattr(getattr(hook, "_hookexec", None), "__self__", None)


def failure_log(hook: Any) -> FailureLog:
    """The `FailureLog` of the plugin manager whose hook ``hook`` is (a HookCaller)."""
    failures = getattr(_manager(hook), "failures", None)
    return failures if isinstance(failures, FailureLog) else _PROCESS_FAILURES


def implemented(hooks: Any, name: str) -> Any:
    """The hook ``name`` of ``hooks`` (a manager's ``pm.hook``, or None) when a plugin implements it, else None: an
    optional step (a check, a listener) is then left off its path, rather than run with nothing to call."""
    hook = getattr(hooks, name, None)
    return hook if hook is not None and hook.get_hookimpls() else None


def call_order(hook: Any) -> list[Any]:
    """The impls of ``hook`` (wrappers left out) in the order pluggy calls them: the last registered first."""
    return [impl for impl in reversed(hook.get_hookimpls()) if not (impl.hookwrapper or impl.wrapper)]


def _failed_impl(hook: Any, exc: BaseException) -> Any:
    """The impl whose code raised ``exc``: the innermost impl frame of its traceback (a wrapper that an exception
    only passed through, on its way out of the impl it wraps, is an outer frame)."""
    codes: dict[Any, list[Any]] = {}
    for impl in hook.get_hookimpls():
        codes.setdefault(getattr(impl.function, "__code__", None), []).append(impl)
    found = None
    tb = exc.__traceback__
    while tb is not None:
        impls = codes.get(tb.tb_frame.f_code)
        if impls:
            found = impls[0] if len(impls) == 1 else _impl_of_frame(impls, tb.tb_frame)
        tb = tb.tb_next
    return found


def _impl_of_frame(impls: list[Any], frame: Any) -> Any:
    """Of several plugins that are instances of one class (one code), the one whose method ``frame`` runs."""
    code = frame.f_code
    receiver = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None
    for impl in impls:
        if getattr(impl.function, "__self__", None) is receiver:
            return impl
    return impls[0]


def _plugin_name(impl: Any) -> str:
    return impl.plugin_name if impl is not None else "?"


def failed_plugin(hook: Any, exc: BaseException) -> str:
    """The name of the plugin whose impl of ``hook`` raised ``exc`` ("?" when none of them did)."""
    return _plugin_name(_failed_impl(hook, exc))


def plugin_names(hook: Any) -> list[str]:
    """The plugins implementing ``hook`` (wrappers included), in call order."""
    return [impl.plugin_name for impl in reversed(hook.get_hookimpls())]


def run_isolated(hook: Any, **kwargs: Any) -> None:
    """Every impl runs; one that raises is logged with its plugin name and the rest go on."""
    try:
        hook(**kwargs)
        return
    except Exception as exc:
        failed = _failed_impl(hook, exc)
        _listener_failed(hook, _plugin_name(failed), exc)
    order = call_order(hook)
    rest = order[order.index(failed) + 1 :] if failed in order else []
    for impl in rest:
        try:
            impl.function(*[kwargs[name] for name in impl.argnames])
        except Exception as exc:
            _listener_failed(hook, impl.plugin_name, exc)


def _listener_failed(hook: Any, plugin: str, exc: BaseException) -> None:
    failure_log(hook).failed(plugin, hook.name, exc, "plugin %r failed in %s; ignored", plugin, hook.name)


def run_failing_call(hook: Any, **kwargs: Any) -> None:
    """A hook whose failure fails the call or request (`override_call`, `modify_container_options`, `check_request`,
    `validate_app`, `validate_fn`, `validate_trigger`, `validate_delete`): an `APIError` as it is; anything else, or an
    `APIError` that is no error answer (a status outside 400..599, a message that is not a str), is logged with the
    plugin's name and is a 500 naming the plugin, not its text.

    An `APIError` of a `REFUSAL_HOOKS` hook is logged here, with its plugin's name, once per plugin and message
    until the hook runs clean (`refusal_logged` tells the caller so)."""
    try:
        hook(**kwargs)
    except APIError as err:
        if not (400 <= err.status <= 599 and isinstance(err.message, str)):  # no error answer: a 200 would say "done"
            name = failed_plugin(hook, err)
            failure_log(hook).failed(name, hook.name, err, "plugin %r failed in %s: an APIError must have a status in "
                                     "400..599 and a str message, got %r", name, hook.name, err, traceback=False)
            raise APIError(f"internal server error (plugin {name} failed)", status=500) from err
        if hook.name in REFUSAL_HOOKS:
            _refused(hook, err)
        raise
    except Exception as exc:
        name = failed_plugin(hook, exc)
        failure_log(hook).failed(name, hook.name, exc, "plugin %r failed in %s", name, hook.name)
        raise APIError(f"internal server error (plugin {name} failed)", status=500) from exc
    else:
        if hook.name in REFUSAL_HOOKS:
            _ran_clean(hook)


#: set on an APIError `run_failing_call` has logged (or, repeated, chose not to): the plugin's name
_REFUSED_BY = "_fn_core_refused_by"


def _refused(hook: Any, err: APIError) -> None:
    name = failed_plugin(hook, err)
    vars(err)[_REFUSED_BY] = name
    failures = failure_log(hook)
    key = (name, hook.name, err.status, err.message)
    if key in failures.refusing:
        return
    failures.refusing.add(key)
    if err.status == 503:
        meaning = "a refusal: the LB tries the call on another runner, and the client gets 503 after the placer timeout if all refuse"
    else:
        meaning = f"the call fails with {err.status}"
    log.warning(
        "plugin %r refuses calls in %s: %d %r (%s); said once until the plugin stops refusing",
        name, hook.name, err.status, err.message, meaning,
    )


def _ran_clean(hook: Any) -> None:
    failures = failure_log(hook)
    if not failures.refusing:
        return
    stopped = {key for key in failures.refusing if key[1] == hook.name}
    failures.refusing -= stopped
    for plugin in sorted({key[0] for key in stopped}):
        log.warning("plugin %r no longer refuses calls in %s", plugin, hook.name)


def refusal_logged(error: BaseException) -> bool:
    """Whether ``error`` is a plugin's `APIError` that `run_failing_call` has logged with the plugin's name (or had
    logged already, for a repeated refusal): the caller need not log it again, per call."""
    return _REFUSED_BY in getattr(error, "__dict__", {})


def plugin_metrics(hook: Any) -> str:
    """`metric_families` of every plugin, in the text format; one that raises or answers something other than
    a list of families is logged with its name and left out (wrappers add no figures: they are not called).

    A family the text format cannot carry (a bad name, type, help text or sample line), or whose name is the
    core's (`fn_core.metrics.is_core_family`) or one another plugin gave first, is left out alone, logged once
    per plugin, family and problem: one bad line would make a scraper drop the whole page."""
    failures = failure_log(hook.metric_families)
    known_series = getattr(_manager(hook.metric_families), "known_series", None)  # kept by the manager, scrape to scrape
    families: list[Family] = []
    owners: dict[str, str] = {}
    for impl in call_order(hook.metric_families):
        try:
            answer = impl.function()
            if answer is None:
                continue
            _check_families(answer)
        except Exception as exc:
            failures.failed(impl.plugin_name, "metric_families", exc,
                            "plugin %r failed in metric_families; its figures are left out", impl.plugin_name)
            continue
        for family in answer:
            name = family[0]
            problem = family_problem(family, known_series)
            if problem is None and is_core_family(name):
                problem = ("core", "the name is the core's (fn_lb_*, fn_runner_*, fn_api_*, fn_process_*, a process collector's): "
                           "prefix yours with your plugin's")
            if problem is None and name in owners:
                taken_by = owners[name]
                problem = ("taken", f"plugin {taken_by!r} gives a family of that name" if taken_by != impl.plugin_name
                           else "the plugin gives two families of that name")
            if problem is not None:
                if failures.once(impl.plugin_name, "metric_families", name, problem[0]):
                    log.error("plugin %r: metric family %r is left out of /metrics: %s (said once)",
                              impl.plugin_name, name, problem[1])
                continue
            owners[name] = impl.plugin_name
            families.append(family)
    return exposition(families) if families else ""


def _check_families(answer: Any) -> None:
    if not isinstance(answer, list):
        raise TypeError(f"metric_families must return a list of (name, type, help, lines) tuples, got {answer!r:.200}")
    for family in answer:
        if not (isinstance(family, tuple) and len(family) == 4 and all(isinstance(part, str) for part in family[:3])
                and isinstance(family[3], list) and all(isinstance(line, str) for line in family[3])):
            raise TypeError(f"a metric family must be a (name, type, help, [sample lines]) tuple of str, got {family!r:.200}")


def run_status_hooks(hook: Any, status: RunnerStatus, runner: str | None = None, failing: set[tuple[str, str | None]] | None = None) -> None:
    """Every `runner_status` impl in hook order (``runner``: the runner's address on the LB, None on the runner);
    one that raises is reported in ``custom_status``, and the others run.

    ``failing``: the caller's record of the (plugin, runner) pairs failing now. Status runs on every poll, so a
    plugin that keeps failing is logged with its traceback when it starts to, and once more when it works again,
    not twice a second (None: every failure is logged)."""
    for impl in call_order(hook.runner_status):
        kwargs = {name: value for name, value in (("status", status), ("runner", runner)) if name in impl.argnames}
        where = f" for runner {runner}" if runner else ""
        try:
            impl.function(**kwargs)
        except Exception as exc:
            status.custom_status[f"plugin-error:{impl.plugin_name}"] = f"{type(exc).__name__}: {exc}"
            if failing is None or (impl.plugin_name, runner) not in failing:
                later = "" if failing is None else " (said again when it works)"
                log.warning("runner_status plugin %s failed%s: %s%s", impl.plugin_name, where, exc, later, exc_info=True)
                if failing is not None:
                    failing.add((impl.plugin_name, runner))
        else:
            if failing and (impl.plugin_name, runner) in failing:
                failing.discard((impl.plugin_name, runner))
                log.warning("runner_status plugin %s works again%s", impl.plugin_name, where)
