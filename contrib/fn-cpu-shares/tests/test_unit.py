"""Fast checks of the plugin's logic through a real plugin manager (no Docker)."""

import pytest

import fn_cpu_shares
from fn_core import APIError
from fn_core.config import load_config
from fn_core.errors import ConfigError
from fn_core.models import App, Call, Fn
from fn_core.plugins import get_plugin_manager
from fn_core.testing import lb_prepare, make_call


def manager(tmp_path, toml=""):
    path = tmp_path / "fn.toml"
    path.write_text(toml)
    return get_plugin_manager(load_config(path, env={}), load_entrypoints=False, extra_plugins=[("cpu-shares", fn_cpu_shares)])


def override(pm, **call_fields):
    extensions = {}
    pm.hook.override_call(call=Call(id="c", **call_fields), extensions=extensions)
    return extensions


@pytest.mark.parametrize("value", [512, "512", 2, 262144])
def test_annotation_becomes_an_extension_and_then_cpu_shares(tmp_path, value):
    pm = manager(tmp_path)
    extensions = override(pm, annotations={"fnproject.io/cpu-shares": value})
    options = {}
    pm.hook.modify_container_options(call=None, extensions=extensions, options=options)
    assert options == {"cpu_shares": int(value)}


@pytest.mark.parametrize(("value", "message"), [("lots", "must be an integer"), (1, "must be in 2..262144"),
                                                (300000, "must be in 2..262144"), (1.5, "must be an integer"), (True, "must be an integer"),
                                                ("²", "must be an integer"), ("٥١٢", "must be an integer")])
def test_bad_values_are_a_400_that_says_what_is_wrong(tmp_path, value, message):
    with pytest.raises(APIError) as err:
        override(manager(tmp_path), annotations={"fnproject.io/cpu-shares": value})
    assert err.value.status == 400 and message in err.value.message and "fnproject.io/cpu-shares" in err.value.message


def test_a_bad_value_is_refused_when_the_app_or_fn_is_saved(tmp_path):
    pm = manager(tmp_path, '[plugins.cpu-shares]\nannotation = "acme.com/weight"\n')
    with pytest.raises(APIError, match="annotation acme.com/weight must be an integer") as err:
        pm.hook.validate_fn(app=App(name="a"), fn=Fn(name="f", app_id="a", image="i", annotations={"acme.com/weight": "lots"}))
    assert err.value.status == 400
    with pytest.raises(APIError, match=r"must be in 2\.\.262144"):
        pm.hook.validate_app(app=App(name="a", annotations={"acme.com/weight": 1}))
    # good values, and annotations this plugin does not read, pass
    pm.hook.validate_fn(app=App(name="a"), fn=Fn(name="f", app_id="a", image="i", annotations={"acme.com/weight": "512"}))
    pm.hook.validate_app(app=App(name="a", annotations={"fnproject.io/cpu-shares": "lots"}))


def test_no_annotation_no_shares_unless_a_ratio_is_configured(tmp_path):
    assert override(manager(tmp_path), memory=256) == {}
    pm = manager(tmp_path, "[plugins.cpu-shares]\nshares_per_mb = 8\n")
    assert override(pm, memory=256) == {fn_cpu_shares.EXTENSION: "2048"}
    assert override(pm, memory=8192 * 64) == {fn_cpu_shares.EXTENSION: "262144"}  # clamped


def test_annotation_name_is_configurable(tmp_path):
    pm = manager(tmp_path, '[plugins.cpu-shares]\nannotation = "acme.com/weight"\n')
    assert override(pm, annotations={"acme.com/weight": 100}) == {fn_cpu_shares.EXTENSION: "100"}


def test_bad_settings_stop_startup(tmp_path):
    with pytest.raises(ConfigError, match="shares_per_mb"):
        manager(tmp_path, '[plugins.cpu-shares]\nshares_per_mb = "many"\n')
    with pytest.raises(ConfigError, match="unknown keys"):
        manager(tmp_path, "[plugins.cpu-shares]\nratio = 1\n")


def test_each_plugin_manager_keeps_its_own_settings(tmp_path):
    # tests and `fn-core serve` build several managers in one process: a later one must not reset an earlier one
    ratio_8 = manager(tmp_path, "[plugins.cpu-shares]\nshares_per_mb = 8\n")
    renamed = manager(tmp_path, '[plugins.cpu-shares]\nannotation = "acme.com/weight"\n')
    defaults = manager(tmp_path)
    call = make_call()  # memory 128 MB, no annotation
    assert lb_prepare(ratio_8, call) == {fn_cpu_shares.EXTENSION: "1024"}
    assert lb_prepare(defaults, call) == {}
    weighted = make_call(app=App(name="app", id="app-id", annotations={"acme.com/weight": 100}))
    assert lb_prepare(renamed, weighted) == {fn_cpu_shares.EXTENSION: "100"}
    assert lb_prepare(ratio_8, weighted) == {fn_cpu_shares.EXTENSION: "1024"}  # its annotation is still the default one
