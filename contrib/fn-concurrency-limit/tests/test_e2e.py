"""As a user runs it: the plugin pip-installed, an LB + runner, real HTTP, real Docker, the fdk echo function."""

import asyncio
import json

from fn_core.testing import listed_plugin, metric_samples

ANNOTATION = "fnproject.io/max-concurrency"
SLOW = json.dumps({"sleep_ms": 2500})


def test_fn_core_plugins_lists_the_installed_distribution():
    entry = listed_plugin("concurrency-limit")
    assert (entry["distribution"], entry["version"], entry["status"]) == ("fn-concurrency-limit", "0.1.0", "active")


async def running(platform, app):
    """The LB's gauge of ``app``'s calls counted against its cap, read from its /metrics."""
    async with platform.session.get(f"{platform.url}/metrics") as resp:
        return metric_samples(await resp.text()).get(f'fn_concurrency_limit_running{{app="{app}"}}', 0.0)


async def until_running(platform, app, n, timeout_s=5.0):
    """Poll the gauge until ``app`` has ``n`` calls counted (bounded)."""
    for _ in range(int(timeout_s / 0.05)):
        if await running(platform, app) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"app {app} never had {n} calls counted in {timeout_s} s")


async def test_calls_over_an_fns_or_an_apps_cap_are_refused_with_429_and_run_nowhere(fn_platform, echo_image):
    platform = await fn_platform(toml="[plugins.concurrency-limit]\nper_app = 3\nretry_after_s = 2\n")
    capped = await platform.deploy(echo_image, app="shop", name="capped", annotations={ANNOTATION: 2})
    other = await platform.deploy(echo_image, app="shop", name="other")
    third = await platform.deploy(echo_image, app="shop", name="third")
    elsewhere = await platform.deploy(echo_image, app="elsewhere", name="echo")

    slow = [asyncio.create_task(platform.invoke(capped["id"], SLOW)) for _ in range(2)]
    await until_running(platform, "shop", 2)
    refused = await platform.invoke(capped["id"], "hello")
    assert (refused.status, refused.json(), refused.headers["Retry-After"]) == (
        429, {"message": f"fn {capped['id']} of app shop has 2 calls running, its cap on this node: retry later"}, "2")
    assert refused.headers["Fn-Call-Id"]  # the refused call's id, as for any answer to a call

    quick = await platform.invoke(other["id"], "hello")  # the app has 3 places: the fn's cap held back only its own calls
    assert (quick.status, quick.body) == (200, b"hello")
    slow.append(asyncio.create_task(platform.invoke(other["id"], SLOW)))
    await until_running(platform, "shop", 3)  # counted as soon as the LB has its body
    refused = await platform.invoke(third["id"], "hello")
    assert (refused.status, refused.json()["message"]) == (429, "app shop has 3 calls running, its cap on this node: retry later")
    assert (await platform.invoke(elsewhere["id"], "hi")).status == 200  # another app's calls go on

    assert [(r.status, r.body) for r in await asyncio.gather(*slow)] == [(200, SLOW.encode())] * 3
    assert len(platform.containers(capped["id"])) == 2 and platform.containers(third["id"]) == []  # refused: ran nowhere
    after = await asyncio.gather(*(platform.invoke(fn["id"], "again") for fn in (capped, third)))
    assert [r.status for r in after] == [200, 200]
    assert await running(platform, "shop") == 0
    async with platform.session.get(f"{platform.url}/metrics") as resp:
        samples = metric_samples(await resp.text())
    assert samples['fn_concurrency_limit_refused_total{app="shop",scope="fn"}'] == 1
    assert samples['fn_concurrency_limit_refused_total{app="shop",scope="app"}'] == 1
    assert samples['fn_lb_calls_total{status="429"}'] == 2


async def test_a_detached_call_holds_its_place_until_it_has_run(fn_platform, echo_image):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, annotations={ANNOTATION: 1})
    accepted = await platform.invoke(fn["id"], SLOW, headers={"Fn-Invoke-Type": "detached"})
    assert accepted.status == 202  # once it started on the runner: it runs on for ~2.5 s
    assert (await platform.invoke(fn["id"], "hello")).status == 429
    await until_running(platform, "app", 0, timeout_s=30)  # the run's end, not the 202, gives the place back
    assert (await platform.invoke(fn["id"], "hello")).status == 200


async def test_a_bad_annotation_is_refused_when_saved_and_nothing_is_stored(fn_platform, echo_image):
    platform = await fn_platform()
    app = (await platform.api("POST", "/v2/apps", {"name": "app"})).json()
    refused = await platform.api("POST", "/v2/fns", {"name": "f", "app_id": app["id"], "image": echo_image, "annotations": {ANNOTATION: 0}})
    assert (refused.status, refused.json()) == (
        400, {"message": f"annotation {ANNOTATION} must be a positive integer (calls running at once), got 0"})
    assert (await platform.api("GET", f"/v2/fns?app_id={app['id']}")).json()["items"] == []


async def test_a_client_that_hangs_up_holds_its_place_until_its_function_may_have_ended(fn_platform, echo_image):
    """The runner lets a dropped call's function finish unseen (up to its timeout): its place is not free before."""
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, annotations={ANNOTATION: 1}, timeout=3)
    left = asyncio.create_task(platform.invoke(fn["id"], json.dumps({"sleep_ms": 20000})))  # killed at 3 s
    await until_running(platform, "app", 1)
    await asyncio.sleep(0.5)
    left.cancel()  # the client goes; its function sleeps on in the container
    await asyncio.sleep(0.5)
    assert (await platform.invoke(fn["id"], "hello")).status == 429
    await until_running(platform, "app", 0, timeout_s=10)  # 3 s after the hang-up
    assert (await platform.invoke(fn["id"], "hello")).status == 200
