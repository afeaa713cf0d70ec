"""The LB's Prometheus metrics, kept as plain counters and rendered in the text format."""

from __future__ import annotations

import bisect

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class LBMetrics:
    def __init__(self) -> None:
        self.calls_by_status: dict[int, int] = {}
        self.rejected_by_status: dict[int, int] = {}
        self.placement_retries = 0
        self.placer_timeouts = 0
        self.inflight = 0
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._latency_sum = 0.0
        self._latency_count = 0

    def observe_call(self, status: int, duration_s: float) -> None:
        self.calls_by_status[status] = self.calls_by_status.get(status, 0) + 1
        self._bucket_counts[bisect.bisect_left(LATENCY_BUCKETS_S, duration_s)] += 1
        self._latency_sum += duration_s
        self._latency_count += 1

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
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS_S, self._bucket_counts, strict=False):
            cumulative += count
            lines.append(f'fn_lb_call_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'fn_lb_call_duration_seconds_bucket{{le="+Inf"}} {self._latency_count}')
        lines.append(f"fn_lb_call_duration_seconds_sum {self._latency_sum}")
        lines.append(f"fn_lb_call_duration_seconds_count {self._latency_count}")
        lines += [
            "# HELP fn_lb_invoke_rejected_total Invoke/trigger requests refused before a call was created, by HTTP status.",
            "# TYPE fn_lb_invoke_rejected_total counter",
        ]
        lines += [f'fn_lb_invoke_rejected_total{{status="{s}"}} {n}' for s, n in sorted(self.rejected_by_status.items())]
        return "\n".join(lines) + "\n"
