"""pytest plugin for fn-core and its plugin authors (loaded through the ``pytest11`` entry point).

Fixtures:

* ``fn_config`` / ``fn_plugin_manager``: a `Config` and a fresh plugin manager built by the same
  factory the servers use (built-ins registered, no entry points unless asked).
* ``docker_client``: a docker SDK client; **fails** the test when no engine answers (never skips).
* ``echo_image``: tag of a real fdk-python function image built locally from the shipped echo
  function (no registry needed).
* ``free_port``: a function returning a free TCP port on 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from fn_core.config import Config, load_config
from fn_core.plugins import FnPluginManager, get_plugin_manager

TEST_LABEL = "fn-core.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(name="free_port")
def _free_port() -> Any:
    return free_port


@pytest.fixture
def fn_config() -> Config:
    return load_config(env={})


@pytest.fixture
def fn_plugin_manager(fn_config: Config) -> FnPluginManager:
    return get_plugin_manager(fn_config, load_entrypoints=False)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # a Docker-less machine must fail loudly, not skip
        pytest.fail(f"these tests need a running Docker engine (run `make test`, which starts one): {exc}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def echo_image(docker_client: Any) -> str:
    from fn_core.images import build_named_function

    return build_named_function(docker_client, "echo", "fn-core-test/echo:latest")
