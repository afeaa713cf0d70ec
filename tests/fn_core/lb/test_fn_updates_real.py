"""What a developer sees after changing a deployed function (`PUT /v2/fns/{id}`, `PUT /v2/apps/{id}`, DELETE),
through a real platform: the LB, a runner over gRPC, real Docker containers of the fdk echo image.

As in Fn, a change of anything a container is started with gives the call a new slot key: the next call runs in
a new container with the new settings, and the old container is not used again; it goes at its idle timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets

import pytest

from fn_core.testing import build_image, metric_samples, wait_until

MB = 1024 * 1024
GONE_WITHIN_S = 60.0  # a bound on "gone by its idle timeout" on a busy 2-core machine, not a speed target


@pytest.fixture
def updated_image(docker_client, echo_image):
    """A second tag of the echo function: the same function, with an ENV its `env` operation shows."""
    tag = f"fn-core-test/echo-updated:{secrets.token_hex(4)}"
    yield build_image(docker_client, f"FROM {echo_image}\nENV ECHO_IMAGE_VERSION=2\nLABEL fn-core.test.updated=1\n", tag)
    docker_client.images.remove(tag, noprune=False)


async def env_of(platform, fn_id: str) -> dict[str, str]:
    """What the function sees of its environment (echo's ``{"env": true}``), asserting the call's 200."""
    answer = await platform.invoke(fn_id, json.dumps({"env": True}))
    assert answer.status == 200, answer.body
    return answer.json()


def in_service(platform, fn_id: str) -> dict[str, int]:
    """The fn's containers in service on the runner: id -> calls it has been sent."""
    return {c.id: c.calls for c in platform.runners[0].agent.containers() if c.queue.call.fn_id == fn_id}


async def put(platform, path: str, body: dict) -> dict:
    answer = await platform.api("PUT", path, body)
    assert answer.status == 200, answer.body
    return answer.json()


async def test_a_new_image_answers_the_next_call_and_the_old_container_is_not_used_again(updated_image, fn_platform, echo_image):
    # updated_image first: it is removed after the platform (and its containers) have stopped
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, idle_timeout=2)
    assert "ECHO_IMAGE_VERSION" not in await env_of(platform, fn["id"])
    [old] = in_service(platform, fn["id"])

    assert (await put(platform, f"/v2/fns/{fn['id']}", {"image": updated_image}))["image"] == updated_image
    for _ in range(3):
        assert (await env_of(platform, fn["id"]))["ECHO_IMAGE_VERSION"] == "2"
    served = in_service(platform, fn["id"])
    assert served.get(old, 1) == 1  # the old container took no call after the update (or is gone already)
    [new] = [cid for cid in served if cid != old]
    assert served[new] == 3
    assert platform.docker.containers.get(new).attrs["Config"]["Image"] == updated_image
    # the old one goes at its idle timeout; the new one keeps serving
    await wait_until(lambda: [c.id for c in platform.containers(fn["id"])] == [new], "only the new image's container left", GONE_WITHIN_S)


async def test_a_changed_fn_or_app_config_variable_is_what_the_next_call_sees(fn_platform, echo_image):
    platform = await fn_platform()
    app = (await platform.api("POST", "/v2/apps", {"name": "configured", "config": {"REGION": "north"}})).json()
    fn = await platform.deploy(echo_image, app="configured", config={"GREETING": "hello"})
    seen = await env_of(platform, fn["id"])
    assert (seen["GREETING"], seen["REGION"]) == ("hello", "north")

    await put(platform, f"/v2/fns/{fn['id']}", {"config": {"GREETING": "bonjour"}})
    seen = await env_of(platform, fn["id"])
    assert (seen["GREETING"], seen["REGION"]) == ("bonjour", "north")

    await put(platform, f"/v2/apps/{app['id']}", {"config": {"REGION": "south"}})
    seen = await env_of(platform, fn["id"])
    assert (seen["GREETING"], seen["REGION"]) == ("bonjour", "south")

    # Fn: an empty value removes the variable
    await put(platform, f"/v2/fns/{fn['id']}", {"config": {"GREETING": ""}})
    assert "GREETING" not in await env_of(platform, fn["id"])
    assert len(platform.containers(fn["id"])) >= 3  # each change: its own container (the old ones go when idle)


async def test_changed_memory_and_timeout_apply_to_the_next_call(fn_platform, echo_image):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, memory=128, timeout=30)
    slow = json.dumps({"sleep_ms": 2500})
    answer = await platform.invoke(fn["id"], slow)
    assert answer.status == 200, answer.body
    [old] = in_service(platform, fn["id"])
    assert platform.docker.containers.get(old).attrs["HostConfig"]["Memory"] == 128 * MB

    updated = await put(platform, f"/v2/fns/{fn['id']}", {"memory": 256, "timeout": 1})
    assert (updated["memory"], updated["timeout"]) == (256, 1)
    answer = await platform.invoke(fn["id"], "quick")
    assert (answer.status, answer.body) == (200, b"quick")
    served = in_service(platform, fn["id"])
    assert served.get(old, 1) == 1
    [new] = [cid for cid in served if cid != old]
    assert platform.docker.containers.get(new).attrs["HostConfig"]["Memory"] == 256 * MB
    assert "FN_MEMORY=256" in platform.docker.containers.get(new).attrs["Config"]["Env"]
    timed_out = await platform.invoke(fn["id"], slow)
    assert (timed_out.status, timed_out.json()) == (504, {"message": "Timed out"})


async def test_a_call_running_during_an_update_completes_and_the_next_call_runs_in_a_new_container(fn_platform, echo_image):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, config={"STAGE": "before"})
    assert (await env_of(platform, fn["id"]))["STAGE"] == "before"
    [old] = in_service(platform, fn["id"])

    running = asyncio.ensure_future(platform.invoke(fn["id"], json.dumps({"sleep_ms": 3000, "env": True})))
    await wait_until(lambda: in_service(platform, fn["id"]).get(old) == 2, "the slow call running in the old container", 30)
    await put(platform, f"/v2/fns/{fn['id']}", {"config": {"STAGE": "after"}})
    assert (await env_of(platform, fn["id"]))["STAGE"] == "after"
    assert not running.done()  # still running in the old container meanwhile

    finished = await running
    assert finished.status == 200 and finished.json()["STAGE"] == "before"  # as it started
    assert (await env_of(platform, fn["id"]))["STAGE"] == "after"  # the old container, now idle, is not taken
    served = in_service(platform, fn["id"])
    assert served.get(old, 2) == 2
    assert [calls for cid, calls in served.items() if cid != old] == [2]


async def test_a_deleted_fn_or_app_is_fns_404_and_its_hot_container_goes_at_its_idle_timeout(fn_platform, echo_image, caplog):
    caplog.set_level(logging.DEBUG, logger="fn_core")
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, idle_timeout=2)
    other = await platform.deploy(echo_image, app="doomed", name="other", idle_timeout=2)
    for target in (fn, other):
        answer = await platform.invoke(target["id"], "warm")
        assert (answer.status, answer.body) == (200, b"warm")
    [fn_container] = in_service(platform, fn["id"])
    [other_container] = in_service(platform, other["id"])

    assert (await platform.api("DELETE", f"/v2/fns/{fn['id']}")).status == 204
    for _ in range(2):
        gone = await platform.invoke(fn["id"], "x")
        assert (gone.status, gone.json()) == (404, {"message": "Fn not found"})
    assert in_service(platform, fn["id"]).get(fn_container, 1) == 1  # not used again

    assert (await platform.api("DELETE", f"/v2/apps/{other['app_id']}")).status == 204
    gone = await platform.invoke(other["id"], "x")
    assert (gone.status, gone.json()) == (404, {"message": "Fn not found"})
    assert (await platform.api("GET", f"/v2/fns/{other['id']}")).status == 404

    await wait_until(lambda: not platform.containers(fn["id"]) and not platform.containers(other["id"]),
                     "the deleted fns' containers removed at their idle timeout", GONE_WITHIN_S)
    assert in_service(platform, fn["id"]) == {} and in_service(platform, other["id"]) == {}
    retired = metric_samples(platform.runners[0].core.render_metrics())
    assert retired['fn_runner_containers_retired_total{reason="idle_timeout"}'] == 2
    removed = {r.getMessage() for r in caplog.records if r.name == "fn_core.runner.agent"}
    for container_id in (fn_container, other_container):
        assert f"container {container_id[:12]} idle for 2s: removing" in removed
    troubles = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert troubles == [], [r.getMessage() for r in troubles]


async def test_the_node_that_made_a_change_serves_it_on_the_very_next_call(fn_platform, echo_image):
    """No TTL window on the node that wrote: each PUT is seen by the call right after it, with the fn and
    its app cached by calls just before (a 5 s window would show the old value)."""
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, config={"N": "0"})
    app_id = fn["app_id"]
    for n in range(1, 4):
        for _ in range(2):  # the fn and its app are in the LB's lookup cache
            assert (await env_of(platform, fn["id"]))["N"] == str(n - 1)
        await put(platform, f"/v2/fns/{fn['id']}", {"config": {"N": str(n)}})
        assert (await env_of(platform, fn["id"]))["N"] == str(n)
        await put(platform, f"/v2/apps/{app_id}", {"config": {"APP_N": str(n)}})
        assert (await env_of(platform, fn["id"]))["APP_N"] == str(n)

    # a trigger's route too: app by name, trigger by source and its fn are all cached
    trigger = (await platform.api("POST", "/v2/triggers", {"name": "t", "app_id": app_id, "fn_id": fn["id"],
                                                          "type": "http", "source": "/hello"})).json()
    assert trigger.get("id"), trigger

    async def through_trigger() -> dict[str, str]:
        async with platform.session.post(f"{platform.url}/t/app/hello", data=json.dumps({"env": True})) as resp:
            assert resp.status == 200, await resp.text()
            return json.loads(await resp.read())

    assert (await through_trigger())["N"] == "3"
    await put(platform, f"/v2/fns/{fn['id']}", {"config": {"N": "4"}})
    assert (await through_trigger())["N"] == "4"
    assert (await platform.api("DELETE", f"/v2/triggers/{trigger['id']}")).status == 204
    async with platform.session.post(f"{platform.url}/t/app/hello", data="x") as resp:
        assert (resp.status, await resp.json()) == (404, {"message": "Trigger not found"})


async def test_a_change_made_while_calls_are_looking_the_fn_up_reaches_the_first_call_after_it(fn_platform, echo_image):
    """Calls keep coming while the PUT is written (lookups in flight on this node): none started after the
    PUT was answered runs the old version."""
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, config={"N": "0"})
    assert (await env_of(platform, fn["id"]))["N"] == "0"
    done = asyncio.Event()

    async def traffic() -> int:
        calls = 0
        while not done.is_set():
            answer = await platform.invoke(fn["id"], "x")
            assert (answer.status, answer.body) == (200, b"x")
            calls += 1
        return calls

    background = [asyncio.ensure_future(traffic()) for _ in range(3)]
    try:
        for n in range(1, 6):
            await put(platform, f"/v2/fns/{fn['id']}", {"config": {"N": str(n)}})
            assert (await env_of(platform, fn["id"]))["N"] == str(n)
    finally:
        done.set()
        served = await asyncio.gather(*background)
    assert all(calls > 0 for calls in served)
