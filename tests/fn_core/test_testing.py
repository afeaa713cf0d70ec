"""The test kit plugin authors use (fn_core.testing), exercised the way they would."""

import importlib
import subprocess
import sys

import pytest

from fn_core import hookimpl
from fn_core.testing import HookRecorder, build_plugin_manager, lb_prepare, listed_plugin, make_call


class TagCalls:
    @hookimpl
    def override_call(self, call, extensions):
        extensions["tagged"] = call.fn_id

    @hookimpl
    def modify_container_options(self, extensions, options):
        options["environment"]["TAGGED"] = extensions["tagged"]


def test_make_plugin_manager_registers_the_plugin_with_its_settings(make_plugin_manager):
    seen = {}

    class Configured:
        @hookimpl
        def configure(self, config):
            seen.update(config.plugin_settings("configured"))

    make_plugin_manager(Configured(), toml="[plugins.configured]\nlevel = 3\n")
    assert seen == {"level": 3}


async def test_platform_fixture_runs_a_real_call_and_the_recorder_sees_the_hooks(fn_platform, echo_image, docker_client):
    platform = await fn_platform(plugins=(TagCalls(),))
    recorder = HookRecorder(platform.pm)
    fn = await platform.deploy(echo_image, name="tagged")
    result = await platform.invoke(fn["id"], '{"env": true}')
    assert result.status == 200 and result.json()["TAGGED"] == fn["id"]
    (override,) = recorder.calls_of("override_call")
    assert override.kwargs["extensions"]["tagged"] == fn["id"]
    assert [c.kwargs["call"].fn_id for c in recorder.calls_of("modify_container_options")] == [fn["id"]]
    (container,) = platform.containers(fn["id"])
    assert "TAGGED=" + fn["id"] in docker_client.api.inspect_container(container.id)["Config"]["Env"]
    recorder.undo()


def test_make_call_builds_the_call_as_the_lb_does_and_lb_prepare_runs_the_overrides(make_plugin_manager):
    from fn_core.models import App, Fn
    from fn_core.testing import lb_prepare, make_call

    app = App(name="shop", id="a1", config={"LEVEL": "app", "DB": "x"}, annotations={"team": "red"})
    fn = Fn(name="cart", app_id="a1", id="f1", image="shop/cart:1", memory=256, config={"LEVEL": "fn"})
    call = make_call(app=app, fn=fn, headers={"x-trace": "t1"})
    assert call.config == {"LEVEL": "fn", "DB": "x", "FN_APP_ID": "a1", "FN_FN_ID": "f1", "FN_MEMORY": "256", "FN_TYPE": "sync"}
    assert call.headers == {"X-Trace": ["t1"]} and call.annotations == {"team": "red"} and call.memory == 256
    assert lb_prepare(make_plugin_manager(TagCalls()), call) == {"tagged": "f1"}


def test_an_installed_plugin_passed_in_too_is_registered_once_under_its_entry_point_name(tmp_path, monkeypatch):
    # an author's own plugin, pip-installed (a dist-info with its entry point) and handed to the kit as well
    (tmp_path / "kit_installed_plugin.py").write_text(
        "from fn_core import hookimpl\n\n@hookimpl\ndef override_call(call, extensions):\n    extensions['seen'] = 'once'\n")
    dist_info = tmp_path / "kit_installed_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: kit-installed-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[fn_core.plugins]\nkit-installed = kit_installed_plugin\n")
    monkeypatch.syspath_prepend(tmp_path)
    plugin = importlib.import_module("kit_installed_plugin")
    monkeypatch.setitem(sys.modules, "kit_installed_plugin", plugin)  # gone from sys.modules after the test

    pm = build_plugin_manager(plugin, load_entrypoints=True)  # fn_platform(plugins=(...))'s combination
    assert pm.get_name(plugin) == "kit-installed"
    assert [info.name for info in pm.plugin_infos()].count("kit-installed") == 1
    assert lb_prepare(pm, make_call()) == {"seen": "once"}
    assert build_plugin_manager(plugin, env={"FN_DISABLE_PLUGINS": "kit-installed"}).get_plugin("kit-installed") is None


def test_fn_platform_works_in_pytest_asyncio_strict_mode(tmp_path):
    # a plugin author's project without this repo's `asyncio_mode = auto`; Docker is not needed to get the factory
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n")
    (tmp_path / "test_strict.py").write_text(
        "import pytest\n\n"
        "@pytest.fixture(scope='session')\ndef docker_client():\n    return None\n\n"
        "@pytest.mark.asyncio\nasync def test_factory(fn_platform):\n    assert callable(fn_platform)\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_strict.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_listed_plugin_is_the_row_fn_core_plugins_shows_and_an_absent_one_fails_naming_those_listed():
    row = listed_plugin("placer-ch")
    assert (row["distribution"], row["status"], row["provides"]) == ("fn-core", "active", ["placer: ch"])
    with pytest.raises(AssertionError, match=r"does not list 'no-such-plugin' \(is it installed\?\); it lists \[.*'placer-ch'"):
        listed_plugin("no-such-plugin")
