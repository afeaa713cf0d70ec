"""Per-function figures on the LB's ``/metrics``: each fn's calls by status, and their duration.

The node's own figures (`fn_lb_calls_total`, ...) say how the platform does; a platform team's users ask how
*their* function does. Each call finished on this LB adds to its fn's series, labelled ``app_id``,
``app_name`` and ``fn_id``: ``fn_function_calls_total`` by ``status``, and the histogram
``fn_function_call_duration_seconds`` (the same buckets and wall time as ``fn_lb_call_duration_seconds``).
It runs in `call_finished`, after the answer is written: a clock read, a dict lookup and a histogram entry per call.

The series are bounded, as a Prometheus server needs: at most ``max_fns`` functions have their own
(config file: ``[plugins.fn-metrics] max_fns = N``, default 1000; 0 turns this off). The LB is not told when
an fn is deleted, so a platform whose fns come and go would fill the bound with the dead: when it is full, a
new fn takes the place of the one called least recently, if that one has had no call for ``forget_idle_s``
(default 3600 s, longer than a dashboard's rate window; its series then leave ``/metrics``). While none is
that idle, the calls of any further fn add to one series with ``fn_id="_other"``, and the log says so once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fn_core import hookimpl
from fn_core.errors import ConfigError
from fn_core.metrics import Histogram, by_label, label_value

log = logging.getLogger(__name__)

DEFAULT_MAX_FNS = 1000
DEFAULT_FORGET_IDLE_S = 3600
OTHER = ("_other", "_other", "_other")  # (app_id, app_name, fn_id) of the fns past the bound


@hookimpl
def configure(config, plugin_manager):
    settings = config.plugin_settings("fn-metrics", known=("max_fns", "forget_idle_s"))
    max_fns = settings.get("max_fns", DEFAULT_MAX_FNS)
    if isinstance(max_fns, bool) or not isinstance(max_fns, int) or max_fns < 0:
        raise ConfigError(f"[plugins.fn-metrics] max_fns must be a whole number >= 0 (0: off), got {max_fns!r}")
    forget_idle_s = settings.get("forget_idle_s", DEFAULT_FORGET_IDLE_S)
    if isinstance(forget_idle_s, bool) or not isinstance(forget_idle_s, int | float) or forget_idle_s < 0:
        raise ConfigError(f"[plugins.fn-metrics] forget_idle_s must be a number of seconds >= 0, got {forget_idle_s!r}")
    if max_fns:
        plugin_manager.register(FnSeries(max_fns, forget_idle_s), name="fn-metrics:series")


class FnSeries:
    """Calls by status and their durations, per (app id, app name, fn id), for at most ``max_fns`` fns."""

    def __init__(self, max_fns: int, forget_idle_s: float = DEFAULT_FORGET_IDLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_fns = max_fns
        self.forget_idle_s = forget_idle_s
        self.clock = clock
        self.calls: dict[tuple[str, str, str], dict[int, int]] = {}
        self.durations: dict[tuple[str, str, str], Histogram] = {}
        self.last_call: dict[tuple[str, str, str], float] = {}  # of the fns with their own series
        self._no_room_until = 0.0  # while full: no fn can have been idle long enough before then

    # trylast: registered in configure, these would run first; built-ins run after third-party plugins
    @hookimpl(trylast=True)
    def call_finished(self, call, outcome):
        now = self.clock()
        key = (call.app_id, call.app_name, call.fn_id)
        by_status = self.calls.get(key)
        if by_status is None:
            key = self._room_for(key, now)
            by_status = self.calls.get(key)
            if by_status is None:
                by_status = self.calls[key] = {}
                self.durations[key] = Histogram()
        if key is not OTHER:
            self.last_call[key] = now
        by_status[outcome.status] = by_status.get(outcome.status, 0) + 1
        self.durations[key].observe(outcome.duration_s)

    def _room_for(self, key: tuple[str, str, str], now: float) -> tuple[str, str, str]:
        """``key`` when a new fn can have its own series (forgetting the longest idle fn if need be), else OTHER."""
        if len(self.last_call) < self.max_fns:
            return key
        if now >= self._no_room_until:  # one scan of the bound, then none until an fn can have become idle enough
            idlest = min(self.last_call, key=self.last_call.__getitem__)
            if now - self.last_call[idlest] >= self.forget_idle_s:
                for series in (self.calls, self.durations, self.last_call):
                    del series[idlest]
                return key
            self._no_room_until = self.last_call[idlest] + self.forget_idle_s
        if OTHER not in self.calls:
            log.warning("more than %d functions called on this LB within %g s: the calls of the others are counted under "
                        'fn_id="_other" ([plugins.fn-metrics] max_fns, forget_idle_s)', self.max_fns, self.forget_idle_s)
        return OTHER

    @hookimpl(trylast=True)
    def metric_families(self):
        if not self.calls:  # a runner, or an LB before its first call
            return None
        calls, durations = [], []
        for (app_id, app_name, fn_id), by_status in self.calls.items():
            labels = f'app_id="{label_value(app_id)}",app_name="{label_value(app_name)}",fn_id="{label_value(fn_id)}"'
            calls += by_label("fn_function_calls_total", "status", dict(sorted(by_status.items())), labels)
            durations += self.durations[(app_id, app_name, fn_id)].samples("fn_function_call_duration_seconds", labels)
        return [
            ("fn_function_calls_total", "counter", "Calls of each function finished on this LB, by HTTP status.", calls),
            ("fn_function_call_duration_seconds", "histogram", "Wall time of each function's calls on this LB.", durations),
        ]
