"""The third-party placer, pip-installed and selected only by FN_PLACER, changes placement observably."""

import asyncio
import json

from fn_core.testing import listed_plugin, wait_until

BUSY_CALL = json.dumps({"sleep_ms": 3000})


def test_fn_core_plugins_lists_the_placer():
    entry = listed_plugin("placer-bounded")
    assert (entry["distribution"], entry["version"], entry["provides"]) == ("fn-placer-bounded", "0.1.0", ["placer: ch-bounded"])


async def second_call_lands_on(platform, echo_image):
    """Warm fn A on its home runner, keep that runner busy, then place one more call of A."""
    fn = await platform.deploy(echo_image)
    assert (await platform.invoke(fn["id"], "warm")).status == 200
    home = next(r for r in platform.runners if r.servicer.requests_received == 1)
    home_ref = next(ref for ref in platform.lb.agent.pool.refs if ref.address == home.address)
    await wait_until(lambda: home_ref.status is None or home_ref.status.active == 0, "the LB no longer sees the warm-up call (a poll taken during it is stale)")
    busy = asyncio.create_task(platform.invoke(fn["id"], BUSY_CALL))
    # until the runner is busy (and, for ch-bounded, the LB's status poll saw it)
    await wait_until(lambda: home.servicer.active and (home_ref.status is None or home_ref.status.active), "the home runner reports its call as active")
    if platform.pm.placer.wants_runner_status:
        assert home_ref.status.active == 1
    result = await platform.invoke(fn["id"], "second")
    assert result.status == 200 and result.body == b"second"
    assert (await busy).status == 200
    return "home" if home.servicer.requests_received == 3 else "other"


async def test_ch_bounded_sends_the_call_past_a_saturated_home_runner(fn_platform, echo_image):
    platform = await fn_platform(runners=2, env={"FN_PLACER": "ch-bounded", "FN_RUNNER_STATUS_POLL_MSECS": "20"},
                                 toml="[plugins.placer-bounded]\nmax_active = 1\n")
    assert platform.pm.placer.name == "ch-bounded"
    assert await second_call_lands_on(platform, echo_image) == "other"


async def test_builtin_ch_keeps_it_home_in_the_same_situation(fn_platform, echo_image):
    platform = await fn_platform(runners=2, env={"FN_PLACER": "ch"})
    assert await second_call_lands_on(platform, echo_image) == "home"
