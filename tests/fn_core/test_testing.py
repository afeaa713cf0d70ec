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
