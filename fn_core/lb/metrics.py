"""The LB's Prometheus metrics, kept as plain counters and rendered in the text format."""

from __future__ import annotations

from fn_core.metrics import Family, Histogram, by_label, exposition


class LBMetrics:
    def __init__(self) -> None:
        self.calls_by_status: dict[int, int] = {}
        self.rejected_by_status: dict[int, int] = {}
        self.placement_retries = 0
        self.placer_timeouts = 0
        self.inflight = 0
        self.durations = Histogram()

    def observe_call(self, status: int, duration_s: float) -> None:
        self.calls_by_status[status] = self.calls_by_status.get(status, 0) + 1
        self.durations.observe(duration_s)

    def observe_rejection(self, status: int) -> None:
        self.rejected_by_status[status] = self.rejected_by_status.get(status, 0) + 1

    def render(self, runners: int = 0) -> str:
        families: list[Family] = [
            ("fn_lb_runners", "gauge", "Runners in the LB's pool now (in-process runners included).", [f"fn_lb_runners {runners}"]),
            ("fn_lb_calls_total", "counter", "Calls finished on this LB, by HTTP status.",
             by_label("fn_lb_calls_total", "status", dict(sorted(self.calls_by_status.items())))),
            ("fn_lb_placement_retries_total", "counter", "Runners that refused (NACK) or could not be reached.",
             [f"fn_lb_placement_retries_total {self.placement_retries}"]),
            ("fn_lb_placer_timeouts_total", "counter", "Calls that found no runner within the placer timeout.",
             [f"fn_lb_placer_timeouts_total {self.placer_timeouts}"]),
            ("fn_lb_calls_inflight", "gauge", "Calls being placed or run now.", [f"fn_lb_calls_inflight {self.inflight}"]),
            ("fn_lb_call_duration_seconds", "histogram", "Wall time of calls on the LB.",
             self.durations.samples("fn_lb_call_duration_seconds")),
            ("fn_lb_invoke_rejected_total", "counter", "Invoke/trigger requests refused before a call was created, by HTTP status.",
             by_label("fn_lb_invoke_rejected_total", "status", dict(sorted(self.rejected_by_status.items())))),
        ]
        return exposition(families)
