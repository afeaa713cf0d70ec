"""As a user runs it: the plugin pip-installed, an LB + runner, real Docker, a function that echoes its env."""

import json

from fn_core.testing import listed_plugin

CONFIG = '[plugins.call-env]\nextensions = { FN_CHEESE = "cheddar", REGION = "eu-1" }\nexpose = ["FN_CHEESE"]\n'


def test_fn_core_plugins_lists_the_installed_distribution():
    entry = listed_plugin("call-env")
    assert (entry["distribution"], entry["version"], entry["status"]) == ("fn-call-env", "0.1.0", "active")


async def test_the_function_sees_the_exposed_extension_as_an_env_var(fn_platform, echo_image):
    platform = await fn_platform(toml=CONFIG)
    fn = await platform.deploy(echo_image)
    result = await platform.invoke(fn["id"], json.dumps({"env": True}))
    assert result.status == 200
    env = result.json()
    assert env["FN_CHEESE"] == "cheddar"
    assert "REGION" not in env  # sent as an extension, but not chosen for exposure
    assert env["FN_FN_ID"] == fn["id"]
