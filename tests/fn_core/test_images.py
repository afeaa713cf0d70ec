"""Building the fdk base image: what the host must have, said in one line when it lacks it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from fn_core import images
from fn_core.images import ImageBuildError


def test_the_fdk_wheels_are_fetched_with_this_pythons_pip_or_one_on_path(tmp_path, monkeypatch):
    assert images._pip() == [sys.executable, "-m", "pip"]  # the usual venv
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # a venv made without pip (uv's)
    fake = tmp_path / "pip3"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert images._pip() == [str(fake)]
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(ImageBuildError, match="needs pip"):
        images._pip()


def test_fn_core_build_image_without_pip_is_one_clear_line(tmp_path):
    """The CLI's own answer (exit 2, no traceback) when neither this Python nor PATH has a pip."""
    func_py = tmp_path / "func.py"
    func_py.write_text("def handler(ctx, data=None):\n    return data\n")
    script = (
        "import importlib.util, sys\n"
        "importlib.util.find_spec = lambda name: None\n"
        "from fn_core import images\n"
        "images.base_tag = lambda: 'fn-core-test/no-such-base:' + '0' * 12\n"
        "from fn_core.cli import main\n"
        f"sys.exit(main(['build-image', {str(func_py)!r}, '-t', 'fn-core-test/never-built:1']))\n"
    )
    env = {**os.environ, "PATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "needs pip" in done.stderr and "Traceback" not in done.stderr
