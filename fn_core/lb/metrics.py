"""The LB's Prometheus metrics, kept as plain counters and rendered in the text format."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fn_core import logfmt
from fn_core.metrics import Family, Histogram, by_label, exposition
from fn_core.records import RunnerRef

log = logging.getLogger(__name__)

#: runner addresses with a series of their own in a per-runner counter; the calls of any further one are counted
#: together under ``runner="_other"`` (as fn-metrics bounds its functions): a pool whose runners come and go
#: with new addresses (Kubernetes pods) cannot grow the LB's series without end
MAX_RUNNER_SERIES = 1000
OTHER = "_other"


class RunnerCounts:
    """A counter per runner address for the LB's lifetime: it never goes down, and it outlives the runner's channel.

    A runner that leaves the pool keeps its series (a counter whose series vanished, or came back at 0, would lose
    what it had counted), and one that comes back, or whose channel the pool made anew, goes on from its count.
    A series is kept while the runner has a channel (`track`, `untrack`: in the pool, or leaving it with calls
    on it), at 0 until its first count, so that ``increase()`` sees that one too; and for good once it has counted
    something. A runner that left having counted nothing loses its series: there was nothing to keep, and the slot
    goes to the next one. At most `MAX_RUNNER_SERIES` addresses have one: the counts of the others go to
    ``runner="_other"`` (said once in the log).
    """

    def __init__(self, name: str, max_runners: int = MAX_RUNNER_SERIES) -> None:
        self.name = name  # the family, for the log line past the bound
        self.max_runners = max_runners
        self._counts: dict[str, int] = {}  # the addresses with a series: those with a channel, and those that counted
        self._channels: dict[str, int] = {}  # address -> channels to it now (one, or two while an old one closes)
        self._other: int | None = None  # None until an address found no room

    def track(self, address: str) -> None:
        """A channel to ``address`` was made: it has a series (at 0 until it counts), if there is room."""
        self._channels[address] = self._channels.get(address, 0) + 1
        self._slot(address)

    def untrack(self, address: str) -> None:
        """A channel to ``address`` closed; with none left, a series that counted nothing goes."""
        left = self._channels.get(address, 0) - 1
        if left > 0:
            self._channels[address] = left
            return
        self._channels.pop(address, None)
        if self._counts.get(address) == 0:
            del self._counts[address]

    def add(self, address: str) -> None:
        if self._slot(address):
            self._counts[address] += 1
        else:
            self._other = (self._other or 0) + 1

    def _slot(self, address: str) -> bool:
        if address in self._counts:
            return True
        if len(self._counts) < self.max_runners:
            self._counts[address] = 0
            return True
        if self._other is None:
            self._other = 0  # from now on its series is there, at 0 until its first count
            logfmt.log(log, logging.WARNING, 'runners past the bound of a per-runner metric are counted under runner="_other"',
                       {"metric": self.name, "max_runners": self.max_runners, "runner": address})
        return False

    def tracks(self, address: str) -> bool:
        return address in self._channels

    def samples(self) -> dict[str, int]:
        counts = dict(self._counts)
        if self._other is not None:
            counts[OTHER] = self._other
        return counts


class LBMetrics:
    def __init__(self) -> None:
        self.calls_by_status: dict[int, int] = {}
        self.rejected_by_status: dict[int, int] = {}
        self.placement_retries = 0
        self.placer_timeouts = 0
        self.inflight = 0
        self.durations = Histogram()
        #: calls lost per runner (`fn_core.lb.runner_client.RunnerClient` counts them), for the LB's lifetime
        self.lost_calls = RunnerCounts("fn_lb_runner_lost_calls_total")

    def observe_call(self, status: int, duration_s: float) -> None:
        self.calls_by_status[status] = self.calls_by_status.get(status, 0) + 1
        self.durations.observe(duration_s)

    def observe_rejection(self, status: int) -> None:
        self.rejected_by_status[status] = self.rejected_by_status.get(status, 0) + 1

    def render(self, runners: Sequence[RunnerRef] = ()) -> str:
        # per runner of the pool now: what an operator alerts on (an in-process runner is always reachable, never lost)
        reachable = {ref.address: int(not getattr(ref.handle, "unreachable", False)) for ref in runners}
        lost = self.lost_calls.samples()
        for ref in runners:
            if not self.lost_calls.tracks(ref.address):  # no channel: an in-process runner, which loses no call
                lost.setdefault(ref.address, 0)
        families: list[Family] = [
            ("fn_lb_runners", "gauge", "Runners in the LB's pool now (in-process runners included).",
             [f"fn_lb_runners {len(runners)}"]),
            ("fn_lb_runner_reachable", "gauge", "0 from a call that could not reach this runner (down, a TLS mismatch, "
             "silent under a PING) until the LB, which keeps dialling it, connects again.",
             by_label("fn_lb_runner_reachable", "runner", reachable)),
            ("fn_lb_runner_lost_calls_total", "counter", "Calls sent to this runner whose link broke before their result: "
             "500 'the runner was lost during the call', never re-sent. For the LB's lifetime: a runner that left the "
             f"pool keeps its series once it lost a call; past {MAX_RUNNER_SERIES} runners, the others count under "
             f"runner=\"{OTHER}\".",
             by_label("fn_lb_runner_lost_calls_total", "runner", lost)),
            ("fn_lb_calls_total", "counter", "Calls finished on this LB, by HTTP status.",
             by_label("fn_lb_calls_total", "status", dict(sorted(self.calls_by_status.items())))),
            ("fn_lb_placement_retries_total", "counter", "Runners passed over by a call, which never ran there: they "
             "refused it (NACK) or could not be reached (a runner known down is passed over at once). A call waiting for "
             "a runner adds one for each it passes over in each round (FN_RETRY_ALL_DELAY_MSECS apart).",
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
