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
* `make_call` / `lb_prepare`: a call built exactly as the LB builds it from an app, an fn and a
  request, and the LB's `override_call` step on it (returns the extensions sent to the runner).
* ``fn_platform``: a whole platform in-process (runners + LB, real gRPC/HTTP/Docker); an async fixture of
  pytest-asyncio's, so it works in its strict mode too (there, mark the test ``@pytest.mark.asyncio``).
  Its config is the ``toml`` and ``env`` you give, never the process's ``FN_*`` variables.
* `wait_until`: await a condition that something running in the background will make true (bounded).
* `build_image`: an image made locally from a Dockerfile's text (``FROM`` the echo image, say), no registry.
* `listed_plugin`: your plugin's row in ``fn-core plugins --json``, as an operator lists it after ``pip install``.
"""

from __future__ import annotations

import collections
import importlib.metadata
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from fn_core import ENTRY_POINT_GROUP
from fn_core.config import Config, load_config
from fn_core.plugins import FnPluginManager, get_plugin_manager
from fn_core.runner.driver import label_tag


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Poll ``condition`` every 20 ms; fail the test naming ``what`` after ``timeout_s`` (a bounded wait)."""
    import asyncio

    for _ in range(max(1, int(timeout_s / 0.02))):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not reached in {timeout_s:g} s: {what}")


def build_image(docker_client: Any, dockerfile: str, tag: str) -> str:
    """Build ``tag`` from ``dockerfile``'s text alone (no build context: ``FROM`` an image already on the engine,
    e.g. ``echo_image``, with ENV, LABEL, ENTRYPOINT ... lines); the tag. Remove it after, if it is the test's own."""
    from fn_core.images import build_from_files

    return build_from_files(docker_client, {"Dockerfile": dockerfile.encode()}, tag)


def listed_plugin(name: str) -> dict[str, Any]:
    """The row of plugin ``name`` (its entry point's name) in ``fn-core plugins --json``, run by this interpreter in a
    process of its own: what an operator sees once the distribution is pip-installed (``distribution``, ``version``,
    ``status``, ``hooks``, ``provides``, ``error``). Fails the test, naming the plugins listed, when it is not there."""
    import json
    import subprocess

    command = [sys.executable, "-m", "fn_core", "plugins", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    try:
        rows = {row["name"]: row for row in json.loads(result.stdout)["plugins"]}
    except ValueError:
        raise AssertionError(f"fn-core plugins --json answered no listing (exit {result.returncode}): {result.stderr}") from None
    if name not in rows:
        raise AssertionError(f"fn-core plugins does not list {name!r} (is it installed?); it lists {sorted(rows)}: {result.stderr}")
    return rows[name]


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus text (a node's `/metrics`) as samples by name and labels, e.g.
    ``{'fn_runner_calls_total{result="success"}': 3.0}``."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines)}


#: ports `free_port` handed out lately: the kernel may give a port it just released again, and two nodes of one
#: test (a runner's gRPC and HTTP ports, asked for in a row) would then both be given it
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=1000)


def free_port() -> int:
    """A port of 127.0.0.1 free now, and none this process was given lately."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port


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


def installed_name(plugin: object) -> str:
    """The name ``plugin`` is known by: its entry point's in the ``fn_core.plugins`` group when it is installed,
    else its module's (or class's) name.

    Under its entry point's name it is the plugin `FN_DISABLE_PLUGINS` and `fn-core plugins` name, and the
    factory, loading entry points too (``load_entrypoints=True``, `fn_platform`'s default), sees it as there
    already instead of refusing the same module under a second name.
    """
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        target = sys.modules.get(ep.module)  # imported ones only: a plugin passed in is imported, and the others stay unloaded
        for attr in ep.attr.split(".") if ep.attr else ():
            target = getattr(target, attr, None)
        if target is plugin:
            return ep.name
    return getattr(plugin, "__name__", type(plugin).__name__).rsplit(".", 1)[-1]


def build_plugin_manager(
    *plugins: object, toml: str = "", env: dict[str, str] | None = None, load_entrypoints: bool = False
) -> FnPluginManager:
    """A plugin manager from the platform's own factory, with ``plugins`` registered as if installed (`installed_name`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fn.toml"
        path.write_text(toml)
        config = load_config(path, env=env or {})
    named = [(installed_name(p), p) for p in plugins]
    return get_plugin_manager(config, load_entrypoints=load_entrypoints, extra_plugins=named)


def make_call(
    *,
    app: Any = None,
    fn: Any = None,
    method: str = "POST",
    url: str = "http://127.0.0.1:8080/invoke/fn",
    headers: dict[str, str] | None = None,
    trigger: Any = None,
) -> Any:
    """A `Call` built by the LB's own code (Fn's FromHTTPFnRequest) from an app, an fn and a request.

    ``app``/``fn`` default to an app "app" and an fn "fn" with image "fn-core-test/echo"; pass
    `fn_core.models.App` / `Fn` objects to set config, annotations, memory, ...
    """
    from fn_core.lb.call import CallTemplate, collect_headers, trigger_headers
    from fn_core.models import App, Fn

    app = app or App(name="app", id="app-id")
    fn = fn or Fn(name="fn", app_id=app.id, image="fn-core-test/echo", id="fn-id")
    items = list((headers or {}).items())
    mapped = trigger_headers(items, method, url) if trigger is not None else collect_headers(items)
    return CallTemplate.of(app, fn).new_call(method=method, url=url, headers=mapped, trigger=trigger)


def lb_prepare(pm: FnPluginManager, call: Any) -> dict[str, str]:
    """Run the `override_call` step as the LB does; returns the extensions (APIError propagates)."""
    from fn_core.hook_calls import run_failing_call

    extensions: dict[str, str] = {}
    run_failing_call(pm.hook.override_call, call=call, extensions=extensions)
    return extensions


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


# --------------------------------------------------------------------------------------------
# A whole platform in-process: runners + LB on 127.0.0.1, real gRPC, real HTTP, real Docker
# --------------------------------------------------------------------------------------------
@attrs.define
class InvokeResult:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@attrs.define
class Platform:
    """An LB and ``len(runners)`` runners, started in this process by the same code as the CLI.

    ``deploy`` creates an app and an fn through the v2 API; ``invoke`` calls it through the LB;
    ``containers`` lists the Docker containers created for an fn (by their ``fn-fn-id`` label).
    """

    url: str
    pm: FnPluginManager
    config: Config
    lb: Any
    runners: list[Any]
    docker: Any
    session: Any = None
    stopped: bool = False

    async def api(self, method: str, path: str, body: Any = None) -> InvokeResult:
        async with self.session.request(method, self.url + path, json=body) as resp:
            return InvokeResult(resp.status, resp.headers, await resp.read())

    async def deploy(self, image: str, *, app: str = "app", name: str = "fn", **fn_fields: Any) -> dict[str, Any]:
        """Create (or reuse) app ``app`` and create fn ``name`` with ``fn_fields``; returns the fn's JSON."""
        found = (await self.api("GET", f"/v2/apps?name={app}")).json()["items"]
        app_id = found[0]["id"] if found else (await self.api("POST", "/v2/apps", {"name": app})).json()["id"]
        created = await self.api("POST", "/v2/fns", {"name": name, "app_id": app_id, "image": image, **fn_fields})
        assert created.status == 200, created.body
        return created.json()

    async def invoke(self, fn_id: str, body: bytes | str = b"", headers: dict[str, str] | None = None) -> InvokeResult:
        data = body.encode() if isinstance(body, str) else body
        async with self.session.post(f"{self.url}/invoke/{fn_id}", data=data, headers=headers) as resp:
            return InvokeResult(resp.status, resp.headers, await resp.read())

    def containers(self, fn_id: str) -> list[Any]:
        tag = label_tag(self.config)  # what the driver labels with ("fn-core" when the tag is unset)
        # ignore_removed: one that goes between the engine's list and the SDK's inspect of it is left out, not an error
        return self.docker.containers.list(
            all=True, filters={"label": [f"fn-agent-classifier={tag}", f"fn-fn-id={fn_id}"]}, ignore_removed=True
        )

    async def stop(self) -> None:
        """Stop the LB, then the runners (a test may stop it itself; the fixture's stop is then a no-op)."""
        if self.stopped:
            return
        self.stopped = True
        if self.session is not None:
            await self.session.close()
        await self.lb.stop(grace=5)
        for runner in self.runners:
            await runner.stop(grace=5)


async def start_platform(
    tmp_dir: Path,
    docker_client: Any,
    *,
    runners: int = 1,
    toml: str = "",
    env: dict[str, str] | None = None,
    plugins: tuple[object, ...] = (),
    load_entrypoints: bool = True,
    from_pool: bool = False,
) -> Platform:
    """Start runners and an LB on 127.0.0.1 (free ports) with installed plugins (entry points) plus ``plugins``.

    The config is ``toml`` and ``env`` alone: the process's own ``FN_*`` variables are not read (a test's
    platform is the same on every machine), so give ``env={"FN_DISABLE_PLUGINS": ...}`` and the like here.

    The LB is handed the runners' addresses, unless ``from_pool``: then it takes its runners from
    the selected runner pool plugin, and the test tells that pool about ``platform.runners``.
    """
    import secrets

    import aiohttp

    from fn_core.lb.main import start_lb
    from fn_core.runner.main import start_runner

    path = Path(tmp_dir) / "fn.toml"
    path.write_text(toml)
    base_env = {"FN_CONTAINER_LABEL_TAG": f"fn-core-test-{secrets.token_hex(4)}", "FN_DB_URL": f"sqlite3://{tmp_dir}/fn.db"}
    config = load_config(path, env={**base_env, **(env or {})}, overrides={"host": "127.0.0.1"})
    named = [(installed_name(p), p) for p in plugins]
    pm = get_plugin_manager(config, load_entrypoints=load_entrypoints, extra_plugins=named)
    nodes = []
    try:
        for _ in range(runners):
            nodes.append(await start_runner(config, pm, host="127.0.0.1", port=0))
        addresses = None if from_pool else [n.address for n in nodes]
        lb = await start_lb(config, pm, host="127.0.0.1", port=0, runner_addresses=addresses)
    except BaseException:
        for node in nodes:
            await node.stop(grace=1)
        raise
    platform = Platform(url=lb.url, pm=pm, config=config, lb=lb, runners=nodes, docker=docker_client)
    platform.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
    return platform


async_fixture: Any
try:  # pytest-asyncio (fn-core[test]) runs async fixtures; declared as its own, this one works in its strict mode too
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pytest without fn-core[test]: the kit's other fixtures still load
    async_fixture = pytest.fixture


@async_fixture
async def fn_platform(tmp_path: Path, docker_client: Any) -> Any:
    """A factory: ``platform = await fn_platform(runners=2, toml=..., env=..., plugins=(...))``; stopped after the test."""
    started: list[Platform] = []

    async def factory(**kwargs: Any) -> Platform:
        sub = tmp_path / f"platform{len(started)}"
        sub.mkdir()
        platform = await start_platform(sub, docker_client, **kwargs)
        started.append(platform)
        return platform

    yield factory
    for platform in started:
        await platform.stop()
