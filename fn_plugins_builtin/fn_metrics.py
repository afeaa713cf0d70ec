"""Per-function figures on the LB's ``/metrics``: each fn's calls by status, and their duration.

The node's own figures (`fn_lb_calls_total`, ...) say how the platform does; a platform team's users ask how
*their* function does. Each call finished on this LB adds to its fn's series, labelled ``app_id``,
``app_name`` and ``fn_id``: ``fn_function_calls_total`` by ``status``, and the histogram
``fn_function_call_duration_seconds`` (the same buckets and wall time as ``fn_lb_call_duration_seconds``).
It runs in `call_finished`, after the answer is written: a dict lookup and a histogram entry per call.

The series are bounded, as a Prometheus server needs: past ``max_fns`` functions (config file:
``[plugins.fn-metrics] max_fns = N``, default 1000; 0 turns this off), the calls of any further fn add
to one series with ``fn_id="_other"``, and the log says so once.
"""

from __future__ import annotations

import logging

from fn_core import hookimpl
from fn_core.errors import ConfigError
from fn_core.metrics import Histogram, by_label, label_value

log = logging.getLogger(__name__)

DEFAULT_MAX_FNS = 1000
OTHER = ("_other", "_other", "_other")  # (app_id, app_name, fn_id) of the fns past the bound


@hookimpl
def configure(config, plugin_manager):
    max_fns = config.plugin_settings("fn-metrics").get("max_fns", DEFAULT_MAX_FNS)
    if isinstance(max_fns, bool) or not isinstance(max_fns, int) or max_fns < 0:
        raise ConfigError(f"[plugins.fn-metrics] max_fns must be a whole number >= 0 (0: off), got {max_fns!r}")
    if max_fns:
        plugin_manager.register(FnSeries(max_fns), name="fn-metrics:series")


class FnSeries:
    """Calls by status and their durations, per (app id, app name, fn id), for at most ``max_fns`` fns."""

    def __init__(self, max_fns: int) -> None:
        self.max_fns = max_fns
        self.calls: dict[tuple[str, str, str], dict[int, int]] = {}
        self.durations: dict[tuple[str, str, str], Histogram] = {}

    @hookimpl
    def call_finished(self, call, outcome):
        key = (call.app_id, call.app_name, call.fn_id)
        by_status = self.calls.get(key)
        if by_status is None:
            if len(self.calls) >= self.max_fns:
                if OTHER not in self.calls:
                    log.warning("more than %d functions called on this LB: the calls of the others are counted under "
                                'fn_id="_other" ([plugins.fn-metrics] max_fns)', self.max_fns)
                key = OTHER
            by_status = self.calls.get(key)
            if by_status is None:
                by_status = self.calls[key] = {}
                self.durations[key] = Histogram()
        by_status[outcome.status] = by_status.get(outcome.status, 0) + 1
        self.durations[key].observe(outcome.duration_s)

    @hookimpl
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
