"""FN_DRIVER as an operator uses it: a driver a plugin offers (`register_drivers`), selected by name, runs real calls;
a name no plugin offers stops the `fn-core` process with one line listing the names there are.

The plugin-manager factory's own checks (unknown names, duplicates) are in test_plugins.py; here is what they
amount to on a running platform (`fn_platform`: LB + runner, real gRPC, HTTP and Docker) and on `fn-core` processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fn_core import Driver, hookimpl
from fn_core.config import load_config
from fn_core.plugins import get_plugin_manager
from fn_plugins_builtin.driver_docker import DockerDriver

FN_CORE = str(Path(sys.executable).parent / "fn-core")
DRIVER = "docker-recorded"


class RecordingDockerDriver(DockerDriver):
    """The built-in Docker driver, and a record of each container it launched: (call id, container id)."""

    def __init__(self, config, hook, launched: list[tuple[str, str]]) -> None:
        super().__init__(config, hook)
        self.launched = launched

    async def launch(self, call, extensions, iofs_dir, env, output=None):
        container_id = await super().launch(call, extensions, iofs_dir, env, output)
        self.launched.append((call.id, container_id))
        return container_id


class DockerRecorded:
    """A plugin offering the driver ``docker-recorded`` (hookspecs.register_drivers' example, with an override)."""

    def __init__(self) -> None:
        self.launched: list[tuple[str, str]] = []

    @hookimpl
    def register_drivers(self):
        def factory(*, config, hook):
            return RecordingDockerDriver(config, hook, self.launched)

        return [Driver(name=DRIVER, factory=factory, description="Docker Engine, each launch recorded")]


async def test_a_plugin_driver_selected_by_fn_driver_runs_the_calls(fn_platform, echo_image):
    plugin = DockerRecorded()
    platform = await fn_platform(plugins=(plugin,), env={"FN_DRIVER": DRIVER})
    assert isinstance(platform.runners[0].driver, RecordingDockerDriver)
    fn = await platform.deploy(echo_image)

    first = await platform.invoke(fn["id"], b"driven by a plugin")
    assert (first.status, first.body) == (200, b"driven by a plugin")
    [(call_id, container_id)] = plugin.launched  # the plugin's launch made the container that answered
    assert call_id == first.headers["Fn-Call-Id"]
    assert [c.id for c in platform.containers(fn["id"])] == [container_id]

    second = await platform.invoke(fn["id"], b"again")
    assert (second.status, second.body) == (200, b"again")
    assert len(plugin.launched) == 1  # the hot container the plugin's driver launched served it


def test_an_offered_driver_is_used_only_when_named():
    pm = get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("docker-recorded", DockerRecorded())])
    assert pm.driver.name == "docker" and set(pm.drivers) == {"docker", DRIVER}


# ---------------------------------------------------------------------------------------------------------
# `fn-core` processes, with the plugin installed as an operator installs it (an entry point on sys.path)
# ---------------------------------------------------------------------------------------------------------
PLUGIN_MODULE = """
    from fn_core import Driver, hookimpl
    from fn_plugins_builtin.driver_docker import DockerDriver

    class RecordedDockerDriver(DockerDriver):
        pass

    @hookimpl
    def register_drivers():
        return [Driver(name="docker-recorded", factory=lambda *, config, hook: RecordedDockerDriver(config, hook))]
"""


@pytest.fixture
def installed_driver_plugin(tmp_path):
    """The environment of a machine where a distribution `fn-driver-recorded` offering ``docker-recorded`` is installed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fn_driver_recorded.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    info = site / "fn_driver_recorded-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fn-driver-recorded\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text("[fn_core.plugins]\ndriver-recorded = fn_driver_recorded\n")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
    return subprocess.run([FN_CORE, *args], env={**clean, **env}, capture_output=True, text=True, timeout=60)


RUNNER = ["runner", "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0"]


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (RUNNER, {"FN_DRIVER": "dokcer"}),
        ([*RUNNER, "--driver", "dokcer"], {}),
        (["start"], {"FN_NODE_TYPE": "pure-runner", "FN_DRIVER": "dokcer", "FN_HOST": "127.0.0.1", "FN_PORT": "0", "FN_GRPC_PORT": "0"}),
    ],
    ids=["FN_DRIVER", "--driver", "fn-core start"],
)
def test_an_unknown_driver_stops_the_runner_with_one_line_listing_the_drivers(installed_driver_plugin, args, env):
    result = run(args, {**installed_driver_plugin, **env, "FN_CONTAINER_LABEL_TAG": f"fn-core-test-drv-{os.getpid()}"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("fn-core: error: unknown driver 'dokcer'; available drivers: ")
    available = line.split("available drivers: ")[1].split(" (")[0].split(", ")
    assert {"docker", DRIVER} <= set(available)  # the built-in and the installed plugin's
    assert line.endswith("(is the plugin that provides it installed and not disabled?)")


def test_an_installed_plugin_driver_is_listed_and_a_runner_process_starts_on_it(installed_driver_plugin, tmp_path):
    listed = run(["plugins", "--json"], {**installed_driver_plugin, "FN_DRIVER": DRIVER})
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    [plugin] = [p for p in report["plugins"] if p["name"] == "driver-recorded"]
    assert (plugin["distribution"], plugin["provides"], report["driver"]) == ("fn-driver-recorded", [f"driver: {DRIVER}"], DRIVER)

    env = {**installed_driver_plugin, "FN_DRIVER": DRIVER, "FN_CONTAINER_LABEL_TAG": f"fn-core-test-drv-{os.getpid()}"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
    log = tmp_path / "runner.log"
    with open(log, "wb") as out:
        node = subprocess.Popen([FN_CORE, *RUNNER], env={**clean, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):  # bounded: 30 s
            if "runner listening on" in log.read_text() or node.poll() is not None:
                break
            time.sleep(0.1)
        [line] = [line for line in log.read_text().splitlines() if "runner listening on" in line] or [log.read_text()]
        assert line.endswith(f"driver {DRIVER}"), line
    finally:
        node.terminate()
        node.wait(30)
    assert node.returncode == 0, log.read_text()
