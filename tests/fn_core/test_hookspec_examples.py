"""Every hookspec's ``Example::`` (docs/hooks.md is generated from them) runs as a plugin and does what it says.

Each example is cut from its docstring, exec'd as a plugin module whose imports are those of a plugin author,
registered through the platform's own plugin manager factory, and its hook is called once with plausible
arguments. An example that no longer runs (a renamed attribute, a wrong signature) fails here, named by its hook.
"""

from __future__ import annotations

import configparser
import importlib.util
import inspect
import logging
import re
import shutil
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fn_core import APIError, Placer, RunnerStatus, hookimpl, hookspecs
from fn_core.config import load_config
from fn_core.errors import ConfigError
from fn_core.hook_calls import plugin_metrics, run_status_hooks
from fn_core.models import App, Fn, Trigger
from fn_core.plugins import FnPluginManager, get_plugin_manager
from fn_core.records import CallOutcome, RunnerRef
from fn_core.testing import lb_prepare, make_call, metric_samples

# what the examples use, imported as a plugin module would import it
PRELUDE = """
import asyncio
import shutil
from collections import defaultdict
from pathlib import Path

from fn_core import APIError, Call, Driver, Placer, RunnerPool, RunnerStatus, hookimpl
from fn_core.errors import ConfigError
from fn_plugins_builtin.driver_docker import DockerDriver
"""


def all_specs() -> dict[str, Callable[..., Any]]:
    return {name: fn for name, fn in vars(hookspecs).items() if inspect.isfunction(fn) and hasattr(fn, "fn_core_spec")}


def example_source(hook: str) -> str:
    """The indented block after ``Example::`` in the hook's docstring, dedented."""
    doc = inspect.getdoc(all_specs()[hook]) or ""
    assert "Example::" in doc, f"hookspec {hook} has no Example:: block"
    block: list[str] = []
    for line in doc.split("Example::", 1)[1].splitlines()[1:]:
        if line.strip() and not line.startswith((" ", "\t")):
            break  # the docstring goes on, unindented
        block.append(line)
    source = textwrap.dedent("\n".join(block)).strip()
    assert source, f"hookspec {hook}'s Example:: block is empty"
    return source


def example_module(hook: str, **names: Any) -> types.ModuleType:
    """The example exec'd as a plugin module; ``names`` are the globals it assumes the author defined."""
    module = types.ModuleType(f"example_{hook}")
    exec(compile(PRELUDE, f"<prelude of {hook}>", "exec"), module.__dict__)
    module.__dict__.update(names)
    exec(compile(example_source(hook), f"<Example of hookspec {hook}>", "exec"), module.__dict__)
    return module


def manager(*plugins: tuple[str, object], toml: str = "", env: dict[str, str] | None = None, tmp: Path) -> FnPluginManager:
    path = tmp / "fn.toml"
    path.write_text(toml)
    return get_plugin_manager(load_config(path, env=env or {}), load_entrypoints=False, extra_plugins=list(plugins))


# ---------------------------------------------------------------------------------------------------------
# one check per hook: register the example, call the hook once, assert what its docstring says it does
# ---------------------------------------------------------------------------------------------------------
class CpuWeight:  # the configure example's working object, with the hooks that use the setting
    def __init__(self, shares_per_mb: int) -> None:
        self.shares_per_mb = shares_per_mb


def check_configure(tmp: Path) -> None:
    example = example_module("configure", CpuWeight=CpuWeight)
    # the platform's factory calls configure (historic) while it builds the manager
    name = "cpu-weight-example"
    pm = manager((name, example), toml=f"[plugins.{name}]\nshares_per_mb = 4\n", tmp=tmp)
    settings = pm.get_plugin(f"{name}:settings")
    assert isinstance(settings, CpuWeight) and settings.shares_per_mb == 4

    assert manager((name, example), tmp=tmp).get_plugin(f"{name}:settings") is None  # unset: nothing registered
    with pytest.raises(ConfigError, match=r"shares_per_mb must be a whole number >= 0, got -1"):
        manager((name, example), toml=f"[plugins.{name}]\nshares_per_mb = -1\n", tmp=tmp)


def check_register_placers(tmp: Path) -> None:
    example = example_module("register_placers")
    pm = manager(("first-placer", example), env={"FN_PLACER": "first"}, tmp=tmp)
    assert (pm.placer.name, pm.placer.description) == ("first", "always runner 1 first")
    assert pm.placers["first"][1] == "first-placer"
    runners = [RunnerRef("127.0.0.1:9191"), RunnerRef("127.0.0.1:9192")]
    assert pm.hook.place_call(call=make_call(), runners=runners) == runners


def check_register_drivers(tmp: Path) -> None:
    from fn_plugins_builtin.driver_docker import DockerDriver

    example = example_module("register_drivers")
    # beside the built-in driver (its name is its own), selected by it
    pm = manager(("my-docker", example), env={"FN_DRIVER": "docker-logging"}, tmp=tmp)
    assert (pm.driver.name, pm.driver.description) == ("docker-logging", "Docker Engine, logged")
    assert issubclass(pm.driver.factory, DockerDriver) and pm.driver.factory is not DockerDriver
    assert pm.drivers["docker-logging"][1] == "my-docker" and pm.drivers["docker"][1] == "driver-docker"


async def check_register_runner_pools(tmp: Path) -> None:
    (tmp / "runners.txt").write_text("127.0.0.1:9191\n127.0.0.1:9192\n")
    example = example_module("register_runner_pools")
    toml = f'[plugins.hosts-list-example]\npath = "{tmp / "runners.txt"}"\n'
    pm = manager(("hosts-list-example", example), toml=toml, env={"FN_RUNNER_POOL": "hosts-list"}, tmp=tmp)
    assert (pm.runner_pool.name, pm.runner_pool.refresh, pm.runner_pools["hosts-list"][1]) == ("hosts-list", True, "hosts-list-example")
    source = pm.runner_pool.factory(config=load_config(tmp / "fn.toml", env={}))  # as the LB calls it
    assert await source.addresses() == ["127.0.0.1:9191", "127.0.0.1:9192"]


def check_override_call(tmp: Path) -> None:
    pm = manager(("cpu-shares", example_module("override_call")), tmp=tmp)

    def call_with(annotations: dict[str, Any]) -> Any:
        app = App(name="app", id="app-id")
        return make_call(app=app, fn=Fn(name="fn", app_id=app.id, image="fn-core-test/echo", id="fn-id", annotations=annotations))

    assert lb_prepare(pm, call_with({"example.com/cpu-shares": 512})) == {"example.com/cpu-shares": "512"}
    assert lb_prepare(pm, call_with({})) == {}
    with pytest.raises(APIError) as refused:
        lb_prepare(pm, call_with({"example.com/cpu-shares": 1}))
    assert (refused.value.status, refused.value.message) == (400, "cpu-shares must be an integer in 2..262144")


def check_place_call(tmp: Path) -> None:
    example = example_module("place_call")

    class LeastBusyPlacer:  # only a selected placer may answer place_call
        @hookimpl
        def register_placers(self):
            return [Placer(name="least-busy", hooks=example.LeastBusy(), wants_runner_status=True)]

    pm = manager(("least-busy", LeastBusyPlacer()), env={"FN_PLACER": "least-busy"}, tmp=tmp)
    busy = RunnerRef("127.0.0.1:9191", RunnerStatus(active=5))
    broken = RunnerRef("127.0.0.1:9192", RunnerStatus(active=0, failed=True))
    idle = RunnerRef("127.0.0.1:9193", RunnerStatus(active=1))
    unpolled = RunnerRef("127.0.0.1:9194")
    order = pm.hook.place_call(call=make_call(), runners=[busy, broken, idle, unpolled])
    assert [r.address for r in order] == [r.address for r in (unpolled, idle, busy, broken)]


def check_call_finished(tmp: Path) -> None:
    from collections import defaultdict

    billing: defaultdict[str, float] = defaultdict(float)
    pm = manager(("billing", example_module("call_finished", BILLING=billing)), tmp=tmp)
    call = make_call()
    pm.hook.call_finished(call=call, outcome=CallOutcome(status=200, runner="127.0.0.1:9191", attempts=1, duration_s=0.5))
    assert billing == {"app-id": 0.5 * call.memory}


def check_runner_call_finished(tmp: Path) -> None:
    from collections import defaultdict

    seconds: defaultdict[str, float] = defaultdict(float)
    pm = manager(("accounting", example_module("runner_call_finished", SECONDS_BY_APP=seconds)), tmp=tmp)
    pm.hook.runner_call_finished(call=make_call(), outcome=CallOutcome(status=200, duration_s=1.25))
    assert seconds == {"app-id": 1.25}


def check_modify_container_options(tmp: Path) -> None:
    pm = manager(("cpu-shares", example_module("modify_container_options")), tmp=tmp)
    options: dict[str, Any] = {"image": "fn-core-test/echo", "environment": {}}
    pm.hook.modify_container_options(call=make_call(), extensions={"example.com/cpu-shares": "512"}, options=options)
    assert options["cpu_shares"] == 512
    untouched: dict[str, Any] = {"image": "fn-core-test/echo", "environment": {}}
    pm.hook.modify_container_options(call=make_call(), extensions={}, options=untouched)
    assert "cpu_shares" not in untouched


def check_runner_status(tmp: Path) -> None:
    # the built-in status-docker would ask the engine; this check is about the example alone
    pm = manager(("disk-free", example_module("runner_status")), env={"FN_DISABLE_PLUGINS": "status-docker"}, tmp=tmp)
    status = RunnerStatus(active=1)
    run_status_hooks(pm.hook, status)  # on the runner, as its Status RPC runs the hook
    assert set(status.custom_status) == {"disk-free-gb"}, status.custom_status  # no "plugin-error:..." entry
    assert int(status.custom_status["disk-free-gb"]) == pytest.approx(shutil.disk_usage("/").free // 2**30, abs=1)
    assert not status.failed

    polled = RunnerStatus(active=1)
    run_status_hooks(pm.hook, polled, runner="127.0.0.1:9191")  # on the LB: the example only contributes on the runner
    assert polled.custom_status == {}


def check_metric_families(tmp: Path) -> None:
    pm = manager(("audit", example_module("metric_families", LINES=3)), tmp=tmp)
    [family] = [f for answer in pm.hook.metric_families() if answer for f in answer if f[0] == "audit_lines_total"]
    assert family == ("audit_lines_total", "counter", "lines written to the audit log", ["audit_lines_total 3"])
    text = plugin_metrics(pm.hook)  # what /metrics shows: a family the platform refuses would be left out
    assert "# HELP audit_lines_total lines written to the audit log\n# TYPE audit_lines_total counter\n" in text
    assert metric_samples(text)["audit_lines_total"] == 3.0


def check_check_request(tmp: Path) -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from fn_core import HttpRequest

    pm = manager(("bearer", example_module("check_request")), tmp=tmp)

    def request(path: str, **headers: str) -> HttpRequest:
        return HttpRequest("POST", path, "", CIMultiDictProxy(CIMultiDict(headers)), "127.0.0.1")

    with pytest.raises(APIError, match="bearer token") as err:
        pm.hook.check_request(request=request("/v2/apps", Authorization="Bearer wrong"))
    assert (err.value.status, err.value.headers) == (401, {"WWW-Authenticate": "Bearer"})
    pm.hook.check_request(request=request("/v2/apps", authorization="Bearer s3cret"))
    pm.hook.check_request(request=request("/"))


def check_validate_app(tmp: Path) -> None:
    pm = manager(("team-check", example_module("validate_app")), tmp=tmp)
    with pytest.raises(APIError, match="example.com/team") as err:
        pm.hook.validate_app(app=App(name="loose"))
    assert err.value.status == 400
    pm.hook.validate_app(app=App(name="owned", annotations={"example.com/team": "payments"}))


def check_validate_fn(tmp: Path) -> None:
    pm = manager(("registry-check", example_module("validate_fn")), tmp=tmp)
    app = App(name="app", id="app-id")
    with pytest.raises(APIError, match="'docker.io/evil:1' is not from registry.example.com") as err:
        pm.hook.validate_fn(app=app, fn=Fn(name="f", app_id=app.id, image="docker.io/evil:1"))
    assert err.value.status == 400
    pm.hook.validate_fn(app=app, fn=Fn(name="f", app_id=app.id, image="registry.example.com/team/f:1"))


def check_validate_trigger(tmp: Path) -> None:
    pm = manager(("path-check", example_module("validate_trigger")), tmp=tmp)
    app, fn = App(name="app", id="app-id"), Fn(name="f", app_id="app-id", image="i", id="fn-id")
    with pytest.raises(APIError, match="must begin with /public/, not '/admin'") as err:
        pm.hook.validate_trigger(app=app, fn=fn, trigger=Trigger(name="t", app_id=app.id, fn_id=fn.id, source="/admin"))
    assert err.value.status == 400
    pm.hook.validate_trigger(app=app, fn=fn, trigger=Trigger(name="t", app_id=app.id, fn_id=fn.id, source="/public/hello"))


def check_validate_delete(tmp: Path) -> None:
    pm = manager(("keep-protected", example_module("validate_delete")), tmp=tmp)
    protected = App(name="billing", id="app-id", annotations={"example.com/protected": True})
    with pytest.raises(APIError, match="app billing is protected") as err:
        pm.hook.validate_delete(app=protected, fn=None, trigger=None)
    assert err.value.status == 409
    pm.hook.validate_delete(app=protected, fn=Fn(name="f", app_id="app-id", image="i", id="fn-id"), trigger=None)  # its fns may go
    pm.hook.validate_delete(app=App(name="scratch", id="other"), fn=None, trigger=None)


def check_object_changed(tmp: Path) -> None:
    pm = manager(("audit", example_module("object_changed")), tmp=tmp)
    app, fn = App(name="shop", id="app-id"), Fn(name="checkout", app_id="app-id", image="i", id="fn-id")
    heard: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: heard.append(record.getMessage())  # type: ignore[method-assign]
    audit = logging.getLogger("example.audit")
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    try:
        pm.hook.object_changed(action="created", app=app, fn=None, trigger=None)
        pm.hook.object_changed(action="deleted", app=app, fn=fn, trigger=None)
    finally:
        audit.removeHandler(handler)
    assert heard == ["created app shop (app-id) of app shop", "deleted fn checkout (fn-id) of app shop"]


CHECKS: dict[str, Callable[[Path], Any]] = {
    "configure": check_configure,
    "register_placers": check_register_placers,
    "register_drivers": check_register_drivers,
    "register_runner_pools": check_register_runner_pools,
    "override_call": check_override_call,
    "place_call": check_place_call,
    "call_finished": check_call_finished,
    "runner_call_finished": check_runner_call_finished,
    "modify_container_options": check_modify_container_options,
    "runner_status": check_runner_status,
    "metric_families": check_metric_families,
    "check_request": check_check_request,
    "validate_app": check_validate_app,
    "validate_fn": check_validate_fn,
    "validate_trigger": check_validate_trigger,
    "validate_delete": check_validate_delete,
    "object_changed": check_object_changed,
}


def test_every_hookspec_has_an_example_check():
    assert set(all_specs()) == set(CHECKS), "add a check_<hook> for a new hookspec's example (or drop a removed one's)"


@pytest.mark.parametrize("hook", sorted(all_specs()))
async def test_the_hookspec_example_runs_and_does_what_it_says(hook, tmp_path):
    check = CHECKS.get(hook)
    assert check is not None, f"no check for hookspec {hook}'s example"
    outcome = check(tmp_path)
    if inspect.isawaitable(outcome):
        await outcome


# ---------------------------------------------------------------------------------------------------------
# an author copies the examples beside the repository's contrib plugins: nothing may clash
# ---------------------------------------------------------------------------------------------------------
ROOT = Path(__file__).parents[2]


def contrib_plugins() -> list[tuple[str, types.ModuleType]]:
    """Each contrib plugin as its distribution installs it: (entry-point name, module), loaded from its source."""
    plugins = []
    for setup in sorted(ROOT.glob("contrib/*/setup.cfg")):
        parser = configparser.ConfigParser()
        parser.read(setup)
        for line in parser["options.entry_points"]["fn_core.plugins"].strip().splitlines():
            name, module_name = (part.strip() for part in line.split("="))
            spec = importlib.util.spec_from_file_location(f"contrib_copy_{module_name}", setup.parent / f"{module_name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            plugins.append((name, module))
    return plugins


def test_the_examples_copied_beside_the_contrib_plugins_start_and_read_their_own_tables(tmp_path, caplog):
    contrib = contrib_plugins()
    assert {"cpu-shares", "runner-file", "call-env", "placer-bounded"} <= {name for name, _ in contrib}
    (tmp_path / "runners.txt").write_text("127.0.0.1:9191\n")
    examples = [
        ("cpu-weight-example", example_module("configure", CpuWeight=CpuWeight)),
        ("hosts-list-example", example_module("register_runner_pools")),
        ("first-placer", example_module("register_placers")),
        ("my-docker", example_module("register_drivers")),
    ]
    toml = (
        "[plugins.cpu-shares]\nshares_per_mb = 2\n"  # contrib's: it registers cpu-shares:settings
        "[plugins.cpu-weight-example]\nshares_per_mb = 4\n"
        f'[plugins.hosts-list-example]\npath = "{tmp_path / "runners.txt"}"\n'
        f'[plugins.runner-file]\npath = "{tmp_path / "runners.txt"}"\n'
    )
    with caplog.at_level(logging.WARNING):
        pm = manager(*contrib, *examples, toml=toml, env={"FN_RUNNER_POOL": "hosts-list"}, tmp=tmp_path)
    assert pm.get_plugin("cpu-weight-example:settings").shares_per_mb == 4
    assert pm.get_plugin("cpu-shares:settings") is not None
    assert {"file", "hosts-list"} <= set(pm.runner_pools) and pm.runner_pool.name == "hosts-list"
    assert not [r.getMessage() for r in caplog.records if "names no installed plugin" in r.getMessage()]


def test_an_object_registered_under_a_taken_name_stops_start_up_with_one_line_naming_both_plugins(tmp_path):
    """The configure example as it was: its object's name was contrib cpu-shares' own."""

    class Copied:
        @hookimpl
        def configure(self, config, plugin_manager):
            plugin_manager.register(CpuWeight(4), name="cpu-shares:settings")

    contrib = [(name, module) for name, module in contrib_plugins() if name == "cpu-shares"]
    from fn_core.errors import PluginError

    with pytest.raises(PluginError) as err:
        manager(("my-shares", Copied()), *contrib, tmp=tmp_path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message  # not pluggy's dump of the whole registry
    assert re.search(r"plugin '(my-shares|cpu-shares)' \(.*\) failed in configure: ValueError: the plugin name "
                     r"'cpu-shares:settings' is taken: plugin '(my-shares|cpu-shares)' registered an object under it", message)
    assert "my-shares" in message and "'cpu-shares'" in message
