"""As a user runs it: the plugin pip-installed, an LB + runner, real Docker, the fdk echo function."""


from fn_core.testing import listed_plugin

SHARES = "fnproject.io/cpu-shares"


def test_fn_core_plugins_lists_the_installed_distribution():
    entry = listed_plugin("cpu-shares")
    assert (entry["distribution"], entry["version"], entry["status"]) == ("fn-cpu-shares", "0.1.0", "active")
    assert {"override_call", "modify_container_options"} <= set(entry["hooks"])


async def test_the_annotation_becomes_the_containers_cpu_shares(fn_platform, echo_image, docker_client):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image, annotations={SHARES: 512})
    result = await platform.invoke(fn["id"], "hello")
    assert (result.status, result.body) == (200, b"hello")
    (container,) = platform.containers(fn["id"])
    assert docker_client.api.inspect_container(container.id)["HostConfig"]["CpuShares"] == 512


async def test_shares_derived_from_memory_when_configured(fn_platform, echo_image, docker_client):
    platform = await fn_platform(toml="[plugins.cpu-shares]\nshares_per_mb = 4\n")
    fn = await platform.deploy(echo_image, memory=256)
    assert (await platform.invoke(fn["id"], "x")).status == 200
    (container,) = platform.containers(fn["id"])
    assert docker_client.api.inspect_container(container.id)["HostConfig"]["CpuShares"] == 1024


async def test_a_bad_value_is_refused_at_deploy_and_the_fn_keeps_its_shares(fn_platform, echo_image, docker_client):
    platform = await fn_platform()
    message = {"message": f"annotation {SHARES} must be an integer cpu-shares value, got 'lots'"}
    app = (await platform.api("POST", "/v2/apps", {"name": "app"})).json()
    refused = await platform.api("POST", "/v2/fns", {"name": "bad", "app_id": app["id"], "image": echo_image, "annotations": {SHARES: "lots"}})
    assert (refused.status, refused.json()) == (400, message)
    assert (await platform.api("GET", f"/v2/fns?app_id={app['id']}")).json()["items"] == []  # nothing stored
    refused = await platform.api("PUT", f"/v2/apps/{app['id']}", {"annotations": {SHARES: 1}})
    assert refused.status == 400 and "must be in 2..262144" in refused.json()["message"]

    fn = await platform.deploy(echo_image, annotations={SHARES: 512})
    refused = await platform.api("PUT", f"/v2/fns/{fn['id']}", {"annotations": {SHARES: "lots"}})
    assert (refused.status, refused.json()) == (400, message)
    assert (await platform.api("GET", f"/v2/fns/{fn['id']}")).json()["annotations"][SHARES] == 512
    result = await platform.invoke(fn["id"], "hello")
    assert (result.status, result.body) == (200, b"hello")
    (container,) = platform.containers(fn["id"])
    assert docker_client.api.inspect_container(container.id)["HostConfig"]["CpuShares"] == 512


async def test_an_fn_saved_before_the_plugin_was_installed_gets_a_clear_400_per_call(fn_platform, echo_image):
    # the fn is written with the plugin turned off (as if installed later); its calls are then checked and refused
    platform = await fn_platform(env={"FN_DISABLE_PLUGINS": "cpu-shares"})
    fn = await platform.deploy(echo_image, annotations={SHARES: "lots"})
    later = await fn_platform(env={"FN_DB_URL": platform.config.db_url})  # the same store, the plugin on
    result = await later.invoke(fn["id"], "hello")
    assert result.status == 400
    assert result.json() == {"message": f"annotation {SHARES} must be an integer cpu-shares value, got 'lots'"}
    assert later.containers(fn["id"]) == []
