"""The LB's placement settings end to end: real runners over gRPC, real Docker, the fdk echo function.

`test_lb_placement.py` checks the same rules against fake gRPC runners; here the runners are real, so
what makes them full is their own resource tracker (FN_MAX_TOTAL_MEMORY_BYTES / FN_MAX_TOTAL_CPU_MCPUS,
FN_ENABLE_NB_RESOURCE_TRACKER) holding a slot for a call of the echo function that sleeps.

- FN_PLACER_TIMEOUT / FN_RETRY_ALL_DELAY_MSECS: every runner full, a call gets Fn's 503 after about the
  placer timeout (before the held calls end), one pass per retry delay; a held call that ends within it
  lets the waiting call run (200).
- FN_MAX_TOTAL_CPU_MCPUS: a call asking more CPU than the runner has is Fn's 400; two calls whose CPU fills
  the budget run one after the other (the second waits on a blocking runner, is NACKed and re-placed by a
  non-blocking one); Status and /metrics show the free milli-CPUs.
- FN_DETACHED_PLACER_TIMEOUT: a detached call on full runners gets its error after the detached bound, not
  the sync one.
- `runner_status` on the LB (FN_RUNNER_STATUS_POLL_MSECS): the hook hears each real runner's status, and a
  stopped runner as failed, with why.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from fn_core import Placer, hookimpl
from fn_core.models import parse_milli_cpus
from fn_core.testing import metric_samples, wait_until

MB = 1024 * 1024
#: room for exactly one 128 MB container on a runner, which refuses (NACK) instead of waiting when full
ONE_SLOT_NB = {"FN_ENABLE_NB_RESOURCE_TRACKER": "true", "FN_MAX_TOTAL_MEMORY_BYTES": str(160 * MB)}
CPUS_ANNOTATION = "test.fn-core/cpus"
BUSY_MSG = {"message": "Timed out - server too busy"}


class Outcomes:
    """The LB's `call_finished` outcomes, by call id."""

    def __init__(self) -> None:
        self.by_call: dict[str, Any] = {}

    @hookimpl
    def call_finished(self, call: Any, outcome: Any) -> None:
        self.by_call[call.id] = outcome

    async def of(self, result: Any) -> Any:
        """The outcome of the call a client got ``result`` for (the LB tells its listeners just after answering)."""
        call_id = result.headers["Fn-Call-Id"]
        await wait_until(lambda: call_id in self.by_call, f"call {call_id} reported to call_finished")
        return self.by_call[call_id]


class CpusFromAnnotation:
    """An fn's milli-CPUs from an annotation (an fn has no `cpus` field; Fn sets a call's CPUs in an overrider)."""

    @hookimpl
    def override_call(self, call: Any) -> None:
        value = call.annotations.get(CPUS_ANNOTATION)
        if value is not None:
            call.cpus = parse_milli_cpus(value)


def busy(runner: Any) -> int:
    return runner.agent.container_states()["busy"]


def runner_metrics(runner: Any) -> dict[str, float]:
    """What the runner's HTTP port serves on /metrics (`fn-core runner`), read from the node itself."""
    return metric_samples(runner.core.render_metrics())


def refused(runner: Any) -> int:
    return int(runner_metrics(runner)['fn_runner_calls_total{result="refused"}'])


async def grpc_status(platform: Any, runner: Any) -> Any:
    """The runner's status over the LB's own channel to it (the real `Status` RPC)."""
    ref = next(r for r in platform.lb.agent.pool.refs if r.address == runner.address)
    return await ref.handle.status()


async def timed(coro: Any) -> tuple[Any, float]:
    """The result and the moment it came at: the clock's, not the loop's (uvloop's is in whole milliseconds, read
    once per loop iteration: two answers taken in one iteration would look simultaneous)."""
    result = await coro
    return result, time.monotonic()


def sleeper(platform: Any, fn_id: str, sleep_ms: int, **kw: Any) -> asyncio.Task:
    return asyncio.create_task(timed(platform.invoke(fn_id, json.dumps({"sleep_ms": sleep_ms}), **kw)))


async def hold_every_runner(platform: Any, fn_id: str, sleep_ms: int) -> list[asyncio.Task]:
    """One call per runner sleeping ``sleep_ms`` in the runner's only container; returns once every runner is full."""
    held = []
    for n in range(1, len(platform.runners) + 1):
        held.append(sleeper(platform, fn_id, sleep_ms))
        await wait_until(lambda n=n: sum(busy(r) for r in platform.runners) == n, f"{n} runner(s) running a held call",
                         timeout_s=30)
    assert [busy(r) for r in platform.runners] == [1] * len(platform.runners)
    return held


def lb_metrics(platform: Any) -> Any:
    return platform.lb.agent.metrics


def assert_server_too_busy(result: Any) -> None:
    """Fn's 503 for a call no runner took within its placer timeout (`fn_core.errors.ServerTooBusy`)."""
    assert result.status == 503, (result.status, result.body)
    assert result.json() == BUSY_MSG
    assert result.headers["Retry-After"] == "15" and result.headers["Fn-Call-Id"]


# --------------------------------------------------------------------------------------------
# FN_PLACER_TIMEOUT, FN_RETRY_ALL_DELAY_MSECS
# --------------------------------------------------------------------------------------------
async def test_every_runner_full_a_call_gets_fns_503_at_the_placer_timeout_before_the_held_calls_end(fn_platform, echo_image):
    timeout_s, delay_ms = 1.5, 100
    outcomes = Outcomes()
    env = {**ONE_SLOT_NB, "FN_PLACER_TIMEOUT": str(timeout_s), "FN_RETRY_ALL_DELAY_MSECS": str(delay_ms)}
    platform = await fn_platform(runners=2, env=env, plugins=(outcomes,))
    held_fn = await platform.deploy(echo_image, name="held")
    other_fn = await platform.deploy(echo_image, name="other")
    held = await hold_every_runner(platform, held_fn["id"], 8000)
    refused_before, retries_before = sum(refused(r) for r in platform.runners), lb_metrics(platform).placement_retries

    began = asyncio.get_running_loop().time()
    # the held fn's own call waits a launch estimate for its slot's busy container before each NACK; another
    # fn's is refused at once (no container of its own, none idle to evict): one pass per FN_RETRY_ALL_DELAY_MSECS
    (same, same_at), (other, other_at) = await asyncio.gather(
        timed(platform.invoke(held_fn["id"], "same fn")), timed(platform.invoke(other_fn["id"], "other fn"))
    )
    assert_server_too_busy(same)
    assert_server_too_busy(other)
    assert timeout_s <= other_at - began < timeout_s + 0.5
    assert timeout_s <= same_at - began < timeout_s + 5  # its last try may take one launch estimate past the timeout
    assert not any(task.done() for task in held), "a held call ended before the placer timeout: nothing was tested"
    assert [busy(r) for r in platform.runners] == [1, 1]

    same_out, other_out = await outcomes.of(same), await outcomes.of(other)
    assert (same_out.status, same_out.error, same_out.runner) == (503, BUSY_MSG["message"], "")
    assert (other_out.status, other_out.error, other_out.runner) == (503, BUSY_MSG["message"], "")
    # each pass asks both runners; no more passes than FN_RETRY_ALL_DELAY_MSECS allows in the timeout
    assert 2 <= other_out.attempts / 2 <= timeout_s / (delay_ms / 1000) + 2, other_out.attempts
    # every attempt the LB counted was a NACK a real runner sent: none lost, none unreachable
    attempts = same_out.attempts + other_out.attempts
    assert sum(refused(r) for r in platform.runners) - refused_before == attempts
    assert lb_metrics(platform).placement_retries - retries_before == attempts
    assert lb_metrics(platform).placer_timeouts == 2

    for task in held:  # the held calls were not disturbed
        result, _ = await task
        assert (result.status, result.json()) == (200, {"sleep_ms": 8000})
    assert len(platform.containers(held_fn["id"])) == 2  # one per runner
    assert platform.containers(other_fn["id"]) == []  # none for the refused call


async def test_a_held_call_ending_within_the_placer_timeout_lets_the_waiting_call_run(fn_platform, echo_image):
    outcomes = Outcomes()
    env = {**ONE_SLOT_NB, "FN_PLACER_TIMEOUT": "30", "FN_RETRY_ALL_DELAY_MSECS": "10"}
    platform = await fn_platform(runners=2, env=env, plugins=(outcomes,))
    fn = await platform.deploy(echo_image)
    held = await hold_every_runner(platform, fn["id"], 4000)
    refused_before, retries_before = sum(refused(r) for r in platform.runners), lb_metrics(platform).placement_retries

    waiting, answered_at = await timed(platform.invoke(fn["id"], "placed at last"))
    assert (waiting.status, waiting.body) == (200, b"placed at last")
    held_ends = []
    for task in held:
        result, at = await task
        assert result.status == 200
        held_ends.append(at)
    assert answered_at > min(held_ends)  # it ran in a container a held call left
    outcome = await outcomes.of(waiting)
    assert outcome.status == 200 and outcome.attempts >= 2  # NACKed at least once before it was placed
    assert outcome.runner in {r.address for r in platform.runners}
    nacks = sum(refused(r) for r in platform.runners) - refused_before
    assert nacks == outcome.attempts - 1 == lb_metrics(platform).placement_retries - retries_before
    assert lb_metrics(platform).placer_timeouts == 0
    launched = sum(runner_metrics(r)['fn_runner_container_launches_total{result="ok"}'] for r in platform.runners)
    assert launched == 2  # the waiting call took a held call's container: no third one


# --------------------------------------------------------------------------------------------
# FN_MAX_TOTAL_CPU_MCPUS
# --------------------------------------------------------------------------------------------
async def test_an_fn_asking_more_cpu_than_the_runner_has_is_fns_400_and_status_shows_the_free_mcpus(fn_platform, echo_image):
    outcomes = Outcomes()
    platform = await fn_platform(env={"FN_MAX_TOTAL_CPU_MCPUS": "500"}, plugins=(CpusFromAnnotation(), outcomes))
    runner = platform.runners[0]
    assert (await grpc_status(platform, runner)).custom_status["runner.cpu_free_mcpus"] == "500"

    too_big = await platform.deploy(echo_image, name="too-big", annotations={CPUS_ANNOTATION: "600m"})
    result = await platform.invoke(too_big["id"], "x")
    assert (result.status, result.json()) == (400, {"message": "Requested CPU/Memory cannot be allocated"})
    assert "Retry-After" not in result.headers
    assert (await outcomes.of(result)).attempts == 1  # a committed error, never re-placed
    assert platform.containers(too_big["id"]) == []
    metrics = runner_metrics(runner)
    assert metrics['fn_runner_call_errors_total{status="400"}'] == 1
    assert metrics['fn_runner_calls_total{result="refused"}'] == 0
    assert metrics["fn_runner_cpu_free_mcpus"] == 500

    fits = await platform.deploy(echo_image, name="fits", annotations={CPUS_ANNOTATION: "0.5"})
    result = await platform.invoke(fits["id"], "fits")
    assert (result.status, result.body) == (200, b"fits")
    # the idle hot container keeps its reservation; Docker was told the same limit
    status = await grpc_status(platform, runner)
    assert status.custom_status["runner.cpu_free_mcpus"] == "0"
    assert runner_metrics(runner)["fn_runner_cpu_free_mcpus"] == 0
    [container] = platform.containers(fits["id"])
    host_config = container.attrs["HostConfig"]
    assert (host_config["CpuQuota"], host_config["CpuPeriod"]) == (50000, 100000)


@pytest.mark.parametrize("non_blocking", [False, True], ids=["blocking-waits", "non-blocking-nacks"])
async def test_two_calls_whose_cpus_fill_the_budget_run_one_after_the_other(fn_platform, echo_image, non_blocking):
    outcomes = Outcomes()
    env = {"FN_MAX_TOTAL_CPU_MCPUS": "500", "FN_PLACER_TIMEOUT": "30", "FN_ENABLE_NB_RESOURCE_TRACKER": str(non_blocking)}
    platform = await fn_platform(env=env, plugins=(CpusFromAnnotation(), outcomes))
    runner = platform.runners[0]
    fn = await platform.deploy(echo_image, annotations={CPUS_ANNOTATION: "500m"})

    first = sleeper(platform, fn["id"], 3000)
    await wait_until(lambda: busy(runner) == 1, "the first call running", timeout_s=30)
    second = sleeper(platform, fn["id"], 0)
    if non_blocking:
        await wait_until(lambda: refused(runner) >= 1, "the second call NACKed", timeout_s=10)
    else:
        await wait_until(lambda: runner.agent.calls_waiting() == 1, "the second call waiting on the runner")
        await asyncio.sleep(1.0)  # past the launch estimate: it would have launched (or been refused) by now
        assert runner.agent.calls_waiting() == 1
    status = await grpc_status(platform, runner)
    assert status.custom_status["runner.cpu_free_mcpus"] == "0"
    assert int(status.custom_status["runner.mem_free_bytes"]) > 1024 * MB  # the CPU is what is full, not the memory
    assert status.custom_status["runner.containers"] == "1"
    assert not second.done()

    (first_result, first_at), (second_result, second_at) = await first, await second
    assert first_result.status == 200 and (second_result.status, second_result.body) == (200, b'{"sleep_ms": 0}')
    assert second_at > first_at
    metrics = runner_metrics(runner)
    assert metrics['fn_runner_container_launches_total{result="ok"}'] == 1  # never a second container
    assert metrics["fn_runner_cpu_free_mcpus"] == 0  # the hot container, idle, keeps its 500m
    outcome = await outcomes.of(second_result)
    nacks = refused(runner)
    if non_blocking:  # refused, re-placed by the LB until the container was free
        assert nacks >= 1 and outcome.attempts == nacks + 1 == lb_metrics(platform).placement_retries + 1
    else:  # it waited on the runner: one attempt, no NACK
        assert (nacks, outcome.attempts, lb_metrics(platform).placement_retries) == (0, 1, 0)


# --------------------------------------------------------------------------------------------
# FN_DETACHED_PLACER_TIMEOUT
# --------------------------------------------------------------------------------------------
async def test_a_detached_call_on_full_runners_gets_503_after_the_detached_placer_timeout_not_the_sync_one(
    fn_platform, echo_image
):
    outcomes = Outcomes()
    env = {**ONE_SLOT_NB, "FN_PLACER_TIMEOUT": "60", "FN_DETACHED_PLACER_TIMEOUT": "1"}
    platform = await fn_platform(runners=2, env=env, plugins=(outcomes,))
    fn = await platform.deploy(echo_image)
    other = await platform.deploy(echo_image, name="other")
    held = await hold_every_runner(platform, fn["id"], 6000)

    loop = asyncio.get_running_loop()
    began = loop.time()
    sync_call = sleeper(platform, fn["id"], 0)  # waits for a runner up to the sync placer timeout (60 s)
    detached, detached_at = await timed(platform.invoke(other["id"], "x", headers={"Fn-Invoke-Type": "detached"}))
    assert_server_too_busy(detached)
    assert 1.0 <= detached_at - began < 2.0
    assert not sync_call.done() and not any(task.done() for task in held)
    assert (await outcomes.of(detached)).status == 503
    assert platform.containers(other["id"]) == []

    synced, _ = await sync_call  # placed once a held call ended, far past the detached timeout
    assert synced.status == 200
    for task in held:
        assert (await task)[0].status == 200
    assert lb_metrics(platform).placer_timeouts == 1


async def test_a_detached_call_a_blocking_runner_holds_unstarted_gets_500_after_its_detached_bound(fn_platform, echo_image):
    # a blocking runner at capacity keeps the call waiting for room instead of refusing it: the LB ends the
    # stream at FN_DETACHED_PLACER_TIMEOUT + the fn's timeout + FN_EXECUTION_HEADROOM (Fn: 500, not the 503)
    outcomes = Outcomes()
    env = {"FN_MAX_TOTAL_MEMORY_BYTES": str(160 * MB), "FN_PLACER_TIMEOUT": "60", "FN_DETACHED_PLACER_TIMEOUT": "1",
           "FN_EXECUTION_HEADROOM": "500"}
    platform = await fn_platform(env=env, plugins=(outcomes,))
    runner = platform.runners[0]
    hog = await platform.deploy(echo_image, name="hog")
    late = await platform.deploy(echo_image, name="late", timeout=1)
    held = await hold_every_runner(platform, hog["id"], 7000)

    began = asyncio.get_running_loop().time()
    result, at = await timed(platform.invoke(late["id"], "x", headers={"Fn-Invoke-Type": "detached"}))
    assert (result.status, result.json()) == (500, {"message": "Unable to service the request"})
    assert result.headers["Fn-Call-Id"]
    assert 2.5 <= at - began < 4.0  # 1 s + 1 s + 0.5 s, not the sync placer's 60 s
    assert not held[0].done()
    await wait_until(lambda: runner.core.active == 1, "the runner dropped the call the LB gave up")
    assert runner.agent.calls_waiting() == 0
    assert platform.containers(late["id"]) == []
    outcome = await outcomes.of(result)
    assert (outcome.status, outcome.runner, outcome.attempts) == (500, runner.address, 1)
    assert (await held[0])[0].status == 200


# --------------------------------------------------------------------------------------------
# runner_status on the LB
# --------------------------------------------------------------------------------------------
class FailedLast:
    @hookimpl
    def place_call(self, call: Any, runners: list[Any]) -> list[Any]:
        return sorted(runners, key=lambda r: r.status is not None and r.status.failed)


class StatusWatcher:
    """An LB-side `runner_status` listener, with the placer that makes the LB poll."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, Any]] = []

    @hookimpl
    def register_placers(self) -> list[Placer]:
        return [Placer(name="status-watch", hooks=FailedLast(), wants_runner_status=True)]

    @hookimpl
    def runner_status(self, status: Any, runner: str | None) -> None:
        if runner is not None:  # the runners of the test share this plugin manager: theirs are None
            self.heard.append((runner, status))

    def latest(self, address: str) -> Any:
        return next((s for a, s in reversed(self.heard) if a == address), None)

    def heard_that(self, address: str, check: Any) -> bool:
        status = self.latest(address)
        return status is not None and check(status)


async def test_the_lb_runner_status_hook_hears_real_runners_and_a_stopped_one_failing(fn_platform, echo_image):
    watcher, outcomes = StatusWatcher(), Outcomes()
    env = {"FN_PLACER": "status-watch", "FN_RUNNER_STATUS_POLL_MSECS": "50"}
    platform = await fn_platform(runners=2, env=env, plugins=(watcher, outcomes))
    addresses = [r.address for r in platform.runners]
    for address in addresses:  # the runner's own counters, and the built-in status-docker plugin's word
        await wait_until(lambda a=address: watcher.heard_that(a, lambda s: s.custom_status.get("docker") == "ok"),
                         f"{address}'s status with docker ok", timeout_s=15)
        status = watcher.latest(address)
        assert not status.failed and (status.active, status.requests_received) == (0, 0)
        assert status.custom_status["runner.containers"] == "0"
        assert int(status.custom_status["runner.mem_free_bytes"]) > 0 and int(status.custom_status["runner.cpu_free_mcpus"]) > 0

    fn = await platform.deploy(echo_image)
    call = sleeper(platform, fn["id"], 1500)
    await wait_until(lambda: any(watcher.heard_that(a, lambda s: s.active == 1 and s.custom_status["runner.containers"] == "1")
                                 for a in addresses), "a runner heard running the call", timeout_s=30)
    result, _ = await call
    assert result.status == 200
    ran = (await outcomes.of(result)).runner
    idle = next(a for a in addresses if a != ran)
    await wait_until(lambda: watcher.heard_that(ran, lambda s: (s.active, s.requests_handled) == (0, 1)), "the call's end heard")
    assert watcher.latest(idle).requests_received == 0

    stopped = next(r for r in platform.runners if r.address == ran)
    await stopped.stop(grace=1)
    heard_before = len(watcher.heard)
    await wait_until(lambda: watcher.heard_that(ran, lambda s: s.failed), "the stopped runner heard failed", timeout_s=10)
    gone = watcher.latest(ran)
    assert gone.error_code == 503 and gone.error_str.startswith("no answer to Status: "), gone
    await wait_until(lambda: any(a == idle for a, _ in watcher.heard[heard_before:]), "the live runner still polled")
    assert not watcher.latest(idle).failed

    after = await platform.invoke(fn["id"], "after the stop")  # the placer puts the failed runner last
    assert (after.status, after.body) == (200, b"after the stop")
    placed = await outcomes.of(after)
    assert (placed.runner, placed.attempts) == (idle, 1)
