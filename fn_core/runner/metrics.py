"""The runner's Prometheus metrics: what its calls ended as, and what its containers cost and why they went.

Counted where things happen (`RunnerCore` for calls, `Agent` for containers and driver operations) as
plain integers and histograms; the gauges (calls running and waiting, containers by state, free memory
and CPU) are read from the agent when `/metrics` is scraped, so a warm call pays for two counts only.
A runner serves them on its HTTP port (``FN_PORT``); `fn-core serve` shows its local runner's beside
the LB's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from fn_core.metrics import Family, Histogram, by_label, exposition, label_value

if TYPE_CHECKING:
    from fn_core.runner.agent import Agent

#: why a container was taken out of service (`Agent.retire`):
#: idle for its fn's idle_timeout | idle, and its room was needed by another fn's call | a call ran past its
#: timeout (killed: a late write must never reach the next call) | it served FN_MAX_CALLS_PER_CONTAINER calls |
#: its process died (during a call, or while idle) | it answered in a way that leaves the connection unusable
#: (too big, malformed) | a call was cancelled mid-request (the runner shutting down) | the runner is stopping
RetireReason = Literal["idle_timeout", "evicted", "call_timeout", "recycled", "exited", "bad_response", "cancelled", "shutdown"]
RETIRE_REASONS: tuple[RetireReason, ...] = get_args(RetireReason)


class RunnerMetrics:
    def __init__(self) -> None:
        self.calls_by_result: dict[str, int] = {"success": 0, "error": 0, "refused": 0, "cancelled": 0}
        self.errors_by_status: dict[int, int] = {}
        self.call_durations = Histogram()
        self.launches_by_result: dict[str, int] = {"ok": 0, "failed": 0}
        # `fn_core.errors.RunnerCannotLaunch.reason` of each subclass
        self.launches_refused: dict[str, int] = {"engine_unavailable": 0, "out_of_resources": 0}
        self.launch_durations = Histogram()
        self.retired_by_reason: dict[str, int] = dict.fromkeys(RETIRE_REASONS, 0)
        self.exits_by_code: dict[str, int] = {}
        self.driver_durations: dict[str, Histogram] = {}
        self.status_requests = 0
        self.starts_by_container: dict[str, int] = {"idle": 0, "freed": 0, "new": 0}
        self.wait_durations = Histogram()

    def observe_call(self, error_status: int | None, duration_s: float) -> None:
        """A call answered (``error_status`` None: it succeeded); a NACK is `observe_refusal`."""
        if error_status is None:
            self.calls_by_result["success"] += 1
        else:
            self.calls_by_result["error"] += 1
            self.errors_by_status[error_status] = self.errors_by_status.get(error_status, 0) + 1
        self.call_durations.observe(duration_s)

    def observe_start(self, container: str, waited_s: float) -> None:
        """A call got its container (``container``: idle, freed or new) after waiting ``waited_s`` for it."""
        self.starts_by_container[container] += 1
        self.wait_durations.observe(waited_s)

    def observe_refusal(self) -> None:
        self.calls_by_result["refused"] += 1

    def observe_cancelled(self) -> None:
        """A call taken, then dropped by the LB before its end (no duration: it has no `finished`)."""
        self.calls_by_result["cancelled"] += 1

    def observe_launch(self, ok: bool, duration_s: float) -> None:
        self.launches_by_result["ok" if ok else "failed"] += 1
        if ok:
            self.launch_durations.observe(duration_s)

    def observe_launch_refused(self, reason: str) -> None:
        """A launch the runner could not make for a want of its own (its call was NACKed): not a failed one."""
        self.launches_refused[reason] = self.launches_refused.get(reason, 0) + 1

    def observe_retired(self, reason: RetireReason) -> None:
        self.retired_by_reason[reason] += 1

    def observe_exit(self, code: int, oom_killed: bool) -> None:
        label = "oom" if oom_killed else str(code)
        self.exits_by_code[label] = self.exits_by_code.get(label, 0) + 1

    def observe_driver(self, operation: str, duration_s: float) -> None:
        histogram = self.driver_durations.get(operation)
        if histogram is None:
            histogram = self.driver_durations[operation] = Histogram()
        histogram.observe(duration_s)

    def render(self, agent: Agent, running: int) -> str:
        """The text exposition; ``running``: calls being served now (the runner's `active`)."""
        driver = [line for operation, histogram in sorted(self.driver_durations.items())
                  for line in histogram.samples("fn_runner_driver_seconds", f'operation="{label_value(operation)}"')]
        families: list[Family] = [
            ("fn_runner_calls_total", "counter",
             "Calls this runner took, by how they ended: success, error, refused (the NACK: not run, the LB may place it "
             "elsewhere), or cancelled (the LB dropped the call before its end: its client went away).",
             by_label("fn_runner_calls_total", "result", self.calls_by_result)),
            ("fn_runner_call_errors_total", "counter", "Calls that ended in an error, by the error's HTTP status.",
             by_label("fn_runner_call_errors_total", "status", dict(sorted(self.errors_by_status.items())))),
            ("fn_runner_call_duration_seconds", "histogram", "Time from a call's offer to its finished message (refusals left out).",
             self.call_durations.samples("fn_runner_call_duration_seconds")),
            ("fn_runner_call_starts_total", "counter",
             "Calls that got a container, by which: idle (a hot one was free at once), freed (a hot one another call of "
             "the function finished with, after a wait), new (one launched while it waited: a cold start).",
             by_label("fn_runner_call_starts_total", "container", self.starts_by_container)),
            ("fn_runner_call_wait_seconds", "histogram",
             "Time a call waited for a container of its function: 0 for an idle hot one; a cold start's launch for a new one.",
             self.wait_durations.samples("fn_runner_call_wait_seconds")),
            ("fn_runner_calls_running", "gauge", "Calls on this runner now: waiting for a container or running in one.",
             [f"fn_runner_calls_running {running}"]),
            ("fn_runner_calls_waiting", "gauge", "Calls waiting for a container of their function now.",
             [f"fn_runner_calls_waiting {agent.calls_waiting()}"]),
            ("fn_runner_containers", "gauge", "Hot containers now, by state (paused: idle and frozen).",
             by_label("fn_runner_containers", "state", agent.container_states())),
            ("fn_runner_container_launches_total", "counter", "Containers launched (create, start, socket ready), by result.",
             by_label("fn_runner_container_launches_total", "result", self.launches_by_result)),
            ("fn_runner_container_launches_refused_total", "counter",
             "Launches the runner could not make for a want of its own, by reason: engine_unavailable (its container "
             "engine does not answer), out_of_resources (its disk or its engine's full, or out of file descriptors). "
             "Their calls were NACKed: the LB placed them on other runners.",
             by_label("fn_runner_container_launches_refused_total", "reason", self.launches_refused)),
            ("fn_runner_container_launch_seconds", "histogram",
             "Time from launching a container to its socket being ready (a cold start's runner part).",
             self.launch_durations.samples("fn_runner_container_launch_seconds")),
            ("fn_runner_containers_retired_total", "counter", "Containers taken out of service, by reason.",
             by_label("fn_runner_containers_retired_total", "reason", self.retired_by_reason)),
            ("fn_runner_container_exits_total", "counter", "Containers found dead, by exit code (oom: killed for memory).",
             by_label("fn_runner_container_exits_total", "code", dict(sorted(self.exits_by_code.items())))),
            ("fn_runner_driver_seconds", "histogram", "Time the container driver (Docker) took, by operation.", driver),
            ("fn_runner_memory_free_bytes", "gauge",
             "Memory not reserved by containers (FN_MAX_TOTAL_MEMORY_BYTES or the host's).",
             [f"fn_runner_memory_free_bytes {agent.budget.free_memory}"]),
            ("fn_runner_cpu_free_mcpus", "gauge", "CPU not reserved by containers, in milli-CPUs.",
             [f"fn_runner_cpu_free_mcpus {agent.budget.free_mcpus}"]),
            ("fn_runner_status_requests_total", "counter", "Status requests answered (the LB's health polls).",
             [f"fn_runner_status_requests_total {self.status_requests}"]),
        ]
        return exposition(families)
