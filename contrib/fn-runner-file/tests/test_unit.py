"""The file is parsed as documented, re-read only when it changes, and a missing setting is a clear error."""

import os

import pytest
from fn_runner_file import RunnersFromFile, parse

from fn_core.config import load_config
from fn_core.errors import ConfigError


def config_for(tmp_path, path):
    cfg = tmp_path / "fn.toml"
    cfg.write_text(f'runner_pool = "file"\n[plugins.runner-file]\npath = "{path}"\n')
    return load_config(cfg, env={})


def test_parse_keeps_file_order_and_drops_comments_and_blank_lines():
    text = "# runners of zone a\n10.0.0.11:9190\n\n  10.0.0.12:9190   # added later\n#10.0.0.13:9190\n"
    assert parse(text) == ["10.0.0.11:9190", "10.0.0.12:9190"]


async def test_the_file_is_read_again_only_when_it_changed(tmp_path):
    runners = tmp_path / "runners"
    runners.write_text("a:1\n")
    source = RunnersFromFile(config_for(tmp_path, runners))
    assert await source.addresses() == ["a:1"]
    first = await source.addresses()
    assert await source.addresses() is first  # unchanged file: the cached list
    runners.write_text("a:1\nb:2\n")
    os.utime(runners, ns=(os.stat(runners).st_atime_ns, os.stat(runners).st_mtime_ns + 1_000_000))
    assert await source.addresses() == ["a:1", "b:2"]


async def test_a_missing_file_is_an_error_the_lb_reports(tmp_path):
    source = RunnersFromFile(config_for(tmp_path, tmp_path / "absent"))
    with pytest.raises(FileNotFoundError):
        await source.addresses()


def test_the_path_setting_is_required(tmp_path):
    with pytest.raises(ConfigError, match=r"path = .* under \[plugins.runner-file\]"):
        RunnersFromFile(load_config(env={}))


def test_fn_core_plugins_refuses_what_the_lb_would(tmp_path):
    """`fn-core plugins` checks a config before a rollout: the file pool selected without its path, a path that is no
    string, or a misspelled key, is a plugin that fails in configure there too."""
    import fn_runner_file

    from fn_core.plugins import get_plugin_manager

    cfg = tmp_path / "fn.toml"
    for table, said in [("", r"needs the file's path"), ("path = 5", r"needs the file's path.*\(got 5\)"),
                        ('paht = "/etc/fn/runners"', r"unknown keys \['paht'\]")]:
        cfg.write_text(f'runner_pool = "file"\n[plugins.runner-file]\n{table}\n')
        with pytest.raises(ConfigError, match=said):
            get_plugin_manager(load_config(cfg, env={}), load_entrypoints=False, select=False,
                               extra_plugins=[("runner-file", fn_runner_file)])
