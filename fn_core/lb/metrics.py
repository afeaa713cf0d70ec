"""The LB's Prometheus metrics, kept as plain counters and rendered in the text format."""

from __future__ import annotations

from collections.abc import Sequence

from fn_core.metrics import Family, Histogram, by_label, exposition
from fn_core.records import RunnerRef


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

    def render(self, runners: Sequence[RunnerRef] = ()) -> str:
        # per runner of the pool now: what an operator alerts on (an in-process runner is always reachable, never lost)
        reachable = {ref.address: int(not getattr(ref.handle, "unreachable", False)) for ref in runners}
        lost = {ref.address: getattr(ref.handle, "lost_calls", 0) for ref in runners}
        families: list[Family] = [
            ("fn_lb_runners", "gauge", "Runners in the LB's pool now (in-process runners included).",
             [f"fn_lb_runners {len(runners)}"]),
            ("fn_lb_runner_reachable", "gauge", "0 from a call that could not reach this runner (down, a TLS mismatch, "
             "silent under a PING) until the LB, which keeps dialling it, connects again.",
             by_label("fn_lb_runner_reachable", "runner", reachable)),
            ("fn_lb_runner_lost_calls_total", "counter", "Calls sent to this runner whose link broke before their result: "
             "500 'the runner was lost during the call', never re-sent.", by_label("fn_lb_runner_lost_calls_total", "runner", lost)),
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
