"""Calling hooks so that a failure names its plugin, and listeners stay isolated.

Per-call hooks: the normal path is one ordinary pluggy call (so hook monitoring, e.g. the test
kit's `HookRecorder`, sees it). pluggy stops at the first exception; we find whose impl raised
from the traceback, log it with the plugin's name and, for listener hooks, run the impls that had
not run yet one by one. The status and metrics hooks, whose impls each add their own part, call
every impl by itself (`run_status_hooks`, `plugin_metrics`).
"""

from __future__ import annotations

import logging
from typing import Any

from fn_core.errors import APIError
from fn_core.metrics import Family, exposition
from fn_core.records import RunnerStatus

log = logging.getLogger(__name__)


def _call_order(hook: Any) -> list[Any]:
    # pluggy's order: last registered first
    return [impl for impl in reversed(hook.get_hookimpls()) if not (impl.hookwrapper or impl.wrapper)]


def _failed_impl(hook: Any, exc: BaseException) -> Any:
    codes: dict[Any, list[Any]] = {}
    for impl in hook.get_hookimpls():
        codes.setdefault(getattr(impl.function, "__code__", None), []).append(impl)
    tb = exc.__traceback__
    while tb is not None:
        impls = codes.get(tb.tb_frame.f_code)
        if impls:
            return impls[0] if len(impls) == 1 else _impl_of_frame(impls, tb.tb_frame)
        tb = tb.tb_next
    return None


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


def run_isolated(hook: Any, **kwargs: Any) -> None:
    """Every impl runs; one that raises is logged with its plugin name and the rest go on."""
    try:
        hook(**kwargs)
        return
    except Exception as exc:
        failed = _failed_impl(hook, exc)
        log.error("plugin %r failed in %s; ignored", _plugin_name(failed), hook.name, exc_info=exc)
    order = _call_order(hook)
    rest = order[order.index(failed) + 1 :] if failed in order else []
    for impl in rest:
        try:
            impl.function(*[kwargs[name] for name in impl.argnames])
        except Exception as exc:
            log.error("plugin %r failed in %s; ignored", impl.plugin_name, hook.name, exc_info=exc)


def run_failing_call(hook: Any, **kwargs: Any) -> None:
    """A hook whose failure fails the call (`override_call`, `modify_container_options`): an `APIError` as it is;
    anything else is logged with the plugin's name and traceback, and is a 500 naming the plugin, not its text."""
    try:
        hook(**kwargs)
    except APIError:
        raise
    except Exception as exc:
        name = failed_plugin(hook, exc)
        log.error("plugin %r failed in %s", name, hook.name, exc_info=exc)
        raise APIError(f"internal server error (plugin {name} failed)", status=500) from exc


def plugin_metrics(hook: Any) -> str:
    """`metric_families` of every plugin, in the text format; one that raises or answers something other than
    a list of families is logged with its name and left out (wrappers add no figures: they are not called)."""
    families: list[Family] = []
    for impl in _call_order(hook.metric_families):
        try:
            answer = impl.function()
            if answer is not None:
                _check_families(answer)
                families.extend(answer)
        except Exception as exc:
            log.error("plugin %r failed in metric_families; its figures are left out", impl.plugin_name, exc_info=exc)
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
    for impl in _call_order(hook.runner_status):
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
