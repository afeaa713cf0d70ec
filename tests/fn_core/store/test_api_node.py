"""Several LBs, one API node (Fn's FN_RUNNER_API_URL): real HTTP between the nodes, a real runner and Docker."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets

import aiohttp
import pytest

from fn_core import APIError, hookimpl
from fn_core.config import load_config
from fn_core.errors import ConfigError
from fn_core.lb.main import start_api, start_lb
from fn_core.plugins import get_plugin_manager
from fn_core.runner.main import start_runner
from fn_core.store.cache import DEFAULT_TTL_S


async def request(session, method: str, url: str, **kwargs):
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, resp.headers, await resp.read()


@pytest.fixture
async def cluster(tmp_path, docker_client):
    """An API node, one runner and two LBs reading from the API node; stopped after the test."""
    api_config = load_config(env={"FN_DB_URL": f"sqlite3://{tmp_path}/api.db"}, overrides={"host": "127.0.0.1"})
    api = await start_api(api_config, port=0)
    config = load_config(
        env={"FN_RUNNER_API_URL": api.url, "FN_CONTAINER_LABEL_TAG": f"fn-core-test-{secrets.token_hex(4)}"},
        overrides={"host": "127.0.0.1"},
    )
    pm = get_plugin_manager(config, load_entrypoints=False)
    runner = await start_runner(config, pm, host="127.0.0.1", port=0)
    lbs = [await start_lb(config, pm, port=0, runner_addresses=[runner.address]) for _ in range(2)]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    nodes = {"api": api, "lbs": lbs, "runner": runner, "session": session, "api_config": api_config}
    yield nodes
    await session.close()
    for lb in lbs:
        await lb.stop(grace=5)
    await runner.stop(grace=5)
    await nodes["api"].stop(grace=1)


async def deploy(session, api_url: str, image: str) -> dict:
    status, _, body = await request(session, "POST", f"{api_url}/v2/apps", json={"name": "shared"})
    assert status == 200, body
    app = (await (await session.get(f"{api_url}/v2/apps?name=shared")).json())["items"][0]
    status, _, body = await request(session, "POST", f"{api_url}/v2/fns", json={"name": "echo", "app_id": app["id"], "image": image})
    assert status == 200, body
    fn = __import__("json").loads(body)
    trigger = {"name": "t", "app_id": app["id"], "fn_id": fn["id"], "type": "http", "source": "/say/hi"}
    assert (await request(session, "POST", f"{api_url}/v2/triggers", json=trigger))[0] == 200
    return fn


async def test_every_lb_serves_the_fns_created_on_the_api_node(cluster, echo_image):
    session, api, lbs = cluster["session"], cluster["api"], cluster["lbs"]
    fn = await deploy(session, api.url, echo_image)

    for lb in lbs:
        status, headers, body = await request(session, "POST", f"{lb.url}/invoke/{fn['id']}", data=f"via {lb.port}")
        assert (status, body) == (200, f"via {lb.port}".encode())
        status, _, body = await request(session, "POST", f"{lb.url}/t/shared/say/hi", data=b"trigger")
        assert (status, body) == (200, b"trigger")
        status, _, body = await request(session, "POST", f"{lb.url}/invoke/01NOSUCHFN00000000000000000")
        assert (status, body) == (404, b'{"message": "Fn not found"}')
        status, _, body = await request(session, "GET", f"{lb.url}/t/nosuchapp/x")
        assert (status, body) == (404, b'{"message": "App not found"}')
        # apps and fns are changed on the API node only: an LB among several has no v2 API
        status, _, body = await request(session, "POST", f"{lb.url}/v2/apps", json={"name": "elsewhere"})
        assert (status, body) == (404, b'{"message": "Path not found"}')
    # ... and the API node runs no calls
    status, _, _ = await request(session, "POST", f"{api.url}/invoke/{fn['id']}")
    assert status == 404
    status, _, body = await request(session, "GET", f"{api.url}/v2/apps?name=elsewhere")
    assert b"elsewhere" not in body


async def test_an_unreachable_api_node_is_a_503_and_cached_fns_keep_running(cluster, echo_image, caplog):
    caplog.set_level(logging.INFO, logger="fn_core.store.api_node")
    session, api, lb = cluster["session"], cluster["api"], cluster["lbs"][0]
    fn = await deploy(session, api.url, echo_image)
    assert (await request(session, "POST", f"{lb.url}/invoke/{fn['id']}", data=b"warm"))[0] == 200
    port = api.port
    await api.stop(grace=1)

    status, _, body = await request(session, "POST", f"{lb.url}/invoke/{fn['id']}", data=b"still")
    assert (status, body) == (200, b"still")  # read within the 5 s cache: the outage does not stop it
    await asyncio.sleep(DEFAULT_TTL_S + 0.5)
    status, _, body = await request(session, "POST", f"{lb.url}/invoke/{fn['id']}", data=b"and still")
    assert (status, body) == (200, b"and still")  # past the TTL too: an LB rides out the outage on what it read
    for _ in range(2):
        status, headers, body = await request(session, "POST", f"{lb.url}/invoke/01NOTCACHED000000000000000")
        assert status == 503 and headers["Retry-After"]
        assert body == b'{"message": "Service temporarily unavailable: function definitions cannot be read"}'
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and api.url in warnings[0]  # the operator gets the address, once per outage

    cluster["api"] = await start_api(cluster["api_config"], port=port)  # back, same address
    status, _, body = await request(session, "POST", f"{lb.url}/invoke/01NOTCACHED000000000000000")
    assert (status, body) == (404, b'{"message": "Fn not found"}')  # not cached while it was failing
    assert any("answers again" in r.getMessage() for r in caplog.records)


SHORT_TTL_S = 1.0


@pytest.fixture
def short_ttl(monkeypatch):
    """The nodes started after it cache for SHORT_TTL_S, not 5 s: the same cache, a shorter wait for the test."""
    import fn_core.store.cache as cache_module

    monkeypatch.setattr(cache_module, "DEFAULT_TTL_S", SHORT_TTL_S)


@pytest.mark.usefixtures("short_ttl")  # before `cluster` starts its nodes
async def test_a_change_after_a_quiet_spell_is_what_the_first_burst_past_the_ttl_runs_on_every_lb(cluster, echo_image):
    """The audit's case, on a smaller clock: an fn called, then quiet for longer than the TTL, then changed (or
    deleted) on the API node, and a burst of concurrent calls more than a TTL later: every call runs the change."""
    session, api, lbs = cluster["session"], cluster["api"], cluster["lbs"]
    fn = await deploy(session, api.url, echo_image)

    async def run_burst() -> list[tuple[int, bytes]]:
        calls = [request(session, "POST", f"{lb.url}/invoke/{fn['id']}", data=b'{"env": true}') for lb in lbs for _ in range(10)]
        return [(status, body) for status, _, body in await asyncio.gather(*calls)]

    for lb in lbs:  # each LB has read the fn (and started its container)
        status, _, body = await request(session, "POST", f"{lb.url}/invoke/{fn['id']}", data=b'{"env": true}')
        assert status == 200 and "GREETING" not in json.loads(body), body

    await asyncio.sleep(SHORT_TTL_S * 1.6)  # quiet: 8 s for 5
    status, _, body = await request(session, "PUT", f"{api.url}/v2/fns/{fn['id']}", json={"config": {"GREETING": "updated"}})
    assert status == 200, body
    await asyncio.sleep(SHORT_TTL_S * 1.4)  # 7 s for 5
    answers = await run_burst()
    assert [(status, json.loads(body).get("GREETING")) for status, body in answers] == [(200, "updated")] * 20

    await asyncio.sleep(SHORT_TTL_S * 1.6)
    assert (await request(session, "DELETE", f"{api.url}/v2/fns/{fn['id']}"))[0] == 204
    await asyncio.sleep(SHORT_TTL_S * 1.4)
    assert await run_burst() == [(404, b'{"message": "Fn not found"}')] * 20


async def test_a_url_that_is_not_an_api_node_is_a_503_naming_what_it_answered(cluster, caplog):
    session, lb = cluster["session"], cluster["lbs"][0]
    config = load_config(env={"FN_RUNNER_API_URL": lb.url}, overrides={"host": "127.0.0.1"})  # an LB: no v2 API
    pm = get_plugin_manager(config, load_entrypoints=False)
    confused = await start_lb(config, pm, port=0, runner_addresses=[cluster["runner"].address])
    try:
        status, _, _ = await request(session, "POST", f"{confused.url}/invoke/01SOMEFN0000000000000000000")
        assert status == 503
        assert "answered 404 'Path not found'" in caplog.text
    finally:
        await confused.stop(grace=1)


def test_runner_api_url_settings_are_checked():
    with pytest.raises(ConfigError, match="is not an http"):
        load_config(env={"FN_RUNNER_API_URL": "fn-api:8080"})


async def test_an_lb_with_both_an_api_node_and_a_database_refuses_to_start(tmp_path):
    config = load_config(env={"FN_RUNNER_API_URL": "http://127.0.0.1:9", "FN_DB_URL": f"sqlite3://{tmp_path}/fn.db"})
    pm = get_plugin_manager(config, load_entrypoints=False)
    with pytest.raises(ConfigError, match="not both"):
        await start_lb(config, pm, host="127.0.0.1", port=0, runner_addresses=[])


async def test_an_fn_read_from_the_api_node_is_the_stored_fn(cluster, echo_image):
    """Same slot key as on a node with the store: the API's output-only annotations are not taken in."""
    from fn_core.models import slot_key
    from fn_core.store import SQLiteStore
    from fn_core.store.api_node import ApiNodeStore
    from fn_core.testing import make_call

    api, session = cluster["api"], cluster["session"]
    fn = await deploy(session, api.url, echo_image)
    await request(session, "PUT", f"{api.url}/v2/fns/{fn['id']}", json={"annotations": {"team": "blue"}})
    remote = ApiNodeStore(api.url)
    local = SQLiteStore(cluster["api_config"].db_path)
    try:
        via_api, stored = await remote.get_fn(fn["id"]), await local.get_fn(fn["id"])
        app_via_api, app_stored = await remote.get_app(fn["app_id"]), await local.get_app(fn["app_id"])
    finally:
        await remote.close()
        await local.close()
    assert via_api == stored and via_api.annotations == {"team": "blue"}
    assert slot_key(make_call(app=app_via_api, fn=via_api)) == slot_key(make_call(app=app_stored, fn=stored))


async def test_an_lb_reads_each_trigger_by_its_own_source_from_the_api_node(tmp_path):
    """Sources that differ only in slashes are different triggers, read through the API node as from a store of the
    LB's own: `/t/app//foo` must not run the fn of `/t/app/foo`."""
    from fn_core.store.api_node import ApiNodeStore

    api = await start_api(load_config(env={"FN_DB_URL": f"sqlite3://{tmp_path}/api.db"}), host="127.0.0.1", port=0)
    remote = ApiNodeStore(api.url)
    try:
        async with aiohttp.ClientSession(api.url) as session:
            app = json.loads((await request(session, "POST", "/v2/apps", json={"name": "site"}))[2])
            made = {}
            for name, source in (("one", "/foo"), ("two", "//foo"), ("three", "/foo/")):
                fn = json.loads((await request(session, "POST", "/v2/fns", json={"name": name, "app_id": app["id"],
                                                                                  "image": "fn/echo:1"}))[2])
                trigger = {"name": name, "app_id": app["id"], "fn_id": fn["id"], "type": "http", "source": source}
                status, _, body = await request(session, "POST", "/v2/triggers", json=trigger)
                assert status == 200, body
                made[source] = fn["id"]
        for source, fn_id in made.items():
            assert (await remote.get_trigger_by_source(app["id"], "http", source)).fn_id == fn_id, source
    finally:
        await remote.close()
        await api.stop(grace=1)


async def test_a_frozen_api_node_costs_one_lookup_its_timeout_and_the_next_ones_a_moment(caplog):
    """An API node stopped with SIGSTOP: the kernel takes the connection into its backlog and nobody answers. The
    first lookup waits the timeout and says so in the log (aiohttp's timeout is a TimeoutError without a message,
    which read `unavailable: TimeoutError: `); the next ones wait for the one check under way a moment only, where
    each waited the whole timeout before."""
    import socket

    from fn_core import logfmt
    from fn_core.errors import ServiceUnavailable
    from fn_core.store.api_node import RECHECK_WAIT_S, ApiNodeStore

    frozen = socket.socket()
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(8)  # and never accepts: what a frozen process's listening socket does
    port = frozen.getsockname()[1]
    store = ApiNodeStore(f"http://fn:s3cret@127.0.0.1:{port}", timeout_s=2.0)
    caplog.set_level(logging.DEBUG, logger="fn_core.store.api_node")
    loop = asyncio.get_running_loop()
    waits = []
    try:
        for lookup in (store.get_fn("01FROZEN00000000000000000"), store.get_fn("01OTHER000000000000000000"),
                       store.get_app("01APP00000000000000000000"), store.get_app_by_name("shared")):
            began = loop.time()
            with pytest.raises(ServiceUnavailable):
                await lookup
            waits.append(loop.time() - began)
    finally:
        await store.close()
        frozen.close()
    assert waits[0] >= 1.9 and max(waits[1:]) < 1.0, waits  # the timeout once, then the check's moment (0.25 s)
    assert RECHECK_WAIT_S < 1.0
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == [logging.WARNING]  # the outage once (the check under way is not over)
    message, _, fields = lines[0][1].partition(" api_node=")
    assert message == "API node unavailable (FN_RUNNER_API_URL)"
    assert logfmt.parse("api_node=" + fields) == {"api_node": f"http://fn:***@127.0.0.1:{port}", "reason": "timed out after 2 s"}
    assert "s3cret" not in caplog.text


class BearerOnly:
    """The check_request example of the hooks' docs, on the API node: what README advises for the v2 API."""

    @hookimpl
    def check_request(self, request):
        if request.headers.get("Authorization", "") != "Bearer s3cret":
            raise APIError("a valid bearer token is needed", status=401, headers={"WWW-Authenticate": "Bearer"})


async def test_an_api_node_that_asks_for_a_token_serves_the_lbs_that_send_it_and_names_the_setting_to_the_others(
    tmp_path, docker_client, echo_image, caplog
):
    api_config = load_config(env={"FN_DB_URL": f"sqlite3://{tmp_path}/api.db"}, overrides={"host": "127.0.0.1"})
    api_pm = get_plugin_manager(api_config, load_entrypoints=False, extra_plugins=[("bearer-only", BearerOnly())])
    api = await start_api(api_config, api_pm, port=0)
    env = {"FN_RUNNER_API_URL": api.url, "FN_CONTAINER_LABEL_TAG": f"fn-core-test-{secrets.token_hex(4)}"}
    plain = load_config(env=env, overrides={"host": "127.0.0.1"})
    trusted = load_config(env={**env, "FN_RUNNER_API_AUTHORIZATION": "Bearer s3cret"}, overrides={"host": "127.0.0.1"})
    assert "s3cret" not in repr(trusted)
    pm = get_plugin_manager(plain, load_entrypoints=False)
    runner = await start_runner(plain, pm, host="127.0.0.1", port=0)
    lbs = [await start_lb(config, pm, port=0, runner_addresses=[runner.address]) for config in (plain, trusted)]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        assert (await request(session, "POST", f"{api.url}/v2/apps", json={"name": "shared"}))[0] == 401
        app = await (await session.post(f"{api.url}/v2/apps", json={"name": "shared"}, headers={"Authorization": "Bearer s3cret"})).json()
        fn = await (await session.post(f"{api.url}/v2/fns", json={"name": "echo", "app_id": app["id"], "image": echo_image},
                                       headers={"Authorization": "Bearer s3cret"})).json()
        status, _, body = await request(session, "POST", f"{lbs[0].url}/invoke/{fn['id']}", data="hi")
        assert (status, json.loads(body)) == (503, {"message": "Service temporarily unavailable: function definitions cannot be read"})
        assert ("answered 401 'a valid bearer token is needed'; an API node that asks for credentials needs "
                "FN_RUNNER_API_AUTHORIZATION on its LBs") in caplog.text
        status, _, body = await request(session, "POST", f"{lbs[1].url}/invoke/{fn['id']}", data="hi")
        assert (status, body) == (200, b"hi")
    finally:
        await session.close()
        for lb in lbs:
            await lb.stop(grace=5)
        await runner.stop(grace=5)
        await api.stop(grace=1)


@pytest.mark.parametrize("value", ["Bearer s3cret\r\nX-Evil: 1", " Bearer s3cret", "Bearer s3cr\u00e9t"])
def test_an_authorization_that_is_not_one_printable_line_stops_start_up_without_quoting_it(value):
    with pytest.raises(ConfigError) as refused:
        load_config(env={"FN_RUNNER_API_AUTHORIZATION": value})
    assert "must be one line of printable ASCII" in str(refused.value) and "s3cr" not in str(refused.value)


async def test_credentials_both_in_the_url_and_in_the_authorization_stop_start_up_naming_both(tmp_path):
    config = load_config(env={"FN_RUNNER_API_URL": "http://fn:pw@127.0.0.1:9", "FN_RUNNER_API_AUTHORIZATION": "Bearer s3cret"})
    pm = get_plugin_manager(config, load_entrypoints=False)
    with pytest.raises(ConfigError) as refused:
        await start_lb(config, pm, host="127.0.0.1", port=0, runner_addresses=[])
    assert str(refused.value) == ("runner_api_url has credentials in it (user:password@) and runner_api_authorization is "
                                  "set: give the API node's credentials in one of them")


async def test_an_api_node_without_the_lbs_address_says_its_endpoints_name_itself(tmp_path, caplog):
    """Its fns' invokeEndpoint would name the API node, which answers invoke with 404: the operator is told at start."""
    warnings = []
    for env in ({}, {"FN_PUBLIC_LB_URL": "http://lb.example:8080"}):
        caplog.clear()
        config = load_config(env={"FN_DB_URL": f"sqlite3://{tmp_path}/api.db", **env}, overrides={"host": "127.0.0.1"})
        api = await start_api(config, port=0)
        await api.stop(grace=1)
        warnings.append([r.getMessage() for r in caplog.records if r.levelname == "WARNING"])
    assert warnings == [["FN_PUBLIC_LB_URL is not set: the invokeEndpoint and httpEndpoint annotations of fns and triggers "
                         "will name this API node, which runs no calls; set it to the LBs' address"], []]
