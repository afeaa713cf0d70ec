"""An operator's week with real processes: the runners restarted one by one under load, the LB restarted under
load, and a runner stopped with a call that outlives its grace (`fn-core lb`, `fn-core runner`, Docker, fdk echo).

Which process ran a call is read from the spans each runner process sends to a Zipkin collector (FN_ZIPKIN_URL):
a runner sends one per call it ran (never for a NACK) and flushes them when it stops, so a call run twice, on an
old runner and again elsewhere, shows as two spans of one call id.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import signal
import struct
import types
from collections.abc import Awaitable, Callable

import aiohttp
import attrs
import pytest

from fn_core.config import load_config
from fn_core.errors import CutAtShutdown
from fn_core.testing import metric_samples, wait_until
from fn_core.transport import h2
from fn_plugins_builtin.placer_ch import fn_hash, jump_hash

from .conftest import post

TIMEOUT = aiohttp.ClientTimeout(total=120)
DEFAULT_GRACE_S = load_config(env={}).shutdown_grace_s  # a node's stop grace when FN_SHUTDOWN_GRACE is not set
CLIENTS = 6
MAX_CALLS_PER_CLIENT = 400  # the load's bound in calls (each takes >= 150 ms): it ends long before, when told to


@attrs.define
class Answer:
    seq: int
    fn_id: str
    sent: bytes
    status: int | None  # None: no HTTP answer (the error is in `body`)
    body: bytes
    call_id: str
    phase: str  # what the operator was doing when the call was sent


async def poll(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> None:
    """Until ``condition()`` (a coroutine: it asks a node) is true, every 50 ms; a bounded wait."""
    for _ in range(int(timeout_s / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached in {timeout_s:g} s: {what}")


async def exit_code(proc, timeout_s: float) -> int:
    """Wait for the process in a thread: the test's loop (the Zipkin collector) keeps answering its last spans."""
    return await asyncio.to_thread(proc.popen.wait, timeout_s)


def runner_spans(collector) -> collections.Counter[str]:
    """How many times each call id ran on a runner process."""
    return collections.Counter(
        s["tags"]["fn.call_id"] for s in collector.spans if s["localEndpoint"]["serviceName"] == "fn-core-runner"
    )


async def deploy_fns_homed_on(session: aiohttp.ClientSession, image: str, deploy_echo, runners: int) -> list[str]:
    """One echo fn per runner, fn i's `ch` home being runner i (fns are made until each runner has one)."""
    first = await deploy_echo(session, image)
    by_home = {jump_hash(fn_hash(first["fn"]["id"]), runners): first["fn"]["id"]}
    for n in range(40):  # bounded: each new fn lands on a given runner with probability 1/3
        if len(by_home) == runners:
            break
        spec = {"name": f"echo{n}", "app_id": first["app"]["id"], "image": image}
        async with session.post("/v2/fns", json=spec) as r:
            assert r.status == 200, await r.text()
            fn_id = (await r.json())["id"]
        by_home.setdefault(jump_hash(fn_hash(fn_id), runners), fn_id)
    assert len(by_home) == runners
    return [by_home[i] for i in range(runners)]


@pytest.mark.parametrize("placer", ["ch", "naive"])
async def test_runners_restarted_one_at_a_time_under_load_fail_no_call_and_run_none_twice(
    platform, deploy_echo, zipkin_collector, placer
):
    env = {"FN_ZIPKIN_URL": zipkin_collector.url}
    runners = [await platform.runner(**env) for _ in range(3)]
    addresses = [r.address for r in runners]
    lb = await platform.lb(runners, placer=placer)
    answers: list[Answer] = []
    phase = "before"
    done = asyncio.Event()
    counter = itertools.count()

    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fns = await deploy_fns_homed_on(s, platform.image, deploy_echo, 3)
        for fn_id in fns:  # a hot container each, so that the load starts warm
            assert (await post(s, f"/invoke/{fn_id}", b"warm"))[::2] == (200, b"warm")

        async def client(k: int) -> None:
            fn_id = fns[k % len(fns)]
            for _ in range(MAX_CALLS_PER_CLIENT):
                if done.is_set():
                    return
                seq, sent_in = next(counter), phase
                sent = json.dumps({"sleep_ms": 150 + 50 * (k % 3), "seq": seq}).encode()
                try:
                    status, headers, body = await post(s, f"/invoke/{fn_id}", sent)
                except aiohttp.ClientError as exc:
                    answers.append(Answer(seq, fn_id, sent, None, repr(exc).encode(), "", sent_in))
                    continue
                answers.append(Answer(seq, fn_id, sent, status, body, headers.get("Fn-Call-Id", ""), sent_in))

        clients = [asyncio.create_task(client(k)) for k in range(CLIENTS)]
        try:
            for i in range(3):
                old = runners[i]
                # SIGTERM while the runner is running a call of the load
                await poll(functools.partial(_active, old), f"runner {i} running a call", 30)
                phase = f"stopping runner {i}"
                old.proc.popen.send_signal(signal.SIGTERM)
                assert await exit_code(old.proc, 60) == 0, old.proc.log()
                assert f"runner {old.address} stopped" in old.proc.log()
                phase = f"runner {i} down"
                new = await platform.runner(grpc_port=old.port, **env)  # in its place: the LB's list names it
                runners[i] = new
                phase = f"runner {i} back"
                await poll(functools.partial(_handled, new, 3), f"the LB placing calls on the new runner {i} again", 30)
            phase = "after"  # every runner restarted and taking calls again
            await poll(functools.partial(_all_handled, runners, 8), "every new runner serving the load", 30)
        finally:
            done.set()
            await asyncio.gather(*clients)

    # no client saw the restarts: each call answered 200 with its own body
    failed = [a for a in answers if (a.status, a.body) != (200, a.sent)]
    assert not failed, failed[:10]
    assert {a.phase for a in answers} >= {"stopping runner 0", "runner 1 down", "after"}
    assert len(answers) < CLIENTS * MAX_CALLS_PER_CLIENT  # the load lasted until told to stop

    # every call ended exactly once on the LB, and ran exactly once on the runners, old or new
    def lines() -> list[tuple[str, str, str, int, int]]:
        return [line for line in lb.proc.call_lines() if line[1] in fns]

    await wait_until(lambda: len(lines()) >= len(answers) + 3, "a call line for every call")
    ids = [line[0] for line in lines()]
    assert len(ids) == len(set(ids)) == len(answers) + 3
    assert {a.call_id for a in answers} <= set(ids)
    assert all(status == 200 for _, _, _, status, _ in lines())
    await wait_until(lambda: len(runner_spans(zipkin_collector)) >= len(ids), "a runner span for every call", timeout_s=20)
    ran = runner_spans(zipkin_collector)
    assert set(ran) == set(ids) and set(ran.values()) == {1}, [c for c, n in ran.items() if n > 1]

    # the LB said each runner's outage at most once, and its end as often
    log = lb.proc.log()
    for address in addresses:
        unreachable = log.count(f"runner unreachable, skipped until it answers runner={address} ")
        back = log.count(f"runner reachable again runner={address}\n")
        assert unreachable <= 1 and back == unreachable, (address, unreachable, back)
    assert "was lost during call" not in log and "without a result" not in log
    if placer == "ch":  # once every runner was back, each fn's calls went home again
        by_id = {line[0]: line for line in lines()}
        late = [a for a in answers if a.phase == "after"]
        assert late and all(by_id[a.call_id][2] == addresses[fns.index(a.fn_id)] for a in late)


async def _active(runner) -> bool:
    return (await runner.status()).active >= 1


async def _handled(runner, n: int) -> bool:
    return (await runner.status()).requests_handled >= n


async def _all_handled(runners, n: int) -> bool:
    return all([await _handled(r, n) for r in runners])


async def test_lb_restarted_under_load_finishes_its_calls_and_the_new_one_serves_the_same_fns(
    platform, deploy_echo, zipkin_collector
):
    env = {"FN_ZIPKIN_URL": zipkin_collector.url}
    runners = [await platform.runner(**env) for _ in range(2)]
    lb = await platform.lb(runners, placer="naive")
    answers: list[Answer] = []
    phase = "before"
    done = asyncio.Event()
    counter = itertools.count()

    async def client(session: aiohttp.ClientSession, fn_id: str, sleep_ms: int, calls: int) -> None:
        for _ in range(calls):
            if done.is_set():
                return
            seq, sent_in = next(counter), phase
            sent = json.dumps({"sleep_ms": sleep_ms, "seq": seq}).encode()
            try:
                status, headers, body = await post(session, f"/invoke/{fn_id}", sent)
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
                # the LB not listening (refused), or a keep-alive connection it closed as the request came
                answers.append(Answer(seq, fn_id, sent, None, repr(exc).encode(), "", sent_in))
                await asyncio.sleep(0.05)
                continue
            answers.append(Answer(seq, fn_id, sent, status, body, headers.get("Fn-Call-Id", ""), sent_in))

    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fns = await deploy_fns_homed_on(s, platform.image, deploy_echo, 2)
        for fn_id in fns:
            assert (await post(s, f"/invoke/{fn_id}", b"warm"))[::2] == (200, b"warm")
        # four long calls, in flight when the LB is told to stop
        long_calls = [asyncio.create_task(post(s, f"/invoke/{fns[k % 2]}", json.dumps({"sleep_ms": 3000, "k": k}).encode()))
                      for k in range(4)]

        async def placed() -> bool:
            return sum([(await r.status()).active for r in runners]) >= 4

        await poll(placed, "the four long calls on the runners", 30)
        # and a steady stream of short ones, which goes on through the restart
        load = [asyncio.create_task(client(s, fns[k % 2], 100, MAX_CALLS_PER_CLIENT)) for k in range(4)]
        await asyncio.sleep(0.5)
        phase = "stopping"
        lb.proc.popen.send_signal(signal.SIGTERM)
        long_answers = await asyncio.gather(*long_calls)
        # the LB exits, cleanly, within its grace
        assert await exit_code(lb.proc, DEFAULT_GRACE_S + 5) == 0, lb.proc.log()  # FN_SHUTDOWN_GRACE not set

        phase = "down"
        new_lb = await platform.lb(runners, placer="naive", port=lb.port)  # same port, same store
        phase = "back"
        for fn_id in fns:  # the same fns, at once, by the same ids
            status, _, body = await post(s, f"/invoke/{fn_id}", b"after the restart")
            assert (status, body) == (200, b"after the restart")
        async with s.get(f"/v2/fns/{fns[0]}") as r:
            assert r.status == 200 and (await r.json())["id"] == fns[0]

        async def served_after_restart() -> bool:
            return sum(1 for a in answers if a.phase == "back" and a.status == 200) >= 8

        await poll(served_after_restart, "the load served by the new LB", 30)
        done.set()
        await asyncio.gather(*load)

    for k, (status, _, body) in enumerate(long_answers):  # the calls under way when SIGTERM came ended well
        assert (status, json.loads(body)) == (200, {"sleep_ms": 3000, "k": k})
    old_log = lb.proc.log()
    assert "LB shutting down: finishing in-flight calls" in old_log and f"LB {lb.url} stopped" in old_log
    assert sum(1 for *_, status, _ in lb.proc.call_lines() if status == 200) >= 4 + 2 + 1

    # the short calls: served before and after; a call sent as the LB stopped was served, refused with Fn's 503, or
    # not taken at all (the connection refused or closed): never a 5xx of a call run in part, never a wrong body
    shutting_down = {"message": "Server is shutting down"}
    assert {"before", "stopping", "back"} <= {a.phase for a in answers}
    for a in answers:
        if a.phase in ("before", "back"):
            assert (a.status, a.body) == (200, a.sent), a
        elif a.status is not None:
            assert (a.status, a.body) == (200, a.sent) or (a.status, json.loads(a.body)) == (503, shutting_down), a

    # no call ran twice: each call id is on one LB only, once, and ran on one runner once; and every call that ran
    # is one whose client got its 200 (none ran unseen behind a closed connection)
    answered = sum(1 for a in answers if a.status == 200) + len(long_answers) + 2 * len(fns)  # + warm + after

    def ok_lines() -> int:
        return sum(1 for line in lb.proc.call_lines() + new_lb.proc.call_lines() if line[3] == 200)

    # an LB logs a call just after answering it: the new one's last lines may land a moment after our last answer
    await wait_until(lambda: ok_lines() >= answered, "a call line for every call answered 200", timeout_s=10)
    lines = lb.proc.call_lines() + new_lb.proc.call_lines()
    ids = [line[0] for line in lines]
    assert len(ids) == len(set(ids))
    assert ok_lines() == answered
    ran_ids = {line[0] for line in lines if line[3] == 200}
    await wait_until(lambda: ran_ids <= set(runner_spans(zipkin_collector)), "a runner span for every call", timeout_s=20)
    assert {n for c, n in runner_spans(zipkin_collector).items() if c in ran_ids} == {1}


RUNNER_GRACE_S = 4  # FN_SHUTDOWN_GRACE: the operator's, not the 30 s default


async def start_long_call(s: aiohttp.ClientSession, fn_id: str, runner) -> asyncio.Task:
    """A 20 s call of ``fn_id``, once it runs on ``runner`` (the fn warmed there first)."""
    assert (await post(s, f"/invoke/{fn_id}", b"warm"))[::2] == (200, b"warm")
    call = asyncio.create_task(post(s, f"/invoke/{fn_id}", json.dumps({"sleep_ms": 20_000}).encode()))

    async def running() -> bool:
        return (await runner.status()).active >= 1

    await poll(running, "the long call running", 30)
    return call


async def test_a_call_outliving_the_runners_grace_is_cut_with_500_and_not_run_again(platform, deploy_echo, zipkin_collector):
    env = {"FN_ZIPKIN_URL": zipkin_collector.url, "FN_SHUTDOWN_GRACE": str(RUNNER_GRACE_S)}
    runners = [await platform.runner(**env) for _ in range(2)]
    lb = await platform.lb(runners, placer="ch")
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        ids = await deploy_echo(s, platform.image, timeout=120)  # the fn's own timeout is longer than the grace
        fn_id = ids["fn"]["id"]
        home, other = runners[jump_hash(fn_hash(fn_id), 2)], runners[1 - jump_hash(fn_hash(fn_id), 2)]
        long_call = await start_long_call(s, fn_id, home)  # well past the runner's grace
        home.proc.popen.send_signal(signal.SIGTERM)
        stopping = asyncio.get_running_loop().time()
        # no hang: the answer comes when the grace is over (bounded here by the grace and a margin)
        status, headers, body = await asyncio.wait_for(long_call, RUNNER_GRACE_S + 10)
        cut_after_s = asyncio.get_running_loop().time() - stopping
        assert (status, json.loads(body)) == (500, {"message": CutAtShutdown.message})
        assert cut_after_s >= RUNNER_GRACE_S - 0.5  # the grace was given: FN_SHUTDOWN_GRACE, not cut at once
        call_id = headers["Fn-Call-Id"]
        assert await exit_code(home.proc, 15) == 0, home.proc.log()
        assert f"finishing in-flight calls (at most {RUNNER_GRACE_S} s)" in home.proc.log()

        # the LB goes on with the other runner
        status, _, body = await post(s, f"/invoke/{fn_id}", b"next")
        assert (status, body) == (200, b"next")

    # the cut call was committed: not sent to the other runner, one attempt, and its line says why it ended
    line = next(line for line in lb.proc.call_lines() if line[0] == call_id)
    assert line[2:] == (home.address, 500, 1)
    assert f"call_id={call_id}" in lb.proc.log() and CutAtShutdown.message in lb.proc.log()
    assert (await other.status()).requests_received == 1  # the "next" call only
    await wait_until(lambda: call_id in runner_spans(zipkin_collector), "the cut call's span from its runner", timeout_s=10)
    assert runner_spans(zipkin_collector)[call_id] == 1
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(other.url + "/metrics") as r:
        assert metric_samples(await r.text())['fn_runner_calls_total{result="success"}'] == 1


async def test_an_lb_given_a_short_shutdown_grace_cuts_a_long_call_then_and_exits(platform, deploy_echo):
    """`fn-core lb` with FN_SHUTDOWN_GRACE=2 (an orchestrator that kills at 5 s): SIGTERM during a 20 s call."""
    runner = await platform.runner()
    lb = await platform.lb([runner], FN_SHUTDOWN_GRACE="2")
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image, timeout=60))["fn"]["id"]
        long_call = await start_long_call(s, fn_id, runner)
        lb.proc.popen.send_signal(signal.SIGTERM)
        # bounded by the grace and a margin, far below the call's 20 s and the default grace's 30 s
        assert await exit_code(lb.proc, 2 + 3) == 0, lb.proc.log()
        with pytest.raises(aiohttp.ClientError):  # its connection was cut at the grace's end: nothing to answer
            await asyncio.wait_for(long_call, 5)
    assert "LB shutting down: finishing in-flight calls (at most 2 s)" in lb.proc.log()
    [line] = [line for line in lb.proc.call_lines() if line[1] == fn_id and line[3] != 200]
    assert line[2:] == (runner.address, 500, 1)  # placed once and cut: a 500, never the 503 that says "not placed"


class _StoppingRunner(asyncio.Protocol):
    """A runner's gRPC server as it stops: a connection accepted then is told at once that no stream will be taken
    (SETTINGS, then GOAWAY with last stream 0, as grpc-go's GracefulStop and `GrpcServer.stop` say it)."""

    def connection_made(self, transport) -> None:
        transport.write(h2.settings_frame({}) + h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", 0, h2.NO_ERROR)))


async def test_a_runner_that_says_goaway_as_the_lb_connects_gets_no_call_and_the_call_runs_on_the_next(platform, deploy_echo):
    """The LB (re)connecting to a runner the moment it begins to stop: the call never left the LB, so it is not
    placed there and goes to the next runner, as a refused stream does, rather than failing."""
    runner = await platform.runner()
    server = await asyncio.get_running_loop().create_server(_StoppingRunner, "127.0.0.1", 0)
    try:
        stopping = types.SimpleNamespace(address=f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        lb = await platform.lb([stopping, runner], placer="naive")  # every second call tries the stopping one first
        async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
            fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
            for n in range(4):
                status, _, body = await post(s, f"/invoke/{fn_id}", f"call {n}".encode())
                assert (status, body) == (200, f"call {n}".encode())
    finally:
        server.close()
    assert (await runner.status()).requests_handled == 4
    lines = [line for line in lb.proc.call_lines() if line[1] == fn_id]
    assert sorted(attempts for *_, attempts in lines) == [1, 1, 2, 2]
    assert {line[2] for line in lines} == {runner.address}
