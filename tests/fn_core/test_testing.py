"""The test kit plugin authors use (fn_core.testing), exercised the way they would."""

from fn_core import hookimpl
from fn_core.testing import HookRecorder


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
