"""A function written with Fn's Node FDK runs on fn-core as on Fn: real `fn-core lb` + `fn-core runner` processes,
real gRPC between them, real Docker, and the image `node_fdk` builds (npm's ``@fnproject/fdk``, ``node/func.js``).

The other tests' functions are the Python FDK's; platforms run functions in every language Fn has an FDK for, and
each FDK speaks http-stream in its own way (the Node FDK links its socket in place and answers through node's own
HTTP server)."""

from __future__ import annotations

import aiohttp
import pytest

from .conftest import deploy
from .node_fdk import FDK_VERSION, build_node_function

TIMEOUT = aiohttp.ClientTimeout(total=30)  # bounded: a hang fails the test, it does not hold it


@pytest.fixture(scope="module")
def node_image(docker_client):
    return build_node_function(docker_client)


async def test_a_node_fdk_function_is_invoked_kept_hot_and_its_failures_are_fns(platform, node_image):
    runner = await platform.runner()
    lb = await platform.lb([runner])
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        ids = await deploy(s, node_image, app="nodeapp", timeout=2)
        fn_id, app_id = ids["fn"]["id"], ids["app"]["id"]
        trigger = {"name": "t", "app_id": app_id, "fn_id": fn_id, "type": "http", "source": "/hello"}
        async with s.post("/v2/triggers", json=trigger) as r:
            assert r.status == 200, await r.text()

        answers = []
        for body in ("first", "second"):
            async with s.post(f"/invoke/{fn_id}", data=body) as r:
                assert r.status == 200, await r.text()
                assert r.headers["Fn-Fdk-Version"].startswith(f"fdk-node/{FDK_VERSION}")
                answer = await r.json(content_type=None)
                assert answer["callId"] == r.headers["Fn-Call-Id"]
                answers.append(answer)
        # the FDK got the call's ids and body; the second call was the same hot container's second
        assert [(a["input"], a["app"], a["fn"], a["served"]) for a in answers] == [
            ("first", app_id, fn_id, 1), ("second", app_id, fn_id, 2)]

        # through a trigger: the request's method, URL and headers reach the FDK; its status and headers the client
        async with s.put("/t/nodeapp/hello?x=1", data="created", headers={"X-Mine": "mine"}) as r:
            assert r.status == 201, await r.text()
            assert r.headers["X-Made-By"] == "fdk-node"
            answer = await r.json(content_type=None)
        assert (answer["method"], answer["url"], answer["mine"]) == ("PUT", f"{lb.url}/t/nodeapp/hello?x=1", "mine")
        assert answer["served"] == 3

        # a function that throws is Fn's 502; one over its timeout Fn's 504
        async with s.post(f"/invoke/{fn_id}", data="throw") as r:
            assert (r.status, await r.json()) == (502, {"message": "function failed"})
        async with s.post(f"/invoke/{fn_id}", data="sleep") as r:
            assert (r.status, await r.json()) == (504, {"message": "Timed out"})
        # after the timeout its container was retired: the next call gets a new one, which answers
        async with s.post(f"/invoke/{fn_id}", data="after") as r:
            assert r.status == 200, await r.text()
            assert (await r.json(content_type=None))["served"] == 1
