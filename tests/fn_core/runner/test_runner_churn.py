"""Runners soaked in a shared platform's mixed traffic, then the invariants an operator relies on.

A real LB and real runners (`fn_platform`: real HTTP, real gRPC, real Docker, the fdk echo function), in both
tracker modes: one blocking runner, or two non-blocking ones. Six fns whose memory (FN_MAX_TOTAL_MEMORY_BYTES)
lets only some of their containers live at once, so calls wait (blocking) or are refused and placed again
(non-blocking), and warm (paused: FN_FREEZE_IDLE_MSECS) containers are evicted for other fns. Ten clients send a
seeded random mix: plain echoes (some of hundreds of KiB), echoes that sleep, calls the function fails (502),
calls whose function exits (502), calls past their fn's timeout (504) and clients that give up while the function
sleeps or waits for room (their request cancelled, or their connection closed). During it, each runner's reserved
memory is what its containers hold, never more than its budget. Then, with the traffic over:

- each client got the answer its call asks for, within a bound (no hang), and each echo its own body back;
- the runners' idle containers go, their memory is whole again, nothing runs or waits, no agent task is left,
  and after the stop no container of the platform is left on the engine;
- the runners' calls by result add up against what the clients saw, the LB's `call_finished` outcomes (attempts
  include the NACKs), the LB's metrics and the runners' Status; the LB has no call in flight.

A failure names the seed: the same seed makes the same mix (the timing differs: it is a real platform).
The last test pins, deterministically, the one way the counts did not add up: found reading the runner for the
soak's identities (received = calls by result), at a timing too rare for the soak to hit reliably.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from typing import Any

import attrs
import grpc
import pytest

from fn_core import hookimpl
from fn_core.runner.driver import label_tag
from fn_core.runner.resources import call_needs
from fn_core.testing import metric_samples, wait_until

MB = 1024 * 1024
#: the fns' memory: the budget holds 2 to 5 of their containers at once
FN_MEMORY_MB = (128, 128, 64, 64, 192, 128)
FN_WEIGHTS = (6, 4, 3, 2, 2, 1)  # some fns are busy, some rare
FN_TIMEOUT_S = 2
FN_IDLE_TIMEOUT_S = 2  # containers go soon after the traffic (and some during it)
CALLS = 180
CLIENTS = 10
TRAFFIC_LIMIT_S = 50.0  # no new call is sent after this (a wall-clock bound on the soak)
#: a client that waits longer than this is a hang: far past any wait the mix can cause (the placer timeout,
#: a launch, the longest call), even on this slow shared machine
CLIENT_BOUND_S = 45.0
PLACER_TIMEOUT_S = 20  # longer than anything holds the runner full: a 503 would be a call starved of room


@attrs.define
class Mode:
    seed: int
    runners: int
    budget_mb: int  # FN_MAX_TOTAL_MEMORY_BYTES of each runner


MODES = {
    # a blocking runner waits for room: one runner, whose calls wait for each other
    "blocking": Mode(seed=1103, runners=1, budget_mb=384),
    # a non-blocking runner refuses (NACK) and the LB places the call again, here or on the other runner
    "non-blocking": Mode(seed=2207, runners=2, budget_mb=256),
}

#: kind -> weight in the mix
KINDS = {"echo": 36, "big": 6, "sleep": 22, "fail": 8, "exit": 5, "timeout": 6, "cancel": 6, "hangup": 5}
#: what each kind's client must get: status and Fn's JSON message (None: the echo's own body)
EXPECTED: dict[str, tuple[int, Any]] = {
    "echo": (200, None),
    "big": (200, None),
    "sleep": (200, None),
    "fail": (502, {"message": "function failed"}),
    "exit": (502, {"message": "container exit code 3"}),
    "timeout": (504, {"message": "Timed out"}),
}
GIVE_UP = ("cancel", "hangup")  # clients that leave mid-call: the LB's outcome is Fn's 444


@attrs.define
class Spec:
    n: int
    fn: int
    kind: str
    body: bytes
    give_up_after_s: float = 0.0


@attrs.define
class Seen:
    spec: Spec
    status: int = 0  # 0: the client gave up (or hung: `hung`)
    body: bytes = b""
    call_id: str = ""
    hung: bool = False


def make_mix(seed: int) -> list[Spec]:
    rng = random.Random(seed)
    kinds, weights = list(KINDS), list(KINDS.values())
    specs = []
    for n in range(CALLS):
        kind = rng.choices(kinds, weights)[0]
        fn = rng.choices(range(len(FN_MEMORY_MB)), FN_WEIGHTS)[0]
        tag = f"{n}-{rng.getrandbits(48):012x}"
        give_up = 0.0
        if kind == "echo":
            body = f"plain echo {tag}".encode()
        elif kind == "big":  # request and answer in many gRPC frames; an answer the LB streams as it comes
            body = f"big echo {tag} ".encode() + rng.randbytes(rng.randint(20, 200) * 1024)
        elif kind == "sleep":
            body = json.dumps({"sleep_ms": rng.randint(20, 500), "tag": tag}).encode()
        elif kind == "fail":
            body = json.dumps({"fail": f"boom {tag}"}).encode()
        elif kind == "exit":
            body = json.dumps({"exit": 3, "tag": tag}).encode()
        elif kind == "timeout":
            body = json.dumps({"sleep_ms": FN_TIMEOUT_S * 1000 + 1500, "tag": tag}).encode()
        else:  # the client leaves long before the function ends, whether it waited for room or not
            body = json.dumps({"sleep_ms": 1500, "tag": tag}).encode()
            give_up = rng.uniform(0.01, 0.6)
        specs.append(Spec(n, fn, kind, body, give_up))
    return specs


TAG_HEADER = "X-Soak-Tag"  # a give-up client's number: the LB took its request once `Ledger.taken` has it


class Ledger:
    """The LB's `call_finished` outcomes and the runner's `runner_call_finished` ones (one plugin manager serves both),
    and the tags of the give-up calls the LB has taken (`override_call`)."""

    def __init__(self) -> None:
        self.lb: dict[str, Any] = {}
        self.runner: dict[str, Any] = {}
        self.taken: set[str] = set()

    @hookimpl
    def override_call(self, call: Any) -> None:
        for name, values in call.headers.items():
            if name.lower() == TAG_HEADER.lower():
                self.taken.update(values)

    async def until_taken(self, spec: Spec) -> None:
        """A client leaves after the LB took its call: one that left before would be no call at all, on a slow machine
        too (aiohttp drops a request whose connection closed before its handler began)."""
        await wait_until(lambda: str(spec.n) in self.taken, f"the LB took give-up call #{spec.n}", timeout_s=CLIENT_BOUND_S)

    @hookimpl
    def call_finished(self, call: Any, outcome: Any) -> None:
        assert call.id not in self.lb, f"call {call.id} finished twice on the LB"
        self.lb[call.id] = outcome

    @hookimpl
    def runner_call_finished(self, call: Any, outcome: Any) -> None:
        assert call.id not in self.runner, f"call {call.id} finished twice on the runner"
        self.runner[call.id] = outcome


async def send(platform: Any, ledger: Ledger, fn_id: str, spec: Spec) -> Seen:
    seen = Seen(spec)
    if spec.kind == "hangup":  # a client whose connection closes (no request cancelled on its side: just gone)
        host, port = platform.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        head = (f"POST /invoke/{fn_id} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"{TAG_HEADER}: {spec.n}\r\nContent-Length: {len(spec.body)}\r\n\r\n")
        writer.write(head.encode() + spec.body)
        await writer.drain()
        await ledger.until_taken(spec)
        await asyncio.sleep(spec.give_up_after_s)
        writer.close()
        await writer.wait_closed()
        return seen
    if spec.kind == "cancel":
        task = asyncio.ensure_future(platform.invoke(fn_id, spec.body, headers={TAG_HEADER: str(spec.n)}))
        await ledger.until_taken(spec)
        done, _ = await asyncio.wait({task}, timeout=spec.give_up_after_s)
        assert not done, f"call #{spec.n} answered before its client left: {task.result()}"
        task.cancel()  # aiohttp closes the connection of a request cancelled mid-way
        await asyncio.gather(task, return_exceptions=True)
        return seen
    task = asyncio.ensure_future(platform.invoke(fn_id, spec.body))
    try:
        result = await asyncio.wait_for(task, CLIENT_BOUND_S)
    except TimeoutError:
        seen.hung = True
        return seen
    seen.status, seen.body, seen.call_id = result.status, result.body, result.headers.get("Fn-Call-Id", "")
    return seen


async def soak(platform: Any, ledger: Ledger, fn_ids: list[str], specs: list[Spec]) -> list[Seen]:
    queue = collections.deque(specs)
    seen: list[Seen] = []
    stop_at = time.monotonic() + TRAFFIC_LIMIT_S

    async def client() -> None:
        while queue and time.monotonic() < stop_at:
            spec = queue.popleft()
            seen.append(await send(platform, ledger, fn_ids[spec.fn], spec))

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return seen


async def watch_budgets(runners: list[Any]) -> None:
    """Until cancelled, every 20 ms: each runner's reserved memory is what its containers, up or starting, hold,
    and never more than its budget (a reservation lost or kept twice shows here before the end)."""
    while True:
        for node in runners:
            agent = node.agent
            held = sum(c.memory for c in agent.containers())
            held += sum(q.starting * call_needs(q.call.memory, q.call.tmpfs_size, q.call.cpus)[0] for q in agent.queues.values())
            budget = agent.budget
            assert 0 <= budget.used_memory <= budget.total_memory, (node.address, budget)
            assert budget.used_memory == held, (node.address, budget, held)
        await asyncio.sleep(0.02)


def runner_samples(runner: Any) -> dict[str, float]:
    """What the runner serves on /metrics (`fn-core runner`'s HTTP port), read from the node itself."""
    return metric_samples(runner.core.render_metrics())


def calls_total(samples: dict[str, float], result: str) -> int:
    return int(samples[f'fn_runner_calls_total{{result="{result}"}}'])


def our_containers(platform: Any) -> list[Any]:
    tag = label_tag(platform.config)
    return platform.docker.containers.list(all=True, filters={"label": f"fn-agent-classifier={tag}"}, ignore_removed=True)


@pytest.mark.parametrize("mode", ["blocking", "non-blocking"])
async def test_a_runner_soaked_in_mixed_traffic_answers_every_call_as_asked_and_ends_whole_with_counts_that_add_up(
    fn_platform, echo_image, mode
):
    setup = MODES[mode]
    seed, budget = setup.seed, setup.budget_mb * MB
    ledger = Ledger()
    env = {
        "FN_MAX_TOTAL_MEMORY_BYTES": str(budget),
        "FN_ENABLE_NB_RESOURCE_TRACKER": "true" if mode == "non-blocking" else "false",
        "FN_PLACER_TIMEOUT": str(PLACER_TIMEOUT_S),
        # refused calls come back every 50 ms, not 10: on 2 cores the NACK ping-pong of ten waiting calls at 100 Hz
        # would starve the calls that run
        "FN_RETRY_ALL_DELAY_MSECS": "50",
        "FN_FREEZE_IDLE_MSECS": "50",  # Fn's default: idle containers are paused, and unpaused for their next call
    }
    platform = await fn_platform(runners=setup.runners, env=env, plugins=(ledger,))
    runners = platform.runners
    addresses = {r.address for r in runners}
    fn_ids = [
        (await platform.deploy(echo_image, name=f"churn{i}", memory=memory, timeout=FN_TIMEOUT_S,
                               idle_timeout=FN_IDLE_TIMEOUT_S))["id"]
        for i, memory in enumerate(FN_MEMORY_MB)
    ]
    assert all(r.agent.budget.total_memory == budget for r in runners)
    specs = make_mix(seed)

    watch = asyncio.create_task(watch_budgets(runners))
    try:
        seen = await soak(platform, ledger, fn_ids, specs)
    finally:
        watch.cancel()
    books = await asyncio.gather(watch, return_exceptions=True)
    why = f"(mode {mode}, seed {seed}, {len(seen)} calls sent)"

    # --- every client that waited got the answer its call asks for, and never waited without end
    assert isinstance(books[0], asyncio.CancelledError), f"a runner's memory budget went wrong mid-traffic {why}: {books[0]}"
    assert not [s.spec.n for s in seen if s.hung], f"calls with no answer within {CLIENT_BOUND_S} s {why}"
    wrong = []
    for s in seen:
        if s.spec.kind in GIVE_UP:
            continue
        status, message = EXPECTED[s.spec.kind]
        got = s.body if message is None else json.loads(s.body) if s.body[:1] == b"{" else s.body
        want = s.spec.body if message is None else message
        if (s.status, got) != (status, want):
            wrong.append((s.spec.n, s.spec.kind, s.spec.fn, s.status, s.body[:200]))
    assert not wrong, f"calls answered other than asked (n, kind, fn, status, body) {why}: {wrong}"
    by_kind = collections.Counter(s.spec.kind for s in seen)
    assert len(seen) >= 100 and all(by_kind[k] for k in KINDS), f"too little of the mix was sent {why}: {by_kind}"

    # --- the LB: every call finished once, as its client saw it; none in flight
    await wait_until(lambda: platform.lb.agent.metrics.inflight == 0, "no call in flight on the LB", timeout_s=15)
    await wait_until(lambda: len(ledger.lb) == len(seen), f"every call reported to call_finished {why}", timeout_s=15)
    answered = [s for s in seen if s.status]
    for s in answered:
        outcome = ledger.lb[s.call_id]
        assert outcome.status == s.status and outcome.runner in addresses, (s.spec, outcome)
    gave_up = [o for o in ledger.lb.values() if o.status == 444]
    assert len(gave_up) == sum(by_kind[k] for k in GIVE_UP), f"444 outcomes {why}"
    assert all(o.error == "Client cancelled context" for o in gave_up)
    lb_samples = metric_samples(await (await platform.session.get(f"{platform.url}/metrics")).text())
    client_statuses = collections.Counter(s.status for s in answered) + collections.Counter({444: len(gave_up)})
    lb_statuses = {int(k.split('"')[1]): int(v) for k, v in lb_samples.items() if k.startswith("fn_lb_calls_total{")}
    assert lb_statuses == dict(client_statuses), why
    assert lb_samples["fn_lb_calls_inflight"] == 0
    assert lb_samples["fn_lb_placer_timeouts_total"] == 0, f"calls that found no room within {PLACER_TIMEOUT_S} s {why}"

    # --- the runners after the traffic: their idle containers go, and each is whole again
    def whole(node: Any) -> bool:
        agent = node.agent
        return (not agent.containers() and not agent.container_states()["starting"] and not agent.queues
                and not agent._tasks and node.core.active == 0 and agent.calls_waiting() == 0)

    await wait_until(lambda: all(whole(r) for r in runners), f"every container gone idle and removed, no agent task left {why}",
                     timeout_s=30)
    samples = [runner_samples(r) for r in runners]
    for node, sample in zip(runners, samples, strict=True):
        assert sample["fn_runner_memory_free_bytes"] == budget, why
        assert sample["fn_runner_cpu_free_mcpus"] == node.agent.budget.total_mcpus, why
        assert (sample["fn_runner_calls_running"], sample["fn_runner_calls_waiting"]) == (0, 0), why
        status = node.core.live_status()
        assert (status.custom_status["runner.mem_free_bytes"], status.custom_status["runner.containers"]) == (str(budget), "0")
    assert not our_containers(platform), f"containers left on the engine after they went idle {why}"

    # --- the runners' counts add up against the clients' and the LB's
    results = {r: sum(calls_total(sample, r) for sample in samples) for r in ("success", "error", "refused", "cancelled")}
    attempts = sum(o.attempts for o in ledger.lb.values())
    received = sum(r.core.requests_received for r in runners)
    assert received == attempts == sum(results.values()), (received, attempts, results, why)
    handled = sum(r.core.requests_handled for r in runners)  # Status: the NACKs are received, not handled
    assert handled == results["success"] + results["error"] + results["cancelled"], (handled, results, why)
    assert results["success"] == sum(1 for s in answered if s.status == 200), (results, why)
    assert results["error"] == sum(1 for s in answered if s.status != 200), (results, why)
    # a client that left while the LB offered its call: the runner counts it cancelled, or refused when its NACK was
    # on the way as the LB dropped the stream (the LB never read it: no retry counted, the outcome names the runner)
    retries = lb_samples["fn_lb_placement_retries_total"]
    on_runner = sum(1 for o in gave_up if o.runner)  # left while the call was offered to a runner (not between tries)
    assert results["refused"] + results["cancelled"] == retries + on_runner, (results, retries, on_runner, why)
    assert retries <= results["refused"] and results["cancelled"] <= on_runner, (results, retries, on_runner, why)
    errors: collections.Counter[int] = collections.Counter()
    for sample in samples:
        errors.update({int(k.split('"')[1]): int(v) for k, v in sample.items() if k.startswith("fn_runner_call_errors_total{")})
    assert +errors == collections.Counter(s.status for s in answered if s.status != 200), why
    if mode == "blocking":
        assert results["refused"] == 0, why  # a blocking runner waits for room: it never refuses
    await wait_until(lambda: len(ledger.runner) == results["success"] + results["error"] + results["cancelled"],
                     "the runners' listeners told of every call they took", timeout_s=5)
    for s in answered:
        assert ledger.runner[s.call_id].status == s.status, (s.spec, ledger.runner[s.call_id])

    # --- at the stop: nothing of the platform left on the engine, no agent task left behind
    await platform.stop()
    assert not [t for r in runners for t in (*r.agent._tasks, *r.agent._launching)], why
    assert not our_containers(platform), why



@pytest.mark.parametrize("dropped", ["before its try", "mid-body"])
async def test_a_call_whose_lb_drops_the_stream_before_the_runner_has_it_whole_counts_as_cancelled(start, rc, dropped):
    """The soak's `requests received == calls by result` at the moments its timing rarely hits: a client leaving
    as the LB opens the stream, or while the LB streams the call's body. Status counted such a call as received,
    fn_runner_calls_total in no result at all, and the runner's listeners never heard of it."""
    from fn_core.proto import runner_pb2 as pb
    from fn_core.proto import runner_pb2_grpc

    heard: list[Any] = []

    class Listener:
        @hookimpl
        def runner_call_finished(self, call: Any, outcome: Any) -> None:
            heard.append((call.id, outcome.status))

    node = await start(plugins=[("listener", Listener())])
    call = rc.call()
    async with grpc.aio.insecure_channel(node.address) as channel:
        stream = runner_pb2_grpc.RunnerProtocolStub(channel).Engage()
        await stream.wait_for_connection()
        if dropped == "mid-body":
            await stream.write(pb.ClientMsg(**{"try": pb.TryCall(models_call_json=call.to_json())}))
            await stream.write(pb.ClientMsg(data=pb.DataFrame(data=b"the first part of the body", eof=False)))
        await wait_until(lambda: node.core.active == 1, "the call received")
        stream.cancel()  # as the LB does when its client goes away
        await wait_until(lambda: node.core.active == 0, "the call ended on the runner")
    samples = runner_samples(node)
    assert (node.core.requests_received, node.core.requests_handled) == (1, 1)
    assert [calls_total(samples, r) for r in ("success", "error", "refused", "cancelled")] == [0, 0, 0, 1]
    if dropped == "mid-body":  # the call was known: its listeners hear it ended as Fn's 444, as one cancelled waiting
        await wait_until(lambda: bool(heard), "the listener told")
        assert heard == [(call.id, 444)]
    assert rc.containers() == []  # nothing ran
