"""The one place the plugin manager is built: `get_plugin_manager`.

The CLI, the servers and the tests all call it. Order of work:

1. add the hookspecs (`fn_core.hookspecs`);
2. block the names in ``config.disable_plugins`` (``FN_DISABLE_PLUGINS``);
3. register the built-in plugins (`fn_plugins_builtin.BUILTIN_PLUGINS`);
4. load third-party plugins from the ``fn_core.plugins`` entry-point group: one that fails to
   import is reported (warning + status "failed") and the platform goes on; two distributions
   offering one plugin name stop start-up naming both; a disabled name that no plugin has is
   named in a warning (a typo would leave the plugin on), and so is a config file's ``[plugins.<name>]``
   table that no plugin has (an error under ``strict``: its settings would be read by nobody);
5. ``check_pending``: a hookimpl that matches no hookspec stops start-up naming its plugin;
6. collect the named placers, drivers and runner pools and select the ones the config names
   (an unknown or duplicate name stops start-up with the available names; a placer with no
   ``place_call`` too);
7. replay `configure(config)` to every plugin: one that raises stops start-up naming it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy

from fn_core import ENTRY_POINT_GROUP, PROJECT_NAME, __version__, hookspecs
from fn_core.config import Config
from fn_core.errors import ConfigError, FnCoreError, PluginError
from fn_core.hook_calls import failed_plugin
from fn_core.records import Driver, Placer, RunnerPool

log = logging.getLogger(__name__)

BUILTIN_DIST = "fn-core"
IN_PROCESS = "(registered in process)"


@attrs.define
class PluginInfo:
    """One line of `fn-core plugins`: a plugin, where it comes from and what it does."""

    name: str
    distribution: str
    version: str
    status: str  # active | disabled | failed
    error: str = ""
    hooks: list[str] = attrs.field(factory=list)
    provides: list[str] = attrs.field(factory=list)
    builtin: bool = False


class FnPluginManager(pluggy.PluginManager):
    """pluggy's manager plus what fn-core composed at start-up: the selected placer, driver and runner pool."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.infos: dict[str, PluginInfo] = {}
        self.placers: dict[str, tuple[Placer, str]] = {}
        self.drivers: dict[str, tuple[Driver, str]] = {}
        self.runner_pools: dict[str, tuple[RunnerPool, str]] = {}
        self.placer: Placer | None = None
        self.driver: Driver | None = None
        self.runner_pool: RunnerPool | None = None

    def plugin_infos(self) -> list[PluginInfo]:
        """Every plugin the factory saw, in registration order, with its live hook list."""
        for name, info in self.infos.items():
            plugin = self.get_plugin(name)
            if plugin is not None:
                info.hooks = sorted(caller.name for caller in self.get_hookcallers(plugin) or [])
        for name, obj in self.list_name_plugin():  # objects a plugin registered in `configure`, as "<plugin>:<what>"
            owner, _, _ = name.partition(":")
            if owner in self.infos and name != owner:
                info = self.infos[owner]
                info.hooks = sorted(set(info.hooks) | {caller.name for caller in self.get_hookcallers(obj) or []})
        for placer, owner in self.placers.values():
            info = self.infos[owner]
            info.provides.append(f"placer: {placer.name}")
            info.hooks = sorted(set(info.hooks) | set(_hook_names(placer.hooks)))
        for driver, owner in self.drivers.values():
            self.infos[owner].provides.append(f"driver: {driver.name}")
        for pool, owner in self.runner_pools.values():
            self.infos[owner].provides.append(f"runner-pool: {pool.name}")
        infos = [attrs.evolve(info) for info in self.infos.values()]
        for info in self.infos.values():
            info.provides = []
        return infos


def _hook_names(obj: object) -> list[str]:
    """Hook names an object implements (for placer hook objects, not registered unless selected)."""
    return [name for name in dir(obj) if hasattr(getattr(obj, name, None), f"{PROJECT_NAME}_impl")]


def get_plugin_manager(
    config: Config | None = None,
    *,
    load_entrypoints: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    select: bool = True,
) -> FnPluginManager:
    """Build the plugin manager every part of fn-core uses.

    :param config: the platform config (defaults when None).
    :param load_entrypoints: load third-party plugins from the ``fn_core.plugins`` group.
    :param extra_plugins: ``(name, plugin)`` pairs registered after the built-ins, as if they had
        been installed (tests and the `fn_core.testing` kit use this). An installed plugin of the same
        name, or the same object installed under another name, is then left out: the one in process wins.
    :param select: activate the configured placer, driver and runner pool (False for listings
        that must work even when the config names a missing one).
    :raises PluginError: a plugin broke the hook contract (the message names it).
    :raises ConfigError: a selected placer, driver or runner pool does not exist, or a name is offered twice.
    """
    from fn_plugins_builtin import BUILTIN_PLUGINS

    config = config or Config()
    pm = FnPluginManager()
    pm.add_hookspecs(hookspecs)
    disabled = set(config.disable_plugins)
    for name in disabled:
        pm.set_blocked(name)

    for name, module_name in BUILTIN_PLUGINS:
        _register(pm, name, lambda m=module_name: importlib.import_module(m), BUILTIN_DIST, __version__, builtin=True)
    for name, plugin in extra_plugins:
        _register(pm, name, lambda p=plugin: p, IN_PROCESS, "")
    if load_entrypoints:
        _load_entrypoints(pm)
        _warn_unknown_disabled(disabled, pm.infos)
        _check_plugin_tables(config, pm.infos, strict=config.strict and select)  # a listing still lists

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {_plugin_name(pm, exc.plugin)!r} is invalid: {exc}") from None

    _collect_named(pm, "register_placers", Placer, pm.placers)
    _collect_named(pm, "register_drivers", Driver, pm.drivers)
    _collect_named(pm, "register_runner_pools", RunnerPool, pm.runner_pools)
    if select:
        pm.placer = _select(pm.placers, "placer", config.placer)
        _register_placer_hooks(pm, pm.placer)
        pm.driver = _select(pm.drivers, "driver", config.driver)
        pm.runner_pool = _select(pm.runner_pools, "runner pool", config.runner_pool)
    try:
        pm.hook.configure.call_historic(kwargs={"config": config, "plugin_manager": pm})
    except FnCoreError:
        raise  # a ConfigError says itself what is wrong
    except Exception as exc:
        name = failed_plugin(pm.hook.configure, exc)
        raise PluginError(f"plugin {name!r} failed in configure: {type(exc).__name__}: {exc}") from exc
    if pm.placer is not None:
        _refuse_stray_placers(pm, pm.placer)
    return pm


def _refuse_stray_placers(pm: FnPluginManager, placer: Placer) -> None:
    """`place_call` answers first-result: an impl outside the selected placer would silently replace it."""
    selected = f"placer:{placer.name}"
    for impl in pm.hook.place_call.get_hookimpls():
        if impl.plugin_name != selected and not (impl.wrapper or impl.hookwrapper):
            raise PluginError(
                f"plugin {impl.plugin_name!r} implements place_call outside a placer: it would take every placement from "
                f"the selected placer {placer.name!r}; offer it as a Placer from register_placers and select it by name "
                f"(FN_PLACER), or make it a wrapper"
            )


def _register_placer_hooks(pm: FnPluginManager, placer: Placer) -> None:
    """Only the selected placer's hooks are registered; without a ``place_call`` every call would wait for nothing."""
    owner = pm.placers[placer.name][1]
    if isinstance(placer.hooks, type):
        raise PluginError(
            f"placer {placer.name!r} of plugin {owner!r} gives the class {placer.hooks.__name__} as its hooks: give an instance"
        )
    if "place_call" not in _hook_names(placer.hooks):
        raise PluginError(
            f"placer {placer.name!r} of plugin {owner!r} has no place_call hookimpl "
            f"(its hooks object is {placer.hooks!r}: an instance whose place_call is decorated with @hookimpl)"
        )
    try:
        pm.register(placer.hooks, name=f"placer:{placer.name}")
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"placer {placer.name!r} of plugin {owner!r} cannot be registered: {exc}") from None


def _check_plugin_tables(config: Config, known: dict[str, PluginInfo], strict: bool) -> None:
    """A ``[plugins.<name>]`` table that no plugin here reads (a typo, a plugin not installed on this node) would be
    ignored without a word: a warning, or with ``strict`` (FN_STRICT_CONFIG) an error, as for any unknown key."""
    unknown = sorted(set(config.plugins) - set(known))
    if not unknown:
        return
    tables = ", ".join(f"[plugins.{name}]" for name in unknown)
    message = (
        f"config file: {tables} names no installed plugin (plugins: {', '.join(sorted(known))}); "
        f"{'its' if len(unknown) == 1 else 'their'} settings are read by no plugin"
    )
    if strict:
        raise ConfigError(message)
    log.warning("%s", message)


def _warn_unknown_disabled(disabled: set[str], known: dict[str, PluginInfo]) -> None:
    unknown = sorted(disabled - set(known))
    if unknown:
        message = (
            f"FN_DISABLE_PLUGINS names no installed plugin: {', '.join(unknown)} "
            f"(plugins: {', '.join(sorted(known))}); nothing was disabled for those names"
        )
        log.warning("%s", message)  # through the node's logging (FN_LOG_DEST, FN_LOG_FORMAT), never bare stderr


def _plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or repr(plugin)


def _register(
    pm: FnPluginManager, name: str, load: Any, dist: str, version: str, *, builtin: bool = False
) -> None:
    known = pm.infos.get(name)
    if known is not None:
        if known.distribution == IN_PROCESS or _project(known.distribution) == _project(dist):
            return  # the built-ins are entry points of fn-core too; a dist seen twice on sys.path; a test's own copy
        raise PluginError(
            f"two installed distributions offer the plugin {name!r}: {known.distribution} {known.version} and "
            f"{dist} {version}; one name can pick only one plugin (in FN_DISABLE_PLUGINS, [plugins.{name}]): uninstall one"
        )
    info = PluginInfo(name=name, distribution=dist, version=version, status="active", builtin=builtin)
    pm.infos[name] = info
    if pm.is_blocked(name):
        info.status = "disabled"
        return
    try:
        plugin = load()
    except Exception as exc:  # a broken third-party install must not take the platform down
        info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
        log.warning("plugin %s (%s) failed to load and is skipped: %s", name, dist, info.error)
        return
    if isinstance(plugin, type):
        raise PluginError(f"plugin {name!r} ({dist}) is a class; register an instance or a module")
    if pm.is_registered(plugin):  # installed, and registered in process (by a test) under its own name
        del pm.infos[name]
        return
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} ({dist}) is invalid: {exc}") from None
    except ValueError as exc:
        raise PluginError(f"plugin {name!r} ({dist}) cannot be registered: {exc}") from None


def _project(dist: str) -> str:
    # PEP 503: "fn_core" in one metadata file and "fn-core" in another are one project
    return re.sub(r"[-_.]+", "-", dist).lower()


def _load_entrypoints(pm: FnPluginManager) -> None:
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                _register(pm, ep.name, ep.load, dist.metadata["Name"] or "?", dist.version)


def _collect_named(pm: FnPluginManager, hook_name: str, kind: type[Placer] | type[Driver] | type[RunnerPool], into: dict[str, Any]) -> None:
    """Call a registration hook impl by impl, so that every record knows its plugin."""
    label = {Placer: "placer", Driver: "driver", RunnerPool: "runner pool"}[kind]
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        try:
            records = impl.function() or []
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(records, (list, tuple)):
            raise PluginError(f"plugin {impl.plugin_name!r}: {hook_name} must return a list of {kind.__name__} records, got {records!r}")
        record: Any
        for record in records:
            if not isinstance(record, kind):
                raise PluginError(f"plugin {impl.plugin_name!r}: {hook_name} must return {kind.__name__} records, got {record!r}")
            if record.name in into:
                other = into[record.name][1]
                raise ConfigError(
                    f"two plugins offer the {label} {record.name!r}: {other!r} and {impl.plugin_name!r}; "
                    f"disable one of them with FN_DISABLE_PLUGINS"
                )
            into[record.name] = (record, impl.plugin_name)


def _select(offered: dict[str, tuple[Any, str]], label: str, name: str) -> Any:
    if name not in offered:
        available = ", ".join(sorted(offered)) or "none"
        raise ConfigError(
            f"unknown {label} {name!r}; available {label}s: {available} "
            f"(is the plugin that provides it installed and not disabled?)"
        )
    return offered[name][0]
