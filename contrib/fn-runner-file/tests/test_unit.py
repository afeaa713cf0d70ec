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
