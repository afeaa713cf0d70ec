"""An Fn LB drives our runner, and our LB an Fn runner, through grpc-go: the library Fn's nodes are built on.

`fnlb` and `fnrunner` (`go_tools.py`) speak RunnerProtocol as Fn's LB and pure runner do, from Go code that Fn's
protoc-gen-go makes from our `proto/runner.proto`. Our nodes are real processes; our runner runs the fdk echo
function in real Docker.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import types
from typing import Any

import aiohttp
import pytest

from fn_core.testing import wait_until
from fn_plugins_builtin.placer_ch import fn_hash, jump_hash

from .conftest import credentials, tls_env
from .engine_relay import fn_homed_on, runner_metrics
from .go_tools import drive

TIMEOUT = aiohttp.ClientTimeout(total=120)
MB = 1024 * 1024


def pattern_sha256(size: int, seed: int) -> str:
    """The digest of fnlb's ``body_size`` bytes of ``(seed + i) % 251``."""
    block = bytes((seed + i) % 251 for i in range(251))
    body = (block * (size // 251 + 1))[:size]
    return hashlib.sha256(body).hexdigest()


def fn_call(call_id: str, fn_id: str, image: str, **fields: Any) -> str:
    """A call's JSON as Fn's LB sends it in TryCall (models.Call's JSON names)."""
    call = {"id": call_id, "app_id": "app-interop", "fn_id": fn_id, "image": image, "type": "sync",
            "format": "http-stream", "timeout": 30, "idle_timeout": 30, "memory": 128, "cpus": "",
            "config": {"FN_APP_NAME": "interop", "FN_FN_NAME": fn_id}, "annotations": {},
            "headers": {"Content-Type": ["application/octet-stream"]}, "method": "POST",
            "url": f"http://127.0.0.1:8080/invoke/{fn_id}", "created_at": "2026-11-24T06:00:00.000Z", **fields}
    return json.dumps(call)


def planned(call_id: str, fn_id: str, image: str, size: int = 0, seed: int = 0, **plan: Any) -> dict[str, Any]:
    return {"call_json": fn_call(call_id, fn_id, image), "slot_hash_id": hashlib.sha256(fn_id.encode()).hexdigest(),
            "body_size": size, "seed": seed, **plan}


async def settled(runner: Any, handled: int) -> Any:
    """The runner's Status once it counts ``handled`` calls (a call counts once its bookkeeping, after its answer,
    is done)."""
    for _ in range(100):  # bounded: ~2 s
        status = await runner.status()
        if status.requests_handled >= handled:
            return status
        await asyncio.sleep(0.02)
    return status


async def test_an_fn_lb_on_grpc_go_runs_calls_on_our_runner(platform, go_tools):
    """Bodies from none to 5 MiB each way (past every HTTP/2 window, so grpc-go's flow control and its BDP
    PINGs meet ours), then 24 calls over 3 fns 8 at a time: each answers its own body, in the order Fn's LB
    reads (result start, data, finished), and the runner's Status counts them."""
    runner = await platform.runner()
    sizes = [0, 5, 100_000, MB, 5 * MB]
    sequential = [planned(f"seq-{i}", "fn-a", platform.image, size, seed=i) for i, size in enumerate(sizes)]
    result = await drive(go_tools.fnlb, runner.address, sequential)
    assert result["grpc_go"].startswith("1.")
    for i, (size, call) in enumerate(zip(sizes, result["calls"], strict=True)):
        assert call["error"] == "" and call["status"] == 200, call
        assert (call["body_len"], call["body_sha256"]) == (size, pattern_sha256(size, seed=i))
        assert call["messages"] == (["start", "data", "finished"] if size else ["start", "finished"])
        assert call["finished"]["success"] and call["finished"]["details"] == f"seq-{i}"
        assert ["Content-Type", "application/octet-stream"] in call["headers"]

    concurrent = [planned(f"par-{i}", f"fn-{i % 3}", platform.image, 20_000 + i, seed=i) for i in range(24)]
    result = await drive(go_tools.fnlb, runner.address, concurrent, concurrency=8, status=True)
    for i, call in enumerate(result["calls"]):
        assert (call["error"], call["status"], call["finished"]["details"]) == ("", 200, f"par-{i}"), call
        assert call["body_sha256"] == pattern_sha256(20_000 + i, seed=i)
    assert result["status"]["requests_received"] == len(sizes) + 24  # grpc-go asked our Status
    status = await settled(runner, len(sizes) + 24)
    assert (status.requests_handled, status.active) == (len(sizes) + 24, 0)


async def test_our_runner_nacks_an_fn_lb_on_grpc_go_as_fn_does(platform, go_tools):
    """A full runner's NACK reaches grpc-go as Fn's LB reads one: a CallFinished (503, not successful) before any
    CallResultStart, so the LB may send the call elsewhere; the call was not run."""
    runner = await platform.runner(FN_ENABLE_NB_RESOURCE_TRACKER="1", FN_MAX_TOTAL_MEMORY_BYTES=str(160 * MB))
    hold = json.dumps({"sleep_ms": 3000})
    calls = [{**planned("holds-the-room", "fn-a", platform.image), "body": hold},
             {**planned("finds-it-full", "fn-b", platform.image, 4), "delay_ms": 1500}]
    result = await drive(go_tools.fnlb, runner.address, calls, concurrency=2, status=True)
    held, refused = result["calls"]
    assert (held["status"], held["error"], held["finished"]["success"]) == (200, "", True), held
    assert refused["nack"] and refused["messages"] == ["finished"], refused
    assert refused["finished"]["error_code"] == 503 and not refused["finished"]["success"]
    assert result["status"]["requests_received"] == 2  # grpc-go asked our Status
    status = await settled(runner, 1)
    assert (status.requests_received, status.requests_handled) == (2, 1)  # the NACKed call never ran


async def test_a_trycall_our_runner_cannot_read_is_a_400_an_fn_lb_reads_with_why(platform, go_tools):
    """Not JSON, no call id, a field of the wrong type: each is a CallFinished with 400 and what is wrong, before any
    result (Fn's LB answers its client with it; not a NACK, which would send it to every runner in turn)."""
    runner = await platform.runner()
    texts = ("not json", "{}", json.dumps({"id": "c1", "image": 5}),
             # each of these used to end the stream with no finished (the LB saw a lost runner, its client a 500)
             json.dumps({"id": "c\ud800", "image": "i"}), json.dumps({"id": "c2", "image": "i", "cpus": "inf"}),
             json.dumps({"id": "c3", "image": "i", "config": {"K": 1}}), '{"id": "c4", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    calls = [{**planned("unused", "fn-a", platform.image), "call_json": text} for text in texts]
    result = await drive(go_tools.fnlb, runner.address, calls)
    finishes = [(c["messages"], c["nack"], c["finished"]["error_code"], c["finished"]["error_str"]) for c in result["calls"]]
    assert [f[:3] for f in finishes] == [(["finished"], False, 400)] * len(texts)
    assert finishes[0][3].startswith("invalid call: call JSON is not valid JSON")
    assert [f[3] for f in finishes[1:]] == [
        "invalid call: call JSON has no id",
        "invalid call: call JSON field 'image' must be a string",
        "invalid call: call JSON field 'id' holds a lone UTF-16 surrogate",
        "invalid call: cpus must be like '100m' or '0.1', got 'inf'",
        "invalid call: call JSON field 'config' must map names to strings",
        "invalid call: call JSON is nested too deep",
    ]


async def test_our_runner_stopping_gracefully_finishes_an_fn_lbs_calls_in_flight(platform, go_tools):
    """SIGTERM to our runner while a grpc-go LB has four calls running on it: GOAWAY, and each call still answers
    whole."""
    runner = await platform.runner()
    calls = [{**planned(f"in-flight-{i}", f"fn-{i}", platform.image), "body": json.dumps({"sleep_ms": 2500})} for i in range(4)]
    driving = asyncio.ensure_future(drive(go_tools.fnlb, runner.address, calls, concurrency=4))
    for _ in range(300):  # bounded: ~30 s, until the four run in their containers (a call waiting for one gets the NACK)
        if (await runner_metrics(runner))['fn_runner_containers{state="busy"}'] == 4:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the four calls never ran at once")
    runner.proc.popen.send_signal(signal.SIGTERM)
    result = await driving
    assert [(c["error"], c["status"], c["finished"]["details"]) for c in result["calls"]] == [
        ("", 200, f"in-flight-{i}") for i in range(4)]
    assert runner.proc.popen.wait(60) == 0


async def test_an_fn_lb_on_grpc_go_giving_up_on_a_call_cancels_it_on_our_runner(platform, go_tools):
    """Fn's LB gives up on a call when its context ends (the client left, the deadline passed): grpc-go resets the
    stream. Our runner counts that call cancelled, not failed, and serves the next one."""
    runner = await platform.runner()
    calls = [{**planned("warms", "fn-a", platform.image), "body": "warm"},
             {**planned("given-up", "fn-a", platform.image), "body": json.dumps({"sleep_ms": 3000}), "timeout_ms": 800},
             {**planned("next", "fn-a", platform.image), "body": "next"}]
    result = await drive(go_tools.fnlb, runner.address, calls)
    warm, given_up, following = result["calls"]
    assert (warm["status"], following["status"], following["body_len"]) == (200, 200, 4)
    assert "DeadlineExceeded" in given_up["error"] and given_up["finished"] is None
    samples = await runner_metrics(runner)
    assert samples['fn_runner_calls_total{result="cancelled"}'] == 1
    assert samples['fn_runner_calls_total{result="error"}'] == 0
    assert (await settled(runner, 3)).requests_handled == 3  # it was taken (committed): only a NACK is not handled


async def test_our_lb_places_calls_on_an_fn_runner_on_grpc_go(platform, deploy_echo, go_runner):
    """Fn's runner answers our LB: bodies up to 5 MB each way and 16 calls at once come back whole, through /invoke
    and an HTTP trigger, each run once; what the runner sent as headers reaches the client."""
    fn_runner = await go_runner()
    lb = await platform.lb([fn_runner])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        deployed = await deploy_echo(s, platform.image)
        fn_id = deployed["fn"]["id"]
        async with s.post("/v2/triggers", json={"name": "t", "app_id": deployed["app"]["id"], "fn_id": fn_id,
                                                "type": "http", "source": "/echo"}) as r:
            assert r.status == 200, await r.text()
        bodies = [b"", b"hello grpc-go", bytes(range(256)) * 4096, b"x" * (5 * MB)]
        for body in bodies:
            async with s.post(f"/invoke/{fn_id}", data=body) as r:
                assert (r.status, await r.read()) == (200, body)
                assert r.headers["Fn-Go-Runner"] == r.headers["Fn-Call-Id"]  # the Go runner's own header
        async with s.post("/t/sysapp/echo", data=b"by trigger") as r:
            assert (r.status, await r.read()) == (200, b"by trigger")

        async def one(i: int) -> tuple[int, bytes, str]:
            async with s.post(f"/invoke/{fn_id}", data=f"call {i}".encode()) as r:
                return r.status, await r.read(), r.headers["Fn-Call-Id"]

        answers = await asyncio.gather(*(one(i) for i in range(16)))
    assert [a[:2] for a in answers] == [(200, f"call {i}".encode()) for i in range(16)]
    ran = fn_runner.calls("ran")
    assert len(ran) == len(set(ran)) == len(bodies) + 1 + 16  # every call ran, and once
    assert {a[2] for a in answers} <= set(ran)


@pytest.mark.parametrize(("flag", "said"), [("-nack", "nacked"), ("-refuse", "refused")])
async def test_an_fn_runners_nacks_are_retried_and_the_call_runs_once(platform, deploy_echo, go_runner, flag, said):
    """Fn's runner NACKs in two ways: a CallFinished 503 before any result, or the gRPC status 503 itself with no
    message (grpc-go can send a code gRPC does not define; grpcio cannot). Our LB reads both as Fn's LB does, "try
    again": the third attempt runs the call, and only that one."""
    fn_runner = await go_runner(flag, "2")
    lb = await platform.lb([fn_runner])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        async with s.post(f"/invoke/{fn_id}", data=b"third time") as r:
            assert (r.status, await r.read()) == (200, b"third time")
            call_id = r.headers["Fn-Call-Id"]
    assert fn_runner.calls(said) == [call_id, call_id]
    assert fn_runner.calls("ran") == [call_id]
    await wait_until(lambda: lb.proc.call_lines() != [], "the LB's call line")  # written after the answer
    assert [(line[0], line[3], line[4]) for line in lb.proc.call_lines()] == [(call_id, 200, 3)]


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_call_an_fn_runner_broke_with_is_a_500_and_never_tried_again(platform, deploy_echo, go_runner, when):
    """A runner that fails a call with any other gRPC status, before or after its answer began, had the call in hand:
    it may have run. Our LB answers 500 and sends it nowhere else (Fn's rule), though another runner is free."""
    broken = await go_runner("-fail", when)
    spare = await go_runner()
    lb = await platform.lb([broken, spare])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        deployed = await deploy_echo(s, platform.image)
        fn_id = await fn_homed_on(s, deployed["app"]["id"], platform.image, 0, 2, "broken-")
        async with s.post(f"/invoke/{fn_id}", data=b"in hand") as r:
            assert r.status == 500, await r.text()
            call_id = r.headers["Fn-Call-Id"]
    assert broken.calls("failed") == [call_id]
    assert spare.calls("ran") == []
    await wait_until(lambda: lb.proc.call_lines() != [], "the LB's call line")
    assert [(line[0], line[3], line[4]) for line in lb.proc.call_lines()] == [(call_id, 500, 1)]


async def test_our_lbs_pings_stay_within_grpc_gos_default_policy(platform, deploy_echo, go_runner):
    """A grpc-go server with its default keepalive policy drops a connection that PINGs too often ("too_many_pings",
    after three strikes). Our LB PINGs a connection quiet for a second before its next call: ten such calls keep one
    connection, each runs once, and grpc-go never tells our LB to calm down."""
    fn_runner = await go_runner()
    lb = await platform.lb([fn_runner])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        for i in range(10):
            async with s.post(f"/invoke/{fn_id}", data=f"quiet {i}".encode()) as r:
                assert (r.status, await r.read()) == (200, f"quiet {i}".encode())
            await asyncio.sleep(1.2)
    assert len(fn_runner.calls("ran")) == 10
    log = lb.proc.log()
    assert "too_many_pings" not in log and "ENHANCE_YOUR_CALM" not in log
    assert [line for line in log.splitlines() if " WARNING " in line] == []


async def test_our_lbs_checks_beside_a_long_call_stay_within_grpc_gos_default_policy(platform, deploy_echo, go_runner):
    """While a call is long under way the runner sends nothing, and a grpc-go server counts each PING after the first
    as a strike (three drop the connection). Our LB checks a quiet connection before each new call, but at most twice
    between two header blocks of the runner: five calls 1.2 s apart, each held 6 s, share one connection and all
    answer, and grpc-go never tells our LB to calm down."""
    fn_runner = await go_runner("-hold-ms", "6000")
    lb = await platform.lb([fn_runner])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]

        async def call(i: int) -> tuple[int, bytes]:
            await asyncio.sleep(1.2 * i)
            async with s.post(f"/invoke/{fn_id}", data=f"long {i}".encode()) as r:
                return r.status, await r.read()

        answers = await asyncio.gather(*(call(i) for i in range(5)))
    assert answers == [(200, f"long {i}".encode()) for i in range(5)]
    assert len(fn_runner.calls("ran")) == 5
    log = lb.proc.log()
    assert "too_many_pings" not in log and "ENHANCE_YOUR_CALM" not in log and "GOAWAY" not in log
    assert [line for line in log.splitlines() if " WARNING " in line] == []
    assert len(re.findall(r"^connection from ", fn_runner.log(), re.MULTILINE)) == 1


async def test_an_fn_runner_that_ages_its_connections_out_loses_no_call_of_ours(platform, deploy_echo, go_runner):
    """grpc-go's MaxConnectionAge (operators set it so that clients spread over new servers): every second the
    runner says GOAWAY on our LB's connection and closes it once its calls end. Calls under way then finish, and
    new ones go on a new connection: 4 clients calling for 4 s get 200 every time, each call run once."""
    fn_runner = await go_runner("-max-age-ms", "1000", "-hold-ms", "50")
    lb = await platform.lb([fn_runner])
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        until = loop.time() + 4

        async def client(n: int) -> list[tuple[int, bytes]]:
            answers = []
            while loop.time() < until:
                async with s.post(f"/invoke/{fn_id}", data=f"client {n}".encode()) as r:
                    answers.append((r.status, await r.read()))
            return answers

        answers = await asyncio.gather(*(client(n) for n in range(4)))
    for n, each in enumerate(answers):
        assert len(each) >= 10 and set(each) == {(200, f"client {n}".encode())}, each[:5]
    ran = fn_runner.calls("ran")
    assert len(ran) == len(set(ran)) == sum(map(len, answers))
    assert [line for line in lb.proc.log().splitlines() if " WARNING " in line] == []
    assert len(re.findall(r"^connection from ", fn_runner.log(), re.MULTILINE)) >= 3  # aged out, and dialled again


async def test_an_fn_runner_stopping_gracefully_ends_its_call_and_the_next_goes_to_another(platform, deploy_echo, go_runner):
    """grpc-go's GracefulStop (Fn's runner on SIGTERM): GOAWAY, the running call ends whole, and the next call of
    that fn goes to the other runner, not lost on the leaving one."""
    runners = [await go_runner("-hold-ms", "2000") for _ in range(2)]
    lb = await platform.lb(runners)
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        home = runners[jump_hash(fn_hash(fn_id), 2)]
        other = runners[1 - jump_hash(fn_hash(fn_id), 2)]
        running = asyncio.create_task(s.post(f"/invoke/{fn_id}", data=b"ends whole"))
        for _ in range(100):  # bounded: until the home runner holds the call
            if home.calls("holding"):
                break
            await asyncio.sleep(0.05)
        home.popen.send_signal(signal.SIGTERM)
        async with await running as r:
            assert (r.status, await r.read()) == (200, b"ends whole")
            first = r.headers["Fn-Call-Id"]
        assert home.popen.wait(10) == 0
        async with s.post(f"/invoke/{fn_id}", data=b"next") as r:
            assert (r.status, await r.read()) == (200, b"next")
            second = r.headers["Fn-Call-Id"]
    assert home.calls("ran") == [first]
    assert other.calls("ran") == [second]
    await wait_until(lambda: len(lb.proc.call_lines()) == 2, "the LB's two call lines")  # written after the answer
    assert [(line[0], line[3]) for line in lb.proc.call_lines()] == [(first, 200), (second, 200)]



async def test_mtls_between_an_fn_lb_on_grpc_go_and_our_runner(platform, go_tools, pki):
    """Fn's LB with its node certificate (grpc-go's TLS, ALPN h2) runs calls on our runner serving mTLS."""
    runner = await platform.runner(credentials=credentials(pki), **tls_env(pki))
    calls = [planned(f"tls-{i}", "fn-a", platform.image, size, seed=i) for i, size in enumerate([7, MB])]
    result = await drive(go_tools.fnlb, runner.address, calls, tls=pki, status=True)
    for i, call in enumerate(result["calls"]):
        assert (call["error"], call["status"], call["finished"]["details"]) == ("", 200, f"tls-{i}"), call
        assert call["body_sha256"] == pattern_sha256(call["body_len"], seed=i)
    assert [c["body_len"] for c in result["calls"]] == [7, MB]
    assert result["status"]["requests_received"] == 2


async def test_mtls_between_our_lb_and_an_fn_runner_on_grpc_go(platform, deploy_echo, go_runner, pki):
    """Our LB with its node certificate places calls on Fn's runner serving mTLS (grpc-go asks for the LB's
    certificate and checks it against its CA)."""
    fn_runner = await go_runner("-cert", pki["node_cert"], "-key", pki["node_cert_key"], "-ca", pki["node_cert_authority"])
    lb = await platform.lb([fn_runner], **tls_env(pki))
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        for body in (b"over mTLS", b"y" * MB):
            async with s.post(f"/invoke/{fn_id}", data=body) as r:
                assert (r.status, await r.read()) == (200, body)
    assert len(fn_runner.calls("ran")) == 2


async def test_our_lb_accepts_an_fn_runners_certificate_made_for_127_0_0_1_when_told_to(platform, deploy_echo, go_runner, pki):
    """Fn's LB checks every runner's certificate for the name 127.0.0.1, whatever the runner's address, so Fn runners'
    certificates are made for that. Ours checks it for the host it dials (here "localhost", which the certificate
    does not name): such a runner is unreachable, and says why; with FN_NODE_CERT_SERVER_NAME=127.0.0.1 it serves."""
    fn_runner = await go_runner("-cert", pki["node_cert"], "-key", pki["node_cert_key"], "-ca", pki["node_cert_authority"])
    by_name = types.SimpleNamespace(address=f"localhost:{fn_runner.port}")
    strict = await platform.lb([by_name], FN_PLACER_TIMEOUT="2", **tls_env(pki))
    told = await platform.lb([by_name], FN_NODE_CERT_SERVER_NAME="127.0.0.1", **tls_env(pki))
    async with aiohttp.ClientSession(strict.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        async with s.post(f"/invoke/{fn_id}", data=b"x") as r:
            assert r.status == 503
    assert f"runner unreachable, skipped until it answers runner=localhost:{fn_runner.port}" in strict.proc.log()
    why = strict.proc.log().split("runner unreachable", 1)[1].splitlines()[0]
    assert "certificate is not valid for 'localhost'" in why and "FN_NODE_CERT_SERVER_NAME" in why
    async with aiohttp.ClientSession(told.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        async with s.post(f"/invoke/{fn_id}", data=b"for 127.0.0.1") as r:
            assert (r.status, await r.read()) == (200, b"for 127.0.0.1")
    assert "for the name 127.0.0.1 (FN_NODE_CERT_SERVER_NAME)" in told.proc.log()
    assert len(fn_runner.calls("ran")) == 1
