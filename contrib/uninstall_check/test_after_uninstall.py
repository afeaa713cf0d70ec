"""Run by `tox -e contrib` after `pip uninstall -y fn-placer-bounded`: the platform keeps working."""

import json
import os
import subprocess
import sys
from pathlib import Path

FN_CORE = str(Path(sys.executable).parent / "fn-core")


def run(*args, env=None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
    return subprocess.run([FN_CORE, *args], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})


def test_plugins_listing_works_without_the_uninstalled_plugin():
    result = run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    names = {p["name"] for p in json.loads(result.stdout)["plugins"]}
    assert "placer-bounded" not in names
    assert {"placer-ch", "placer-naive", "driver-docker", "cpu-shares", "call-env"} <= names


def test_a_config_naming_the_missing_placer_fails_at_startup_listing_the_available_ones(tmp_path):
    config = tmp_path / "fn.toml"
    config.write_text('placer = "ch-bounded"\n')
    result = run("--config", str(config), "lb", "--host", "127.0.0.1", "--port", "0")
    assert result.returncode == 2
    assert "unknown placer 'ch-bounded'; available placers: ch, naive" in result.stderr


async def test_calls_still_run(fn_platform, echo_image):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image)
    assert (await platform.invoke(fn["id"], "still here")).body == b"still here"
