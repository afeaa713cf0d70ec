"""The one place the plugin manager is built: `get_plugin_manager`.

The CLI, the servers and the tests all call it. Order of work:

1. add the hookspecs (`fn_core.hookspecs`);
2. block the names in ``config.disable_plugins`` (``FN_DISABLE_PLUGINS``);
3. register the built-in plugins (`fn_plugins_builtin.BUILTIN_PLUGINS`);
4. load third-party plugins from the ``fn_core.plugins`` entry-point group: one that fails to
   import is reported (warning + status "failed") and the platform goes on (under ``strict``, FN_STRICT_CONFIG,
   it stops start-up naming it; a listing lists it); two distributions
   offering one plugin name stop start-up naming both; a disabled name that no plugin has is
   named in a warning (a typo would leave the plugin on), and so is a config file's ``[plugins.<name>]``
   table that no plugin has (an error under ``strict``: its settings would be read by nobody);
5. every object registered (a plugin, a selected placer's hooks, an object a plugin registers in
   `configure`) has its hookimpls checked first (`FnPluginManager.register`): one that matches no
   hookspec (the closest hook name is suggested), takes an argument its hook does not have, or is an
   ``async def`` (hooks are called synchronously on the event loop: a coroutine would never run) stops
   start-up naming its plugin; so does a name another object has already;
6. collect the named placers, drivers and runner pools and select the ones the config names
   (an unknown or duplicate name stops start-up with the available names; a placer with no
   ``place_call`` too); every placer's hooks object is checked as in 5, selected or not;
7. replay `configure(config)` to every plugin: one that raises stops start-up naming it.

``keep_invalid`` (`fn-core plugins`): a plugin that breaks the contract in 4 to 7 is listed with status
"invalid" and the reason instead of stopping the build.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
import re
import sys
import types
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy

from fn_core import ENTRY_POINT_GROUP, PROJECT_NAME, __version__, hookspecs
from fn_core.config import Config
from fn_core.errors import ConfigError, PluginError
from fn_core.hook_calls import FailureLog, call_order, failed_plugin
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
    status: str  # active | disabled | failed | invalid (listed with keep_invalid only)
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
        #: what has been logged of the plugins' failures in hooks (`fn_core.hook_calls`)
        self.failures = FailureLog()
        #: the series of plugins' `/metrics` samples found well-formed: a scrape then checks only their values
        self.known_series: dict[str, str] = {}
        #: list a plugin that breaks the hook contract as "invalid" rather than stop (`get_plugin_manager`)
        self.keep_invalid = False
        #: a third-party plugin that fails to import stops start-up (FN_STRICT_CONFIG on a node), else it is skipped
        self.strict_loading = False
        #: objects registered from `configure`, by name: the plugin that registered each
        self.registered_by: dict[str, str] = {}

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """pluggy's `register`, with every hookimpl of ``plugin`` checked first (`impl_problems`), and a short error
        naming the holder when the name is taken (pluggy's lists the whole registry).

        :raises pluggy.PluginValidationError: a hookimpl breaks the contract (one line, every problem).
        :raises ValueError: the name, or the object, is registered already.
        """
        plugin_name = name or self.get_canonical_name(plugin)
        if plugin is None or self.is_blocked(plugin_name):
            return super().register(plugin, name)
        registrar = self._registering_plugin()
        if self.get_plugin(plugin_name) is not None:
            holder = self.registered_by.get(plugin_name) or plugin_name.partition(":")[0]
            yours = f"; name yours {registrar + ':<what>'!r}" if registrar else ""
            raise ValueError(
                f"the plugin name {plugin_name!r} is taken: plugin {holder!r} registered an object under it{yours} "
                f"(an object a plugin registers is named '<its entry-point name>:<what>')"
            )
        if self.is_registered(plugin):
            raise ValueError(f"{plugin!r:.100} is registered already, as {self.get_name(plugin)!r}")
        problems = impl_problems(self, plugin)
        if problems:
            raise pluggy.PluginValidationError(plugin, "; ".join(problems))
        registered = super().register(plugin, name)
        if registrar:
            self.registered_by[plugin_name] = registrar
        return registered

    def _registering_plugin(self) -> str | None:
        """The plugin whose `configure` impl is registering an object now (None outside `configure`)."""
        hook = getattr(self.hook, "configure", None)
        if hook is None:
            return None
        codes = {getattr(impl.function, "__code__", None): impl.plugin_name for impl in hook.get_hookimpls()}
        frame: types.FrameType | None = sys._getframe(2)
        while frame is not None:
            found = codes.get(frame.f_code)
            if found is not None:
                return found
            frame = frame.f_back
        return None

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


def impl_problems(pm: pluggy.PluginManager, obj: object) -> list[str]:
    """What is wrong with the hookimpls of ``obj`` (a plugin, a placer's hooks object), one line each: a name no
    hookspec has (with the closest one), an argument its hookspec does not give, an ``async def``, a wrapper that
    does not yield. Checked before anything is registered, and for placers that are never selected."""
    problems = []
    specs = sorted(name for name, caller in vars(pm.hook).items() if isinstance(caller, pluggy.HookCaller) and caller.has_spec())
    for attr in dir(obj):
        opts = pm.parse_hookimpl_opts(obj, attr)
        if opts is None:
            if attr in specs and callable(getattr(obj, attr, None)):  # the decorator forgotten: it would never run
                problems.append(f"{attr} is not marked @hookimpl (`from fn_core import hookimpl`), so fn-core would never call it")
            continue
        function = getattr(obj, attr)
        hook_name = opts.get("specname") or attr
        caller = getattr(pm.hook, hook_name, None)
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            problems.append(
                f"hook {hook_name} is an async def: fn-core calls hooks synchronously on the event loop and never awaits "
                f"them, so its body would never run; make it a plain def, and quick (it holds up every request of the "
                f"node while it runs: hand slow work to a thread or a task of your own)"
            )
        if caller is None or not caller.has_spec():
            if not opts.get("optionalhook"):
                close = difflib.get_close_matches(hook_name, specs, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (the hooks: {', '.join(specs)})"
                problems.append(f"unknown hook {hook_name!r}{hint}")
            continue
        assert caller.spec is not None
        unknown = [arg for arg in _required_args(function) if arg not in caller.spec.argnames]
        if unknown:
            problems.append(
                f"hook {hook_name} takes {', '.join(unknown)}, which the hook does not give "
                f"(it gives: {', '.join(caller.spec.argnames)}; an impl takes any of them, by name)"
            )
        if (opts.get("wrapper") or opts.get("hookwrapper")) and not inspect.isgeneratorfunction(function):
            problems.append(f"hook {hook_name} is declared a wrapper but does not yield")
    return problems


def _required_args(function: object) -> list[str]:
    """The arguments pluggy passes by name: the positional ones without a default (``self`` bound already)."""
    try:
        parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in positional and p.default is inspect.Parameter.empty]


def get_plugin_manager(
    config: Config | None = None,
    *,
    load_entrypoints: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    select: bool = True,
    keep_invalid: bool = False,
) -> FnPluginManager:
    """Build the plugin manager every part of fn-core uses.

    :param config: the platform config (defaults when None).
    :param load_entrypoints: load third-party plugins from the ``fn_core.plugins`` group.
    :param extra_plugins: ``(name, plugin)`` pairs registered after the built-ins, as if they had
        been installed (tests and the `fn_core.testing` kit use this). An installed plugin of the same
        name, or the same object installed under another name, is then left out: the one in process wins.
    :param select: activate the configured placer, driver and runner pool (False for listings
        that must work even when the config names a missing one).
    :param keep_invalid: for listings (`fn-core plugins`): a plugin that breaks the hook contract (a misspelled or
        ``async def`` hook, a bad argument, a class for an instance, a broken placer or registration hook) is
        left unregistered and listed with status "invalid" and the reason, instead of raising `PluginError`.
    :raises PluginError: a plugin broke the hook contract (the message names it).
    :raises ConfigError: a selected placer, driver or runner pool does not exist, or a name is offered twice.
    """
    from fn_plugins_builtin import BUILTIN_PLUGINS

    config = config or Config()
    pm = FnPluginManager()
    pm.keep_invalid = keep_invalid
    pm.add_hookspecs(hookspecs)
    disabled = set(config.disable_plugins)
    for name in disabled:
        pm.set_blocked(name)

    for name, module_name in BUILTIN_PLUGINS:
        _register(pm, name, lambda m=module_name: importlib.import_module(m), BUILTIN_DIST, __version__, builtin=True)
    for name, plugin in extra_plugins:
        _register(pm, name, lambda p=plugin: p, IN_PROCESS, "")
    if load_entrypoints:
        pm.strict_loading = config.strict and select  # a listing still lists
        _load_entrypoints(pm)
        _warn_unknown_disabled(disabled, pm.infos)
        _check_plugin_tables(config, pm.infos, strict=config.strict and select)  # a listing still lists

    try:
        pm.check_pending()  # `FnPluginManager.register` checked each impl already: a safety net
    except pluggy.PluginValidationError as exc:
        name = _plugin_name(pm, exc.plugin)
        if name not in pm.infos:
            raise PluginError(f"plugin {name!r} is invalid: {exc}") from None
        _invalid(pm, name, f"plugin {name!r} is invalid: {exc}", str(exc))

    _collect_named(pm, "register_placers", Placer, pm.placers)
    _collect_named(pm, "register_drivers", Driver, pm.drivers)
    _collect_named(pm, "register_runner_pools", RunnerPool, pm.runner_pools)
    if select:
        pm.placer = _select(pm.placers, "placer", config.placer)
        _register_placer_hooks(pm, pm.placer)
        pm.driver = _select(pm.drivers, "driver", config.driver)
        pm.runner_pool = _select(pm.runner_pools, "runner pool", config.runner_pool)
    kwargs = {"config": config, "plugin_manager": pm}
    order = call_order(pm.hook.configure)  # as the replay calls them: a listing goes on past one that fails
    try:
        pm.hook.configure.call_historic(kwargs=kwargs)
    except (ConfigError, PluginError):
        raise  # each says itself what is wrong (a PluginError names the plugins); any other error is named below
    except Exception as exc:
        name = failed_plugin(pm.hook.configure, exc)
        _configure_failed(pm, name, exc)
        names = [impl.plugin_name for impl in order]
        for impl in order[names.index(name) + 1:] if name in names else []:
            if pm.get_plugin(impl.plugin_name) is None:
                continue
            try:  # as pluggy calls an impl; objects these register get their configure from pluggy's history
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except (ConfigError, PluginError):
                raise
            except Exception as later:
                _configure_failed(pm, impl.plugin_name, later)
    _refuse_stray_placers(pm, config.placer)
    return pm


def _configure_failed(pm: FnPluginManager, name: str, exc: Exception) -> None:
    """A plugin's configure raised: stop, naming it; or, for a listing, list it invalid (each such plugin, and those
    after it configured: their objects registered, their hooks listed)."""
    if not _listing(pm, name):
        raise PluginError(f"plugin {_named(pm, name)} failed in configure: {type(exc).__name__}: {exc}") from exc
    _mark_invalid(pm, name, f"configure raised {type(exc).__name__}: {exc}")


def _refuse_stray_placers(pm: FnPluginManager, selected: str) -> None:
    """`place_call` answers first-result: an impl outside the selected placer would silently replace it. Checked in
    listings too (`select` False), where such a plugin is listed invalid: a server would not start with it."""
    for impl in pm.hook.place_call.get_hookimpls():
        if not impl.plugin_name.startswith("placer:") and not (impl.wrapper or impl.hookwrapper):
            name = impl.plugin_name
            _invalid(pm, name, (
                f"plugin {_named(pm, name)} implements place_call outside a placer: it would take every placement from "
                f"the selected placer {selected!r}; offer it as a Placer from register_placers and select it by name "
                f"(FN_PLACER), or make it a wrapper"
            ), "implements place_call outside a placer (offer it as a Placer from register_placers, or make it a wrapper)")


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
    except Exception as exc:  # a broken third-party install must not take the platform down, unless told so
        info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
        if pm.strict_loading:  # an authorising plugin that is not there lets every call through: an operator may want no start
            raise PluginError(
                f"plugin {name!r} ({dist}) failed to load: {info.error} (FN_STRICT_CONFIG is on: repair or uninstall "
                f"it, or leave it out with FN_DISABLE_PLUGINS={name})"
            ) from exc
        log.warning("plugin %s (%s) failed to load and is skipped: %s (FN_STRICT_CONFIG makes this stop start-up)",
                    name, dist, info.error)
        return
    where = _where(dist, version)
    if isinstance(plugin, type):
        _invalid(pm, name, f"plugin {name!r} ({where}) is a class; register an instance or a module", "it is a class, not an instance")
        return
    if pm.is_registered(plugin):  # installed, and registered in process (by a test) under its own name
        del pm.infos[name]
        return
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        _invalid(pm, name, f"plugin {name!r} ({where}) is invalid: {exc}", str(exc))
    except ValueError as exc:
        raise PluginError(f"plugin {name!r} ({where}) cannot be registered: {exc}") from None


def _where(dist: str, version: str) -> str:
    """Where a plugin comes from, as its errors say it: ``fn-conf 0.1``, ``registered in process``."""
    return f"{dist} {version}" if version else dist.strip("()")


def _named(pm: FnPluginManager, name: str) -> str:
    """Plugin ``name`` as errors name it: with its distribution and version when it is one of the listed plugins."""
    info = pm.infos.get(name)
    return f"{name!r} ({_where(info.distribution, info.version)})" if info is not None else repr(name)


def _invalid(pm: FnPluginManager, name: str, message: str, reason: str) -> None:
    """A plugin broke the hook contract: stop (`PluginError` with ``message``), or, for a listing, mark it invalid."""
    if not _listing(pm, name):
        raise PluginError(message)
    _mark_invalid(pm, name, reason)


def _mark_invalid(pm: FnPluginManager, name: str, reason: str) -> None:
    """List plugin ``name`` as "invalid" with ``reason`` (`keep_invalid`); it is unregistered: its hooks do not run."""
    info = pm.infos[name]
    info.status = "invalid"
    info.error = f"{info.error}; {reason}" if info.error else reason
    if pm.get_plugin(name) is not None:
        pm.unregister(name=name)


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
        owner = impl.plugin_name
        try:
            records = impl.function() or []
        except Exception as exc:
            if not _listing(pm, owner):
                raise PluginError(f"plugin {owner!r} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
            _mark_invalid(pm, owner, f"{hook_name} raised {type(exc).__name__}: {exc}")
            continue
        if not isinstance(records, (list, tuple)):
            records = [_Wrong(f"{hook_name} must return a list of {kind.__name__} records, got {records!r}")]
        record: Any
        for record in records:
            if not isinstance(record, kind):
                message = record.message if isinstance(record, _Wrong) else f"{hook_name} must return {kind.__name__} records, got {record!r}"
                if not _listing(pm, owner):
                    raise PluginError(f"plugin {owner!r}: {message}")
                _mark_invalid(pm, owner, message)
                break
            if record.name in into:
                other = into[record.name][1]
                raise ConfigError(
                    f"two plugins offer the {label} {record.name!r}: {other!r} and {owner!r}; "
                    f"disable one of them with FN_DISABLE_PLUGINS"
                )
            if isinstance(record, Placer):
                problems = _placer_problems(pm, record)
                if problems:
                    if not _listing(pm, owner):
                        raise PluginError(f"placer {record.name!r} of plugin {owner!r} is invalid: {'; '.join(problems)}")
                    _mark_invalid(pm, owner, f"placer {record.name!r}: {'; '.join(problems)}")
            into[record.name] = (record, owner)


@attrs.frozen
class _Wrong:
    """What a registration hook answered instead of a list of records."""

    message: str


def _listing(pm: FnPluginManager, name: str) -> bool:
    """Whether a contract broken by plugin ``name`` is listed (`keep_invalid`) rather than raised."""
    return pm.keep_invalid and name in pm.infos


def _placer_problems(pm: FnPluginManager, placer: Placer) -> list[str]:
    """A placer's hooks object is registered only when it is selected: its hookimpls are checked when it is offered."""
    if isinstance(placer.hooks, type):
        return []  # said when it is selected (`_register_placer_hooks`): give an instance
    return impl_problems(pm, placer.hooks)


def _select(offered: dict[str, tuple[Any, str]], label: str, name: str) -> Any:
    if name not in offered:
        available = ", ".join(sorted(offered)) or "none"
        raise ConfigError(
            f"unknown {label} {name!r}; available {label}s: {available} "
            f"(is the plugin that provides it installed and not disabled?)"
        )
    return offered[name][0]
