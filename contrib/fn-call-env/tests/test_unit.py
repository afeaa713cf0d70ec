"""Fast checks of the plugin's logic through a real plugin manager (no Docker)."""

import pytest

import fn_call_env
from fn_core.config import load_config
from fn_core.errors import ConfigError
from fn_core.models import Call
from fn_core.plugins import get_plugin_manager
from fn_core.testing import lb_prepare, make_call


def manager(tmp_path, toml):
    path = tmp_path / "fn.toml"
    path.write_text(toml)
    return get_plugin_manager(load_config(path, env={}), load_entrypoints=False, extra_plugins=[("call-env", fn_call_env)])


def test_lb_adds_extensions_and_runner_exposes_them(tmp_path):
    pm = manager(tmp_path, '[plugins.call-env]\nextensions = { FN_CHEESE = "cheddar", OTHER = "x" }\nexpose = ["FN_CHEESE", "FN_WINE"]\n')
    extensions = {"FN_WINE": "rioja"}
    pm.hook.override_call(call=Call(id="c"), extensions=extensions)
    assert extensions == {"FN_CHEESE": "cheddar", "OTHER": "x", "FN_WINE": "rioja"}
    options = {"environment": {"FN_APP_ID": "a"}}
    pm.hook.modify_container_options(call=None, extensions=extensions, options=options)
    assert options["environment"] == {"FN_APP_ID": "a", "FN_CHEESE": "cheddar", "FN_WINE": "rioja"}


def test_expose_defaults_to_the_configured_keys_and_handles_list_env(tmp_path):
    pm = manager(tmp_path, '[plugins.call-env]\nextensions = { A = "1" }\n')
    options = {"environment": ["X=y"]}
    pm.hook.modify_container_options(call=None, extensions={"A": "1", "B": "2"}, options=options)
    assert options["environment"] == ["X=y", "A=1"]


@pytest.mark.parametrize(("toml", "said"), [
    ('extensions = { A = 1 }', "extensions must be a table of strings"),
    ('expose = ["not a name"]', "expose must list env var names"),
    ("expose = 3", "expose must list env var names"),
    ('extensions = { FN_LISTENER = "unix:/tmp/x.sock", FN_APP_ID = "spoofed" }', "FN_LISTENER, FN_APP_ID: the runner sets them"),
    ('extension = { A = "1" }', "unknown keys \\['extension'\\]; known: \\['expose', 'extensions'\\] \\(did you mean 'extensions'\\?\\)"),
])
def test_bad_settings_stop_startup(tmp_path, toml, said):
    with pytest.raises(ConfigError, match=f"call-env.*{said}"):
        manager(tmp_path, f"[plugins.call-env]\n{toml}\n")


def test_each_plugin_manager_keeps_its_own_settings(tmp_path):
    # tests and `fn-core serve` build several managers in one process: a later one must not reset an earlier one
    cheese = manager(tmp_path, '[plugins.call-env]\nextensions = { FN_CHEESE = "cheddar" }\n')
    wine = manager(tmp_path, '[plugins.call-env]\nextensions = { FN_WINE = "rioja" }\n')
    unset = manager(tmp_path, "")
    assert lb_prepare(cheese, make_call()) == {"FN_CHEESE": "cheddar"}
    assert lb_prepare(wine, make_call()) == {"FN_WINE": "rioja"}
    assert lb_prepare(unset, make_call()) == {}
    options = {"environment": {}}
    cheese.hook.modify_container_options(call=None, extensions={"FN_CHEESE": "brie", "FN_WINE": "rioja"}, options=options)
    assert options["environment"] == {"FN_CHEESE": "brie"}  # its own `expose`, not the last manager's
