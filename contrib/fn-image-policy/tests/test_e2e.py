"""As a user runs it: the plugin pip-installed, an LB with its store and a runner, real HTTP, real Docker."""


from fn_core.testing import listed_plugin

POLICY = '[plugins.image-policy]\nregistries = ["docker.io/fn-core-test"]\nsyslog_hosts = ["logs.example.com:514"]\n'


def test_fn_core_plugins_lists_the_installed_distribution():
    entry = listed_plugin("image-policy")
    assert (entry["distribution"], entry["version"], entry["status"]) == ("fn-image-policy", "0.1.0", "active")


async def test_an_fn_or_app_outside_the_policy_is_refused_and_nothing_is_stored(fn_platform, echo_image):
    platform = await fn_platform(toml=POLICY)
    fn = await platform.deploy(echo_image)  # fn-core-test/echo:latest: docker.io/fn-core-test/echo
    assert (await platform.invoke(fn["id"], "hello")).body == b"hello"
    refused = await platform.api("POST", "/v2/fns", {"name": "evil", "app_id": fn["app_id"], "image": "evil.example.com/fn:1"})
    assert (refused.status, refused.json()) == (400, {"message": "image evil.example.com/fn:1 (evil.example.com/fn) is not "
                                                                 "from a registry this platform allows: docker.io/fn-core-test"})
    refused = await platform.api("PUT", f"/v2/fns/{fn['id']}", {"image": "python:3.12"})
    assert refused.status == 400 and "(docker.io/library/python) is not from a registry" in refused.json()["message"]
    assert [f["image"] for f in (await platform.api("GET", f"/v2/fns?app_id={fn['app_id']}")).json()["items"]] == [echo_image]

    refused = await platform.api("POST", "/v2/apps", {"name": "logged", "syslog_url": "tcp://127.0.0.1:9"})
    assert (refused.status, refused.json()) == (400, {"message": "syslog_url tcp://127.0.0.1:9 sends to 127.0.0.1:9, not a log "
                                                                 "host this platform allows: logs.example.com:514"})
    assert (await platform.api("GET", "/v2/apps?name=logged")).json()["items"] == []
    assert (await platform.api("POST", "/v2/apps", {"name": "logged", "syslog_url": "tcp://logs.example.com:514"})).status == 200


async def test_an_fn_saved_before_the_policy_is_refused_at_its_calls_and_nothing_runs(fn_platform, echo_image):
    before = await fn_platform(env={"FN_DISABLE_PLUGINS": "image-policy"})
    fn = await before.deploy(echo_image)
    strict = await fn_platform(toml='[plugins.image-policy]\nregistries = ["registry.example.com"]\n',
                               env={"FN_DB_URL": before.config.db_url})  # the same store, the plugin on
    result = await strict.invoke(fn["id"], "hello")
    assert (result.status, result.json()) == (400, {"message": f"image {echo_image} (docker.io/fn-core-test/echo) is not from "
                                                               "a registry this platform allows: registry.example.com"})
    assert strict.containers(fn["id"]) == []
