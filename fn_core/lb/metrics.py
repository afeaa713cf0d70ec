"""The LB's Prometheus metrics, kept as plain counters and rendered in the text format."""

from __future__ import annotations

from fn_core.metrics import Histogram


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
        lines = [
            "# HELP fn_lb_runners Runners in the LB's pool now (in-process runners included).",
            "# TYPE fn_lb_runners gauge",
            f"fn_lb_runners {runners}",
            "# HELP fn_lb_calls_total Calls finished on this LB, by HTTP status.",
            "# TYPE fn_lb_calls_total counter",
        ]
        lines += [f'fn_lb_calls_total{{status="{s}"}} {n}' for s, n in sorted(self.calls_by_status.items())]
        lines += [
            "# HELP fn_lb_placement_retries_total Runners that refused (NACK) or could not be reached.",
            "# TYPE fn_lb_placement_retries_total counter",
            f"fn_lb_placement_retries_total {self.placement_retries}",
            "# HELP fn_lb_placer_timeouts_total Calls that found no runner within the placer timeout.",
            "# TYPE fn_lb_placer_timeouts_total counter",
            f"fn_lb_placer_timeouts_total {self.placer_timeouts}",
            "# HELP fn_lb_calls_inflight Calls being placed or run now.",
            "# TYPE fn_lb_calls_inflight gauge",
            f"fn_lb_calls_inflight {self.inflight}",
            "# HELP fn_lb_call_duration_seconds Wall time of calls on the LB.",
            "# TYPE fn_lb_call_duration_seconds histogram",
        ]
        lines += self.durations.samples("fn_lb_call_duration_seconds")
        lines += [
            "# HELP fn_lb_invoke_rejected_total Invoke/trigger requests refused before a call was created, by HTTP status.",
            "# TYPE fn_lb_invoke_rejected_total counter",
        ]
        lines += [f'fn_lb_invoke_rejected_total{{status="{s}"}} {n}' for s, n in sorted(self.rejected_by_status.items())]
        return "\n".join(lines) + "\n"
