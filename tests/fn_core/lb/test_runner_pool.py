"""Runner pool plugins: the LB follows a changing runner list without losing or re-sending calls."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fn_core import RunnerPool, hookimpl
from fn_core.errors import ConfigError
from fn_core.testing import wait_until


class MovingPool:
    """A runner pool plugin whose list the test changes; ``fail`` makes `addresses` raise."""

    def __init__(self, addresses: list[str], *, refresh: bool = True) -> None:
        self.listed = list(addresses)
        self.fail = False
        self.asked = 0
        self.refresh = refresh

    async def addresses(self) -> list[str]:
        self.asked += 1
        if self.fail:
            raise OSError("discovery service unreachable")
        return list(self.listed)

    @hookimpl
    def register_runner_pools(self):
        return [RunnerPool(name="moving", factory=lambda config: self, refresh=self.refresh, description="test")]


def addresses_of(node) -> list[str]:
    return [ref.address for ref in node.agent.pool.refs]


async def start(lb_factory, pool: MovingPool, **overrides):
    settings = {"runner_pool": "moving", "runner_pool_refresh_ms": 20, "placer": "naive", **overrides}
    return await lb_factory(None, plugins=(("moving-pool", pool),), **settings)


async def invoke(session, fn_id: str, body: str) -> tuple[int, str]:
    async with session.post(f"/invoke/{fn_id}", data=body) as r:
        return r.status, await r.text()


async def test_the_lb_adds_and_removes_runners_as_the_pool_changes(fake_runners, lb_factory, deploy_fn):
    a, b = await fake_runners(), await fake_runners()
    pool = MovingPool([a.address])
    node, session, recorder = await start(lb_factory, pool)
    fn_id = (await deploy_fn(session))["fn"]["id"]
    for i in range(3):
        assert await invoke(session, fn_id, f"a{i}") == (200, f"a{i}")
    assert (len(a.calls), len(b.calls)) == (3, 0)

    pool.listed = [a.address, b.address]
    await wait_until(lambda: addresses_of(node) == [a.address, b.address], "b joined")
    for i in range(4):
        assert await invoke(session, fn_id, f"ab{i}") == (200, f"ab{i}")
    assert (len(a.calls), len(b.calls)) == (5, 2)  # naive spreads over both

    async with session.get("/metrics") as r:
        assert "\nfn_lb_runners 2\n" in await r.text()

    pool.listed = [b.address]
    await wait_until(lambda: addresses_of(node) == [b.address], "a left")
    for i in range(3):
        assert await invoke(session, fn_id, f"b{i}") == (200, f"b{i}")
    assert (len(a.calls), len(b.calls)) == (5, 5)
    async with session.get("/metrics") as r:
        assert "\nfn_lb_runners 1\n" in await r.text()
    assert all(outcome.attempts == 1 for _, outcome in recorder.outcomes)  # no call tried a runner that had left


async def call_on_a_runner_that_leaves(fake_runners, lb_factory, deploy_fn, body: str, fn: dict | None = None):
    """Runner a holds a call (until ``a.release``) and then leaves the pool, b stays: (a, b, node, session, the call
    in flight, fn id)."""
    a, b = await fake_runners("hold"), await fake_runners()
    pool = MovingPool([a.address])
    node, session, _ = await start(lb_factory, pool)
    fn_id = (await deploy_fn(session, fn=fn))["fn"]["id"]
    in_flight = asyncio.create_task(invoke(session, fn_id, body))
    await asyncio.wait_for(a.hanging.wait(), 5)
    pool.listed = [b.address]
    await wait_until(lambda: addresses_of(node) == [b.address], "a left")
    return a, b, node, session, in_flight, fn_id


async def test_a_runner_that_leaves_the_pool_finishes_the_calls_it_has(fake_runners, lb_factory, deploy_fn):
    a, b, _, session, in_flight, fn_id = await call_on_a_runner_that_leaves(fake_runners, lb_factory, deploy_fn, "started on a")
    assert await invoke(session, fn_id, "new call") == (200, "new call")
    assert len(b.calls) == 1

    a.release.set()
    assert await asyncio.wait_for(in_flight, 5) == (200, "started on a")  # not cut, not re-sent
    assert (len(a.calls), a.cancelled, len(b.calls)) == (1, 0, 1)


async def test_a_call_on_a_runner_that_left_the_pool_runs_past_its_timeout_while_the_runner_lives(
    fake_runners, lb_factory, deploy_fn, monkeypatch
):
    """A call may wait long for room and then run up to its timeout: its runner leaving the pool sets it no other
    limit (a fixed grace used to cut such a call). Overdue, the call's runner is asked whether it is alive (PING);
    a live one keeps the call, and the channel closes once the call has ended."""
    monkeypatch.setattr("fn_core.lb.runner_client.OVERDUE_MARGIN_S", 0.2)  # overdue 1.2 s after it started
    a, _, node, _, in_flight, _ = await call_on_a_runner_that_leaves(
        fake_runners, lb_factory, deploy_fn, "long on a", fn={"timeout": 1}
    )
    assert [client.address for client in node.agent.pool.retiring()] == [a.address]

    await asyncio.sleep(2.5)  # well past the call's timeout and margin: overdue, checked, alive
    assert not in_flight.done()
    a.release.set()
    assert await asyncio.wait_for(in_flight, 5) == (200, "long on a")
    await wait_until(lambda: not node.agent.pool.retiring(), "a's channel closed after its last call")


async def test_a_runner_that_left_the_pool_and_then_stops_ends_its_call_and_its_channel(fake_runners, lb_factory, deploy_fn):
    a, b, node, _, in_flight, _ = await call_on_a_runner_that_leaves(fake_runners, lb_factory, deploy_fn, "on a")
    await a.stop()  # the call was committed there: it is never re-sent to b
    assert await asyncio.wait_for(in_flight, 10) == (500, '{"message": "the runner was lost during the call"}')
    assert len(b.calls) == 0
    await wait_until(lambda: not node.agent.pool.retiring(), "a's channel closed")


async def test_a_failing_pool_keeps_the_last_list_and_says_so(fake_runners, lb_factory, deploy_fn, caplog):
    a = await fake_runners()
    pool = MovingPool([a.address])
    node, session, _ = await start(lb_factory, pool)
    fn_id = (await deploy_fn(session))["fn"]["id"]
    caplog.set_level(logging.INFO, logger="fn_core.lb.pool")
    pool.fail = True
    asked = pool.asked
    await wait_until(lambda: pool.asked >= asked + 2, "two failed refreshes")
    assert addresses_of(node) == [a.address]
    assert await invoke(session, fn_id, "still served") == (200, "still served")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ['runner pool failed to list its runners, keeping the last list pool=moving '
                      'reason="OSError: discovery service unreachable"']
    pool.fail = False  # said once, not at every refresh; and recovery is told
    await wait_until(lambda: "runner pool lists its runners again pool=moving" in caplog.text, "recovery logged")


async def test_addresses_that_are_not_host_port_are_skipped_with_a_warning(fake_runners, lb_factory, caplog):
    a = await fake_runners()
    caplog.set_level(logging.WARNING, logger="fn_core.lb.pool")
    node, _, _ = await start(lb_factory, MovingPool(["runner-without-port", a.address, a.address]))
    assert addresses_of(node) == [a.address]
    assert "runner pool listed an address that is not host:port, skipped pool=moving address=runner-without-port" in caplog.text


async def test_a_pool_that_never_changes_and_cannot_list_stops_the_lb(lb_factory):
    pool = MovingPool([], refresh=False)
    pool.fail = True
    with pytest.raises(ConfigError, match="runner pool 'moving' could not list the runners"):
        await start(lb_factory, pool)


async def test_an_empty_pool_answers_503_after_the_placer_timeout_then_serves_once_a_runner_joins(
    fake_runners, lb_factory, deploy_fn
):
    pool = MovingPool([])
    node, session, _ = await start(lb_factory, pool, placer="ch", placer_timeout_s=0.2)
    fn_id = (await deploy_fn(session))["fn"]["id"]
    async with session.post(f"/invoke/{fn_id}", data="nobody") as r:
        assert r.status == 503 and "Retry-After" in r.headers
    a = await fake_runners()
    pool.listed = [a.address]
    await wait_until(lambda: addresses_of(node) == [a.address], "a joined")
    assert await invoke(session, fn_id, "somebody") == (200, "somebody")


async def test_real_runners_join_and_leave_through_a_pool_plugin(fn_platform, echo_image):
    """Real gRPC runners, real Docker: the fn moves to the runner that joined once its first runner left."""
    pool = MovingPool([])
    platform = await fn_platform(runners=2, plugins=(pool,), from_pool=True,
                                 env={"FN_RUNNER_POOL": "moving", "FN_RUNNER_POOL_REFRESH_MSECS": "20"})
    first, second = platform.runners
    pool.listed = [first.address]
    await wait_until(lambda: addresses_of(platform.lb) == [first.address], "first joined")
    fn = await platform.deploy(echo_image)
    for i in range(3):
        result = await platform.invoke(fn["id"], f"one-{i}")
        assert (result.status, result.body) == (200, f"one-{i}".encode())

    pool.listed = [first.address, second.address]
    await wait_until(lambda: addresses_of(platform.lb) == [first.address, second.address], "second joined")
    pool.listed = [second.address]
    await wait_until(lambda: addresses_of(platform.lb) == [second.address], "first left")
    for i in range(3):
        result = await platform.invoke(fn["id"], f"two-{i}")
        assert (result.status, result.body) == (200, f"two-{i}".encode())
    assert (first.servicer.requests_received, second.servicer.requests_received) == (3, 3)
    assert len(platform.containers(fn["id"])) == 2  # one hot container on each runner


class AnswersAsTheLBStops(MovingPool):
    """After its first list, each answer waits for the test to give it."""

    def __init__(self) -> None:
        super().__init__([])
        self.pending: asyncio.Future | None = None

    async def addresses(self) -> list[str]:
        if self.asked:
            self.pending = asyncio.get_running_loop().create_future()
            return await self.pending
        return await super().addresses()


async def test_the_lb_stops_when_its_pool_answers_in_the_same_moment(lb_factory):
    """The pool's answer and the LB's shutdown land in one loop step: the refresh must still end, not run on
    and keep the LB from exiting (asyncio.wait_for on Python 3.11 returned the answer and dropped the cancel)."""
    pool = AnswersAsTheLBStops()
    node, _, _ = await start(lb_factory, pool)
    await wait_until(lambda: pool.pending is not None, "the pool was asked again")
    pool.pending.set_result([])
    async with asyncio.timeout(10):  # a bound on the test, not a timing: it hung for ever
        await node.agent.pool.close()
    assert all(task.done() for task in node.agent.pool._tasks)


def pool_lines(caplog) -> list[tuple[int, str, dict]]:
    """The pool's log lines: (level, the human message, the logfmt fields)."""
    from fn_core import logfmt

    lines = []
    for record in caplog.records:
        if record.name == "fn_core.lb.pool":
            message, _, fields = record.getMessage().partition(" pool=")
            lines.append((record.levelno, message, logfmt.parse("pool=" + fields)))
    return lines


async def test_an_empty_list_keeps_the_last_runners_with_a_warning_until_the_pool_lists_runners_again(
    fake_runners, lb_factory, deploy_fn, caplog, monkeypatch
):
    """A discovery source that answers [] for a moment: the LB goes on placing on the runners it had, rather than
    closing every channel and holding each call for the placer timeout."""
    monkeypatch.setattr("fn_core.lb.pool.EMPTY_LISTS_TO_DROP", 1000)  # held for as long as the test needs
    a = await fake_runners()
    pool = MovingPool([a.address])
    node, session, _ = await start(lb_factory, pool, placer_timeout_s=1.0)
    fn_id = (await deploy_fn(session))["fn"]["id"]
    caplog.set_level(logging.DEBUG, logger="fn_core.lb.pool")
    pool.listed = []
    asked = pool.asked
    await wait_until(lambda: pool.asked >= asked + 3, "three empty answers")
    assert addresses_of(node) == [a.address]
    assert await invoke(session, fn_id, "still served") == (200, "still served")
    async with session.get("/metrics") as r:
        assert "\nfn_lb_runners 1\n" in await r.text()

    pool.listed = [a.address]
    await wait_until(lambda: any(m == "runner pool lists runners again" for _, m, _ in pool_lines(caplog)), "runners again")
    lines = pool_lines(caplog)
    warnings = [(message, fields) for level, message, fields in lines if level == logging.WARNING]
    # said once, naming the pool and what it keeps; the next empty answers at debug
    assert warnings == [("runner pool listed no runners, keeping the last list",
                         {"pool": "moving", "kept": a.address, "empty_lists": "1", "dropped_at": "1000"})]
    assert any(level == logging.DEBUG and fields.get("empty_lists") == "2" for level, _, fields in lines)
    back = [(level, fields) for level, message, fields in lines if message == "runner pool lists runners again"]
    assert back[0][0] == logging.INFO and back[0][1]["runners"] == a.address and int(back[0][1]["empty_lists"]) >= 3
    assert not any(message == "runner list changed" for _, message, _ in lines)  # the list never changed
    assert len(a.calls) == 1


async def test_a_pool_that_keeps_listing_no_runners_has_none_after_the_limit(fake_runners, lb_factory, deploy_fn, caplog):
    """A pool that really scaled to zero says so by saying it again: at the EMPTY_LISTS_TO_DROP-th empty answer in a
    row the LB takes it, and says so."""
    from fn_core.lb.pool import EMPTY_LISTS_TO_DROP

    a = await fake_runners()
    pool = MovingPool([a.address])
    node, session, _ = await start(lb_factory, pool, placer_timeout_s=0.2)
    fn_id = (await deploy_fn(session))["fn"]["id"]
    caplog.set_level(logging.INFO, logger="fn_core.lb.pool")
    asked = pool.asked
    pool.listed = []
    await wait_until(lambda: addresses_of(node) == [], "the runners dropped")
    assert pool.asked - asked >= EMPTY_LISTS_TO_DROP
    warnings = [(message, fields) for level, message, fields in pool_lines(caplog) if level == logging.WARNING]
    assert warnings == [
        ("runner pool listed no runners, keeping the last list",
         {"pool": "moving", "kept": a.address, "empty_lists": "1", "dropped_at": str(EMPTY_LISTS_TO_DROP)}),
        ("runner pool lists no runners, the LB has none now (calls wait for one, then 503)",
         {"pool": "moving", "runners": "0", "removed": a.address}),
    ]
    async with session.post(f"/invoke/{fn_id}", data="nobody") as r:
        assert r.status == 503
    pool.listed = [a.address]  # and from none, a list is taken at once
    await wait_until(lambda: addresses_of(node) == [a.address], "a back")
    assert await invoke(session, fn_id, "again") == (200, "again")


def file_pool(path):
    """contrib/fn-runner-file's pool (a real plugin's source, not installed in the dev venv), reading ``path``."""
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    source = Path(__file__).resolve().parents[3] / "contrib" / "fn-runner-file" / "fn_runner_file.py"
    spec = importlib.util.spec_from_file_location("fn_runner_file_under_test", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings = SimpleNamespace(plugin_settings=lambda name, known=None: {"path": str(path)})

    class Plugin:
        @hookimpl
        def register_runner_pools(self):
            return [RunnerPool(name="file", factory=lambda config: module.RunnersFromFile(settings), description="test")]

    return Plugin()


async def test_a_pool_file_caught_empty_while_it_is_rewritten_keeps_the_lbs_runners(
    fake_runners, lb_factory, deploy_fn, caplog, monkeypatch, tmp_path
):
    """The audit's case: the runner-file pool reads its file between the truncation and the write of a rewrite
    (open(..., "w"), as editors, Ansible's copy and `echo > file` do) and lists no runners."""
    monkeypatch.setattr("fn_core.lb.pool.EMPTY_LISTS_TO_DROP", 1000)
    a, b = await fake_runners(), await fake_runners()
    runners = tmp_path / "runners"
    runners.write_text(f"{a.address}\n{b.address}\n")
    node, session, _ = await lb_factory(None, plugins=(("runner-file", file_pool(runners)),), runner_pool="file",
                                        runner_pool_refresh_ms=20, placer="naive", placer_timeout_s=1.0)
    assert addresses_of(node) == [a.address, b.address]
    fn_id = (await deploy_fn(session))["fn"]["id"]
    caplog.set_level(logging.INFO, logger="fn_core.lb.pool")

    runners.write_text("")  # the rewrite, caught half-way
    await wait_until(lambda: any(level == logging.WARNING for level, _, _ in pool_lines(caplog)), "the empty read")
    assert addresses_of(node) == [a.address, b.address]
    for i in range(4):
        assert await invoke(session, fn_id, f"during-{i}") == (200, f"during-{i}")
    runners.write_text(f"{a.address}\n{b.address}\n")
    await wait_until(lambda: any(m == "runner pool lists runners again" for _, m, _ in pool_lines(caplog)), "the whole file")
    assert addresses_of(node) == [a.address, b.address]
    assert [(level, message) for level, message, _ in pool_lines(caplog)] == [
        (logging.WARNING, "runner pool listed no runners, keeping the last list"),
        (logging.INFO, "runner pool lists runners again"),
    ]
    assert len(a.calls) + len(b.calls) == 4


async def test_lost_calls_are_counted_per_runner_for_the_lbs_lifetime_as_runners_leave_and_come_back(
    fake_runners, lb_factory, deploy_fn
):
    """fn_lb_runner_lost_calls_total never goes down and never vanishes while fn_lb_calls_total{status="500"} keeps
    the calls: a runner that left the pool keeps its series, and one that comes back (a new channel) goes on from it."""
    from fn_core.testing import metric_samples

    def behaviour(call, body):
        return "start-hang" if body == b"lose me" else "echo"

    a, b = await fake_runners(behaviour), await fake_runners()
    a_port = int(a.address.rpartition(":")[2])
    pool = MovingPool([a.address])
    node, session, _ = await start(lb_factory, pool)
    fn_id = (await deploy_fn(session))["fn"]["id"]

    async def lose_a_call_on(runner) -> None:
        lost = asyncio.create_task(invoke(session, fn_id, "lose me"))
        await wait_until(lambda: runner.hanging.is_set(), "the call started on the runner")
        await runner.stop()
        assert await asyncio.wait_for(lost, 10) == (500, '{"message": "the runner was lost during the call"}')

    async def samples() -> dict[str, float]:
        async with session.get("/metrics") as r:
            return metric_samples(await r.text())

    def lost_on(seen: dict[str, float], address: str) -> float | None:
        return seen.get(f'fn_lb_runner_lost_calls_total{{runner="{address}"}}')

    await lose_a_call_on(a)
    assert lost_on(await samples(), a.address) == 1

    again = await fake_runners(behaviour, port=a_port)  # a comes back at its address
    pool.listed = [b.address]  # ... but first leaves the pool
    await wait_until(lambda: addresses_of(node) == [b.address], "a left")
    await wait_until(lambda: not node.agent.pool.retiring(), "a's channel closed")
    seen = await samples()
    assert (lost_on(seen, a.address), lost_on(seen, b.address)) == (1, 0)  # a's series is kept, at its count

    pool.listed = [b.address, a.address]  # a new channel to a
    await wait_until(lambda: addresses_of(node) == [b.address, a.address], "a back")
    assert lost_on(await samples(), a.address) == 1
    pool.listed = [a.address]
    await wait_until(lambda: addresses_of(node) == [a.address], "b left")
    await wait_until(lambda: not node.agent.pool.retiring(), "b's channel closed")
    await lose_a_call_on(again)
    seen = await samples()
    assert lost_on(seen, a.address) == 2 and seen['fn_lb_calls_total{status="500"}'] == 2
    assert lost_on(seen, b.address) is None  # b left having lost nothing: no series to keep
