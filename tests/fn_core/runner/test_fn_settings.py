"""An fn's own runner settings, as annotations over the runner's: ``fn-core/max-calls-per-container`` over
FN_MAX_CALLS_PER_CONTAINER, ``fn-core/start-timeout-msecs`` over FN_HOT_START_TIMEOUT_MSECS. Through the v2 API,
the LB, gRPC and real Docker containers."""

from __future__ import annotations

KEY = "fn-core/max-calls-per-container"
START_KEY = "fn-core/start-timeout-msecs"


async def served_by(platform, fn_id: str, calls: int) -> list[list[str]]:
    """Call the fn ``calls`` times in a row; after each, the ids of its containers in service on the runner."""
    agent = platform.runners[0].agent
    seen = []
    for i in range(calls):
        result = await platform.invoke(fn_id, f"call {i}")
        assert (result.status, result.body) == (200, f"call {i}".encode())
        seen.append(sorted(c.id for c in agent.containers() if c.queue.call.fn_id == fn_id))
    return seen


async def test_an_fn_annotation_recycles_its_containers_where_the_runner_would_not(fn_platform, echo_image):
    platform = await fn_platform(env={"FN_MAX_CALLS_PER_CONTAINER": "0", "FN_FREEZE_IDLE_MSECS": "-1"})
    leaky = await platform.deploy(echo_image, name="leaky", annotations={KEY: 2})
    steady = await platform.deploy(echo_image, name="steady")

    seen = await served_by(platform, leaky["id"], 5)
    # calls 1-2 in one container, retired as the 2nd is answered; 3-4 in a second; 5 in a third
    assert [len(ids) for ids in seen] == [1, 0, 1, 0, 1]
    assert len({seen[0][0], seen[2][0], seen[4][0]}) == 3
    steady_seen = await served_by(platform, steady["id"], 4)
    assert all(ids == steady_seen[0] for ids in steady_seen) and len(steady_seen[0]) == 1  # the runner's default: none


async def test_an_fn_annotation_of_0_keeps_its_container_and_an_app_annotation_applies_to_its_fns(fn_platform, echo_image):
    platform = await fn_platform(env={"FN_MAX_CALLS_PER_CONTAINER": "1", "FN_FREEZE_IDLE_MSECS": "-1"})
    kept = await platform.deploy(echo_image, name="kept", annotations={KEY: 0})
    seen = await served_by(platform, kept["id"], 3)
    assert all(ids == seen[0] for ids in seen) and len(seen[0]) == 1

    app = (await platform.api("POST", "/v2/apps", {"name": "every3", "annotations": {KEY: "3"}})).json()
    per_app = await platform.deploy(echo_image, app="every3", name="f")
    assert app["id"] == per_app["app_id"]
    assert [len(ids) for ids in await served_by(platform, per_app["id"], 4)] == [1, 1, 0, 1]
    # the runner's own default still applies to an fn that says nothing: a new container every call
    plain = await platform.deploy(echo_image, name="plain")
    assert [len(ids) for ids in await served_by(platform, plain["id"], 2)] == [0, 0]


async def test_an_fn_annotation_gives_a_slow_starting_function_the_start_time_it_needs(fn_platform, slow_start_image):
    platform = await fn_platform(env={"FN_HOT_START_TIMEOUT_MSECS": "1000"})
    slow = {"config": {"START_DELAY_MS": "2500"}}
    impatient = await platform.deploy(slow_start_image, name="impatient", **slow)
    patient = await platform.deploy(slow_start_image, name="patient", annotations={START_KEY: "10000"}, **slow)

    refused = await platform.invoke(impatient["id"], "x")
    assert refused.status == 504 and "Container initialization timed out" in refused.json()["message"]
    answered = await platform.invoke(patient["id"], "x")
    assert (answered.status, answered.body) == (200, b"x")
    bad = await platform.api("PUT", f"/v2/fns/{patient['id']}", {"annotations": {START_KEY: 0}})
    assert bad.json() == {"message": f"annotation {START_KEY} must be a whole number in 1..600000, got 0"}


async def test_a_runner_refuses_a_call_whose_setting_annotation_is_not_a_number_and_starts_nothing(start, rc):
    """What the v2 API cannot have stored may still come from another LB (or an override_call plugin)."""
    node = await start()
    result = await rc.run(node.address, rc.call(annotations={KEY: "often"}), b"x")
    assert (result.started, result.finished.success, result.finished.errorCode) == (False, False, 400)
    assert result.finished.errorStr == f"annotation {KEY} must be a whole number >= 0 (0: no limit), got 'often'"
    assert node.agent.containers() == [] and rc.containers() == []
