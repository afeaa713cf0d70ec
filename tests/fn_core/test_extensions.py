"""Call extensions end to end: what an `override_call` plugin sets reaches `modify_container_options` on the
runner, and calls whose extensions differ never share a container (real LB, gRPC, runner and Docker)."""

from __future__ import annotations

import json

from fn_core import hookimpl


class TenantContainers:
    """A tenant per request (its X-Tenant header); each tenant's containers carry its name."""

    @hookimpl
    def override_call(self, call, extensions):
        extensions["example.com/tenant"] = call.headers.get("X-Tenant", ["none"])[0]

    @hookimpl
    def modify_container_options(self, extensions, options):
        options["environment"]["TENANT"] = extensions["example.com/tenant"]


async def test_calls_with_different_extensions_run_in_containers_of_their_own(fn_platform, echo_image):
    platform = await fn_platform(plugins=(TenantContainers(),))
    fn = await platform.deploy(echo_image, name="tenanted")
    seen = []
    for tenant in ("alpha", "beta", "alpha"):
        result = await platform.invoke(fn["id"], json.dumps({"env": True}), headers={"X-Tenant": tenant})
        assert result.status == 200, result.body
        seen.append(result.json()["TENANT"])
    assert seen == ["alpha", "beta", "alpha"]  # beta never ran in alpha's container
    assert len(platform.containers(fn["id"])) == 2  # and alpha's second call found its own warm one
