"""Issue 4's acceptance list with real processes: `fn-core lb` + `fn-core runner`s + Docker + the fdk echo fn."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp
import pytest

from fn_core.errors import FunctionResponseTooBig
from fn_core.testing import metric_samples, wait_until
from fn_plugins_builtin.placer_ch import fn_hash, jump_hash

from .conftest import post

TIMEOUT = aiohttp.ClientTimeout(total=120)
MB = 1024 * 1024


async def scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession(url, timeout=TIMEOUT) as session, session.get("/metrics") as r:
        assert r.status == 200
        return metric_samples(await r.text())


async def test_invoke_acceptance_and_ch_sticks(platform, deploy_echo):
    runners = [await platform.runner(FN_MAX_RESPONSE_SIZE=str(6 * MB)) for _ in range(2)]
    lb = await platform.lb(runners, placer="ch", FN_MAX_REQUEST_SIZE=str(MB))
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        ids = await deploy_echo(s, platform.image)
        fn_id = ids["fn"]["id"]
        before = [(await r.status()).requests_received for r in runners]

        status, headers, body = await post(s, f"/invoke/{fn_id}", b"hello fn")
        assert (status, body) == (200, b"hello fn") and headers["Fn-Call-Id"]
        status, _, body = await post(s, f"/invoke/{fn_id}")
        assert (status, body) == (200, b"")
        status, _, body = await post(s, f"/invoke/{fn_id}", {"repeat": 5 * MB, "text": "x"})
        assert status == 200 and len(body) == 5 * MB and body[:3] == b"xxx"
        status, _, body = await post(s, f"/invoke/{fn_id}", {"repeat": 7 * MB, "text": "x"})
        assert status == 502 and json.loads(body) == {"message": FunctionResponseTooBig.message}
        status, headers, body = await post(s, f"/invoke/{fn_id}", {"fail": "boom"})
        assert status == 502 and json.loads(body)["message"] and headers["Fn-Call-Id"]
        status, _, _ = await post(s, f"/invoke/{fn_id}", b"x" * (MB + 1))
        assert status == 413
        status, _, body = await post(s, "/invoke/01UNKNOWNFN0000000000000000", b"x")
        assert (status, json.loads(body)) == (404, {"message": "Fn not found"})
        async with s.post("/v2/fns", data=b"{bad") as r:
            assert (r.status, await r.json()) == (400, {"message": "Invalid JSON"})

        after = [(await r.status()).requests_received for r in runners]
        home = jump_hash(fn_hash(fn_id), 2)
        assert after[home] - before[home] == 5  # the 413 never reached a runner
        assert after[1 - home] == before[1 - home]  # ch: one fn, one runner
        # each runner's HTTP port (FN_PORT) shows the same in /metrics, and why the home runner replaced a container
        home_runner, other_runner = await scrape(runners[home].url), await scrape(runners[1 - home].url)
        assert [home_runner[f'fn_runner_calls_total{{result="{r}"}}'] for r in ("success", "error")] == [3, 2]
        assert home_runner['fn_runner_call_errors_total{status="502"}'] == 2
        assert home_runner['fn_runner_containers_retired_total{reason="bad_response"}'] == 1  # the 7 MB answer
        assert home_runner['fn_runner_container_launches_total{result="ok"}'] == 2
        assert other_runner['fn_runner_calls_total{result="success"}'] == 0
        assert other_runner["fn_process_resident_memory_bytes"] > 0

        async with s.post("/v2/fns", json={"name": "slow", "app_id": ids["app"]["id"], "image": platform.image, "timeout": 1}) as r:
            slow = await r.json()
        status, _, body = await post(s, f"/invoke/{slow['id']}", {"sleep_ms": 2500})
        assert status == 504 and json.loads(body)["message"]

        trigger = {"name": "web", "app_id": ids["app"]["id"], "fn_id": fn_id, "type": "http", "source": "/web"}
        async with s.post("/v2/triggers", json=trigger) as r:
            assert r.status == 200
        async with s.post("/t/sysapp/web", json={"status": 201, "headers": {"X-Made-By": "fdk"}}) as r:
            assert r.status == 201 and r.headers["X-Made-By"] == "fdk" and r.headers["Fn-Call-Id"]
        async with s.get("/metrics") as r:
            assert 'fn_lb_calls_total{status="200"}' in await r.text()


async def test_naive_spreads(platform, deploy_echo):
    runners = [await platform.runner() for _ in range(2)]
    lb = await platform.lb(runners, placer="naive")
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        for i in range(6):
            status, _, body = await post(s, f"/invoke/{fn_id}", f"n{i}".encode())
            assert (status, body) == (200, f"n{i}".encode())
    received = [(await r.status()).requests_received for r in runners]
    assert received == [3, 3]


async def test_full_runner_nacks_and_the_call_completes_elsewhere(platform, deploy_echo):
    # room for exactly one 128 MB container per runner, refuse instead of waiting when full
    env = {"FN_ENABLE_NB_RESOURCE_TRACKER": "1", "FN_MAX_TOTAL_MEMORY_BYTES": str(160 * MB)}
    runners = [await platform.runner(**env) for _ in range(2)]
    lb = await platform.lb(runners, placer="ch")
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        home = runners[jump_hash(fn_hash(fn_id), 2)]
        other = runners[1 - jump_hash(fn_hash(fn_id), 2)]
        assert (await post(s, f"/invoke/{fn_id}", b"warm"))[0] == 200  # a hot container on the home runner
        busy = asyncio.create_task(post(s, f"/invoke/{fn_id}", {"sleep_ms": 4000}))
        for _ in range(200):  # bounded: wait until the busy call (the 2nd on home) holds home's only slot
            status = await home.status()
            if status.requests_received >= 2 and status.active >= 1:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # it has arrived; give it the moment to take the container (it sleeps 4 s)
        status, _, body = await post(s, f"/invoke/{fn_id}", b"second")
        assert (status, body) == (200, b"second")
        assert (await busy)[0] == 200
        async with s.get("/metrics") as r:
            text = await r.text()
    assert "fn_lb_placement_retries_total 0" not in text
    assert (await other.status()).requests_received == 1
    home_status = await home.status()
    assert home_status.requests_received == 3 and home_status.requests_handled == 2  # the NACK is not "handled"


async def test_killed_runner_no_hang_no_double_run(platform, deploy_echo):
    runners = [await platform.runner() for _ in range(3)]
    lb = await platform.lb(runners, placer="naive")
    victim = runners[0]
    results: list[tuple[int, int, str]] = []  # (seq, status, call id)
    killed = asyncio.Event()
    started_after_kill: set[int] = set()

    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        for _r in runners:  # warm every runner so the stream is made of hot calls
            assert (await post(s, f"/invoke/{fn_id}", b"warm"))[0] == 200
        counter = iter(range(10_000))

        async def worker() -> None:
            for _ in range(12):
                seq = next(counter)
                if killed.is_set():
                    started_after_kill.add(seq)
                status, headers, _ = await post(s, f"/invoke/{fn_id}", {"sleep_ms": 300, "seq": seq})
                results.append((seq, status, headers.get("Fn-Call-Id", "")))

        workers = [asyncio.create_task(worker()) for _ in range(3)]
        for _ in range(500):  # bounded: kill while the victim is running a call
            if (await victim.status()).active >= 1:
                break
            await asyncio.sleep(0.01)
        victim.proc.popen.send_signal(signal.SIGKILL)
        victim.proc.popen.wait(30)
        killed.set()
        await asyncio.gather(*workers)

    assert len(results) == 36  # nothing hung
    assert all(status == 200 for seq, status, _ in results if seq in started_after_kill)
    assert all(status == 200 or 500 <= status < 600 for _, status, _ in results)
    def fn_lines() -> list[tuple[str, str, str, int, int]]:
        return [line for line in lb.proc.call_lines() if line[1] == fn_id]

    # the LB logs a call just after answering it: its last lines may land a moment after our last answer
    await wait_until(lambda: len(fn_lines()) >= 36 + 3, "a call line for every call")
    lines = fn_lines()
    ids = [line[0] for line in lines]
    assert len(ids) == len(set(ids)) == 36 + 3  # every call ended exactly once on the LB
    by_id = {line[0]: line for line in lines}
    for seq, _status, call_id in results:
        if seq in started_after_kill:
            assert by_id[call_id][2] != victim.address
    for survivor in runners[1:]:  # each survivor ran exactly the calls the LB says it placed there
        placed = sum(1 for line in lines if line[2] == survivor.address)
        assert (await survivor.status()).requests_received == placed


async def two_calls_while_frozen(s, fn_id: str, home, quiet_s: float):
    """SIGSTOP ``home``, let the LB's connection to it be quiet ``quiet_s``, then send two calls one after the other:
    each call's answer and how long it took; ``home`` is woken whatever happened."""
    loop = asyncio.get_running_loop()
    home.proc.popen.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(quiet_s)
        timed = []
        for body in (b"while frozen", b"next"):
            began = loop.time()
            timed.append((await post(s, f"/invoke/{fn_id}", body), loop.time() - began))
        return timed
    finally:
        home.proc.popen.send_signal(signal.SIGCONT)


async def warm_fn_on_its_home(session: aiohttp.ClientSession, platform, deploy_echo, runners, **fn) -> tuple[str, Any, Any]:
    """A new fn, called once through the LB: its id, the runner `ch` places it on (its home), and the other runner."""
    fn_id = (await deploy_echo(session, platform.image, **fn))["fn"]["id"]
    home = jump_hash(fn_hash(fn_id), 2)
    assert (await post(session, f"/invoke/{fn_id}", b"warm"))[::2] == (200, b"warm")
    return fn_id, runners[home], runners[1 - home]


async def until_running(runner) -> None:
    """Until ``runner`` runs a call (its Status' active count); bounded, ~5 s."""
    for _ in range(500):
        if (await runner.status()).active >= 1:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the runner never ran the call")


async def test_a_frozen_runner_costs_its_call_the_fns_timeout_and_seconds_not_minutes(platform, deploy_echo):
    """A runner host that stops answering without closing its connections (a paused VM, a partition: no FIN, no
    RST), played by SIGSTOP: its call ends with a 500 soon after the fn's timeout (before: at the 5-minute keepalive),
    is not run again elsewhere; a call that comes while the LB awaits the runner's answer to its PING, and the next
    call after the verdict, go to the other runner without waiting on the frozen one."""
    runners = [await platform.runner() for _ in range(2)]
    lb = await platform.lb(runners, placer="ch")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(lb.url, timeout=aiohttp.ClientTimeout(total=400)) as s:
        fn_id, home, other = await warm_fn_on_its_home(s, platform, deploy_echo, runners, timeout=2)
        call = asyncio.create_task(post(s, f"/invoke/{fn_id}", {"sleep_ms": 1500}))
        await until_running(home)  # freeze the runner while it runs the call
        home.proc.popen.send_signal(signal.SIGSTOP)
        try:
            frozen_at = loop.time()
            # the bounds: the fn's 2 s timeout, the LB's 5 s margin, a 2 s check and a 10 s PING window; a
            # minute is plenty, and far below the 5-minute keepalive that was the only bound before
            await wait_until(lambda: "sent a PING, new calls go elsewhere" in lb.proc.log(), "the LB's PING", timeout_s=60)
            asked = await post(s, f"/invoke/{fn_id}", b"while asked")
            status, headers, body = await asyncio.wait_for(call, 60)
            waited_s = loop.time() - frozen_at
            began = loop.time()
            after = await post(s, f"/invoke/{fn_id}", b"next")
            after_s = loop.time() - began
            async with s.get("/metrics") as r:  # what an operator's alert reads
                seen = metric_samples(await r.text())
        finally:
            home.proc.popen.send_signal(signal.SIGCONT)
    assert (status, json.loads(body)) == (500, {"message": "the runner was lost during the call"}), waited_s
    assert asked[::2] == (200, b"while asked") and after[::2] == (200, b"next")
    # the lost call was committed, never re-sent: the other runner ran the two later calls only
    assert (await other.status()).requests_received == 2
    call_id, asked_id = headers["Fn-Call-Id"], asked[1]["Fn-Call-Id"]
    await wait_until(lambda: {asked_id, call_id} <= {line[0] for line in lb.proc.call_lines()}, "the calls' lines")
    lines = {line[0]: line[2:] for line in lb.proc.call_lines()}
    assert lines[call_id] == (home.address, 500, 1)
    assert lines[asked_id] == (other.address, 200, 2)  # the frozen runner was skipped: nothing sent there
    assert "no answer in 10 s to a PING (a call is past its time and the runner is silent)" in lb.proc.log()
    assert seen[f'fn_lb_runner_lost_calls_total{{runner="{home.address}"}}'] == 1
    assert seen[f'fn_lb_runner_reachable{{runner="{home.address}"}}'] == 0
    assert seen[f'fn_lb_runner_reachable{{runner="{other.address}"}}'] == 1
    assert seen[f'fn_lb_runner_lost_calls_total{{runner="{other.address}"}}'] == 0
    # the frozen host accepts TCP but sends no HTTP/2 SETTINGS: before, the next call waited out the 5 s connect
    # timeout of a new connection there; now that dial runs in the background and the call goes on at once
    assert after_s < 5.0, after_s


async def test_a_runner_frozen_while_quiet_gets_no_call_and_takes_calls_again_when_it_wakes(platform, deploy_echo):
    """A runner host that froze while its connection was quiet (SIGSTOP): the next call would be lost there (sent,
    so committed). The LB first PINGs a connection quiet for a second; unanswered, the call goes to the other runner,
    unsent, and so do the next ones, at once. Woken, the runner answers the PING and its fns come home."""
    runners = [await platform.runner() for _ in range(2)]
    lb = await platform.lb(runners, placer="ch")
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id, home, other = await warm_fn_on_its_home(s, platform, deploy_echo, runners)
        (moved, moved_s), (following, following_s) = await two_calls_while_frozen(s, fn_id, home, 1.5)  # quiet first
        back = None
        for _ in range(50):  # bounded: the woken runner's answer to the PING reaches the LB
            status, headers, _ = await post(s, f"/invoke/{fn_id}", b"home again?")
            assert status == 200
            call_id = headers["Fn-Call-Id"]
            await wait_until(lambda: call_id in {line[0] for line in lb.proc.call_lines()}, "its line")  # noqa: B023
            if {line[0]: line[2] for line in lb.proc.call_lines()}[call_id] == home.address:
                back = call_id
                break
            await asyncio.sleep(0.1)
    assert moved[::2] == (200, b"while frozen") and following[::2] == (200, b"next")
    # it waited for the PING's answer (a second at most), not for the fn's timeout or a lost call's 500
    assert moved_s < 5 and following_s < 0.5, (moved_s, following_s)
    lines = {line[0]: line[2] for line in lb.proc.call_lines()}
    assert lines[moved[1]["Fn-Call-Id"]] == lines[following[1]["Fn-Call-Id"]] == other.address
    assert back is not None, "the woken runner got no call back"
    assert (await home.status()).requests_received == 2  # the warm call and the one after it woke: nothing lost
    log = lb.proc.log()
    assert f'runner unreachable, skipped until it answers runner={home.address} reason="UNAVAILABLE: {home.address} has not answered a PING in 1 s' in log
    assert f"runner reachable again runner={home.address}\n" in log


async def test_a_runner_frozen_during_a_long_call_gets_no_new_call(platform, deploy_echo):
    """A runner that froze while a long call of its ran has sent nothing since the check that call made: the next
    call on the quiet connection checks it again, and it and the ones after go to the other runner. Before, none was
    checked until the long call was overdue (its fn's timeout and 5 s), and every call sent meanwhile was lost."""
    runners = [await platform.runner() for _ in range(2)]
    lb = await platform.lb(runners, placer="ch")
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id, home, other = await warm_fn_on_its_home(s, platform, deploy_echo, runners)
        await asyncio.sleep(1.5)  # quiet: the long call is sent after the runner's answer to a PING
        long_call = asyncio.create_task(post(s, f"/invoke/{fn_id}", {"sleep_ms": 4000, "text": "long", "repeat": 1}))
        await until_running(home)  # freeze the runner while it runs the call
        (moved, moved_s), (following, following_s) = await two_calls_while_frozen(s, fn_id, home, 1.2)  # quiet again
        long_answer = await asyncio.wait_for(long_call, 60)
    assert moved[::2] == (200, b"while frozen") and following[::2] == (200, b"next")
    assert moved_s < 5 and following_s < 0.5, (moved_s, following_s)
    lines = {line[0]: line[2] for line in lb.proc.call_lines()}
    assert lines[moved[1]["Fn-Call-Id"]] == lines[following[1]["Fn-Call-Id"]] == other.address
    # woken within the LB's 10 s PING window, the runner answers the long call: nothing was lost, nothing ran twice
    assert long_answer[::2] == (200, b"long")
    assert (await home.status()).requests_received == 2 and (await other.status()).requests_received == 2


async def test_serve_end_to_end_and_graceful_stop(platform, deploy_echo):
    node = await platform.serve()
    async with aiohttp.ClientSession(node.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        status, _, body = await post(s, f"/invoke/{fn_id}", b"all in one")
        assert (status, body) == (200, b"all in one")
        in_flight = asyncio.create_task(post(s, f"/invoke/{fn_id}", {"sleep_ms": 1500, "text": "x"}))
        for _ in range(500):  # bounded: signal only once the LB is running the call
            async with s.get("/metrics") as r:
                if "fn_lb_calls_inflight 1" in await r.text():
                    break
            await asyncio.sleep(0.01)
        node.proc.popen.send_signal(signal.SIGTERM)
        status, _, _ = await in_flight
        assert status == 200
    assert node.proc.popen.wait(60) == 0


@pytest.mark.parametrize("node_kind", ["serve", "runner"])
async def test_a_second_signal_cuts_the_calls_and_still_removes_the_containers(platform, deploy_echo, docker_client, node_kind):
    """A double Ctrl-C skipped the runner's clean-up: its function containers ran on after it exited (found by a
    walk-through of README), and with no label tag of its own no later runner removes them."""
    if node_kind == "serve":
        node = await platform.serve(FN_SHUTDOWN_GRACE="60")
        stopped, url = node.proc, node.url
    else:
        runner = await platform.runner(FN_SHUTDOWN_GRACE="60")
        stopped, url = runner.proc, (await platform.lb([runner])).url
    async with aiohttp.ClientSession(url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        in_flight = asyncio.create_task(post(s, f"/invoke/{fn_id}", {"sleep_ms": 30000}))
        await wait_until(lambda: any(c.status == "running" for c in fn_containers(docker_client, fn_id)),
                         "the slow call's container running", timeout_s=30)
        await asyncio.sleep(0.5)  # the call is in the container
        stopped.popen.send_signal(signal.SIGINT)
        await asyncio.sleep(0.5)
        assert stopped.popen.poll() is None  # in its graceful stop: 60 s for the call
        stopped.popen.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(stopped.popen.wait, 20) == 130
        status, _, body = await in_flight
    assert status == 500 and b"cut short" in body, body
    assert fn_containers(docker_client, fn_id) == [], stopped.log()
    assert "second signal (SIGINT): stopping at once" in stopped.log()


def fn_containers(docker_client, fn_id: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"fn-fn-id={fn_id}"}, ignore_removed=True)


async def test_serve_at_debug_logs_what_functions_print(platform, deploy_echo):
    """As Fn's full mode: each line a function writes is a debug line of `fn-core serve`, with its call's id."""
    node = await platform.serve(FN_LOG_LEVEL="debug", FN_MAX_LOG_SIZE_BYTES="4096")
    async with aiohttp.ClientSession(node.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        status, headers, _ = await post(s, f"/invoke/{fn_id}", {"log": "hello from the function"})
        assert status == 200
    call_id = headers["Fn-Call-Id"]
    expected = [f"DEBUG fn_core.function: function output call_id={call_id} app_id=", f'fn_id={fn_id} stream=stdout line="stdout: hello',
                f'fn_id={fn_id} stream=stderr line="stderr: hello']
    await wait_until(lambda: all(part in node.proc.log() for part in expected), "the function's two lines in serve's log",
                     timeout_s=10)


async def test_fn_http_limits_on_a_real_lb_and_runner(platform, deploy_echo):
    """FN_RESPONSE_WRITE_TIMEOUT, FN_REQUEST_HEADER_READ_TIMEOUT and FN_MAX_REQUEST_HEADER_SIZE read by `fn-core lb`."""
    runner = await platform.runner()
    lb = await platform.lb(
        [runner], FN_RESPONSE_WRITE_TIMEOUT="1500ms", FN_REQUEST_HEADER_READ_TIMEOUT="500ms", FN_MAX_REQUEST_HEADER_SIZE="4096"
    )
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        assert (await post(s, f"/invoke/{fn_id}", b"warm"))[::2] == (200, b"warm")  # the cold start is within the limit

        try:  # a function slower than the write timeout: the connection is cut, no answer comes
            answer = await post(s, f"/invoke/{fn_id}", {"sleep_ms": 4000})
        except aiohttp.ServerDisconnectedError:
            answer = None
        assert answer is None, f"answered despite FN_RESPONSE_WRITE_TIMEOUT: {answer}"
        assert "its response was not written within 1.5 s" in lb.proc.log()
        assert (await post(s, f"/invoke/{fn_id}", b"after"))[::2] == (200, b"after")  # the LB serves on

        status, _, body = await post(s, f"/invoke/{fn_id}", b"x", headers={"X-Token": "t" * 5000})
        assert (status, json.loads(body)) == (431, {"message": "Request Header Fields Too Large: a line of the head is over 4096 bytes"})

    host, port = lb.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /invoke/{fn_id} HTTP/1.1\r\nHost: x\r\n".encode())  # a head that never ends
    answer = await asyncio.wait_for(reader.read(), 10)  # the whole answer, up to the close
    writer.close()
    assert answer.startswith(b"HTTP/1.0 408 Request Timeout\r\n")
    assert answer.endswith(b'{"message": "Timed out reading the request head: not all of it came within 0.5 s"}')
    assert (await runner.status()).requests_received == 3  # warm, slow, after: nothing refused reached the runner


async def test_a_runner_with_fn_max_request_size_refuses_a_bigger_body_an_lb_sent_with_413(platform, deploy_echo):
    """A runner bounds bodies by its own FN_MAX_REQUEST_SIZE, whatever the LB's is: Fn's 413 reaches the client."""
    runner = await platform.runner(FN_MAX_REQUEST_SIZE="65536")
    lb = await platform.lb([runner])  # no limit of its own
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        status, _, body = await post(s, f"/invoke/{fn_id}", b"x" * (5 * 1024 * 1024))  # over the stream's window too
        assert (status, json.loads(body)) == (413, {"message": "request body too large for this runner (over 65536 bytes)"})
        assert (await post(s, f"/invoke/{fn_id}", b"y" * 65536))[::2] == (200, b"y" * 65536)  # the connection serves on
    status = await runner.status()
    assert (status.requests_received, status.requests_handled) == (2, 2)  # answered once each: no NACK, no retry
