"""pytest plugin for fn-core and its plugin authors (loaded through the ``pytest11`` entry point).

Fixtures:

* ``fn_config`` / ``fn_plugin_manager``: a `Config` and a fresh plugin manager built by the same
  factory the servers use (built-ins registered, no entry points unless asked).
* ``docker_client``: a docker SDK client; **fails** the test when no engine answers (never skips).
* ``echo_image``: tag of a real fdk-python function image built locally from the shipped echo
  function (no registry needed).
* ``free_port``: a function returning a free TCP port on 127.0.0.1.
* ``make_plugin_manager``: ``make_plugin_manager(plugin, ..., toml="...", env={...})`` builds a
  manager with your plugin(s) registered as if installed, and a config from that TOML text.
* `HookRecorder`: records every hook call (name, kwargs, result) of a plugin manager.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
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


@attrs.define
class HookCall:
    name: str
    kwargs: dict[str, Any]
    result: Any = None


class HookRecorder:
    """Records the hook calls of a plugin manager, e.g. to assert that `override_call` ran.

    ::

        recorder = HookRecorder(pm)
        ...
        assert recorder.calls_of("override_call")[0].kwargs["extensions"] == {...}
        recorder.undo()
    """

    def __init__(self, pm: FnPluginManager) -> None:
        self.calls: list[HookCall] = []
        self.undo = pm.add_hookcall_monitoring(self._before, self._after)

    def _before(self, name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self.calls.append(HookCall(name=name, kwargs=dict(kwargs)))

    def _after(self, outcome: Any, name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        for call in reversed(self.calls):
            if call.name == name and call.result is None:
                call.result = outcome.get_result() if outcome.exception is None else outcome.exception
                break

    def calls_of(self, name: str) -> list[HookCall]:
        return [c for c in self.calls if c.name == name]


def build_plugin_manager(
    *plugins: object, toml: str = "", env: dict[str, str] | None = None, load_entrypoints: bool = False
) -> FnPluginManager:
    """A plugin manager from the platform's own factory, with ``plugins`` registered as if installed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fn.toml"
        path.write_text(toml)
        config = load_config(path, env=env or {})
    named = [(getattr(p, "__name__", type(p).__name__).rsplit(".", 1)[-1], p) for p in plugins]
    return get_plugin_manager(config, load_entrypoints=load_entrypoints, extra_plugins=named)


@pytest.fixture
def make_plugin_manager() -> Callable[..., FnPluginManager]:
    return build_plugin_manager


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
