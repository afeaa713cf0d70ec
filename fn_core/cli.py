"""The `fn-core` command: serve | lb | api | runner | start | plugins | import-fn | build-image | version."""

from __future__ import annotations

import asyncio
import datetime
import functools
import importlib
import json
import logging
import platform
import resource
import signal
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fn_core import __version__, logfmt
from fn_core.config import LOG_LEVELS, NODE_TYPES, Config, load_config, log_level_name
from fn_core.errors import FnCoreError
from fn_core.log_dest import log_handler
from fn_core.plugins import FnPluginManager, get_plugin_manager
from fn_core.signals import StoppedBySignal, second_signal, until_stop_signal


def _setup(
    ctx: click.Context, overrides: dict[str, Any], *, select: bool = True, keep_invalid: bool = False
) -> tuple[Config, FnPluginManager]:
    config = load_config(ctx.obj.get("config_file"), overrides=overrides)
    handler = log_handler(config.log_dest, config.log_prefix)
    handler.setFormatter(JsonLogFormatter() if config.log_format == "json" else logging.Formatter(TEXT_LOG_FORMAT))
    level = logging.getLevelName(config.log_level.upper())
    # FN_LOG_LEVEL=debug is for fn-core's own lines (functions' output among them): a library's debug lines (docker's
    # name the registry user of FN_DOCKER_AUTH, urllib3's every Docker API call) stay off, its info and up are kept
    logging.basicConfig(level=max(level, logging.INFO), handlers=[handler])
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for line in config.load_warnings:  # found before there was a log destination to send them to
        logging.getLogger("fn_core.config").warning(line)
    pm = get_plugin_manager(config, select=select, keep_invalid=keep_invalid)
    for name in _plugin_packages(pm):  # a plugin's lines are the node's own too (set only now: its modules are known)
        logging.getLogger(name).setLevel(level)
    return config, pm


#: the loggers FN_LOG_LEVEL sets; every other logger (a library's) logs at info or above, at FN_LOG_LEVEL or above
OWN_LOGGERS = ("fn_core", "fn_plugins_builtin")
TABLE_WIDTH = 118  # `fn-core plugins`: the hooks column wraps to keep rows within this


def _plugin_packages(pm: FnPluginManager) -> set[str]:
    """The top-level packages of the third-party plugins' modules: they log under their modules' names."""
    packages = set()
    for plugin in pm.get_plugins():
        module = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
        packages.add(module.partition(".")[0])
    return packages - set(OWN_LOGGERS)


TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLogFormatter(logging.Formatter):
    """``FN_LOG_FORMAT=json``: one object per line, with the keys of Fn's JSON logs (time, level, msg) plus the logger,
    and a line's fields (`fn_core.logfmt`: call_id, fn_id, status, ...) as keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, logfmt.FIELDS_ATTR, None)
        if fields:  # a line of fields (the call line): each a key of its own, beside those above
            entry.update((key, raw) for key, raw in fields.items() if key not in entry)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def fails_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn fn-core's own errors (bad config, bad plugin) into one line and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FnCoreError as exc:
            click.echo(f"fn-core: error: {exc}", err=True)
            if any(getattr(handler, "stream", None) is not sys.stderr for handler in logging.getLogger().handlers):
                # FN_LOG_DEST is a file or a syslog: the node's log says why it stopped, not only stderr
                logging.getLogger(__name__).error("error: %s", exc)
            sys.exit(2)

    return wrapper


def _log_level_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--log-level reads what FN_LOG_LEVEL reads: any case, and warn."""
    if value is None:
        return None
    level = log_level_name(value)
    if level not in LOG_LEVELS:
        raise click.BadParameter(f"{value!r} is not one of debug, info, warning (or warn), error (in any case)")
    return str(level)


def server_options(
    *, http: bool = False, grpc: bool = False, lb: bool = False, runner: bool = False, store: bool = False
) -> Callable[..., Any]:
    """The flags of the server commands; each overrides its config key / FN_* variable."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        opts = [
            click.option("--host", help="bind address [FN_HOST, default 0.0.0.0]"),
            click.option(
                "--log-level", callback=_log_level_option, metavar="LEVEL",
                help="debug, info, warning (or warn) or error, in any case [FN_LOG_LEVEL]",
            ),
        ]
        if http:
            opts.append(click.option("--port", type=int, help="HTTP port [FN_PORT, default 8080]"))
        if grpc:
            opts.append(click.option("--grpc-port", type=int, help="gRPC port [FN_GRPC_PORT, default 9190]"))
        if lb:
            opts += [
                click.option("--placer", help="placer name [FN_PLACER, default ch]"),
                click.option("--runner", "runner_addresses", multiple=True, help="runner host:port, repeatable [FN_RUNNER_ADDRESSES]"),
                click.option("--runner-pool", help="source of the runner list, by name [FN_RUNNER_POOL, default static]"),
                click.option("--runner-api-url", help="read apps and fns from this API node (fn-core api) [FN_RUNNER_API_URL]"),
            ]
        if store:
            opts.append(click.option("--db", "db_url", help="store URL, sqlite3:///path/fn.db [FN_DB_URL]"))
        if runner:
            opts.append(click.option("--driver", help="container driver name [FN_DRIVER, default docker]"))
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


def _run(main_coro: Any) -> None:
    """Run a server on uvloop: a faster event loop under the same asyncio API. A second signal during the graceful
    stop cancels it (`fn_core.signals`): that exit is a log line and 128 + the signal's number, as a shell reports it."""
    import uvloop

    try:
        uvloop.run(main_coro)
    except KeyboardInterrupt:  # SIGINT before the node's own handler is in (during start-up): not click's "Aborted!"
        logging.getLogger(__name__).warning("stopped during start-up by SIGINT")
        sys.exit(128 + signal.SIGINT)
    except asyncio.CancelledError:
        signum = second_signal()
        if signum is None:
            raise
        logging.getLogger(__name__).warning("stopped at once by a second signal (%s)", signal.Signals(signum).name)
        sys.exit(128 + signum)


def _overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items() if v not in (None, ())}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file [FN_CONFIG]")
@click.version_option(__version__, prog_name="fn-core")
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """fn-core: serverless functions in hot Docker containers, extended by pluggy plugins."""
    ctx.ensure_object(dict)
    ctx.obj["config_file"] = config_file


#: each server command's entry point (imported late: `plugins` and `version` need none of them)
SERVER_ENTRY_POINTS = {
    "serve": ("fn_core.lb.main", "run_serve"),
    "lb": ("fn_core.lb.main", "run_lb"),
    "api": ("fn_core.lb.main", "run_api"),
    "runner": ("fn_core.runner.main", "run_runner"),
}


def _start_server(ctx: click.Context, kwargs: dict[str, Any], command: str | None = None) -> None:
    """Config, plugins, then the server's entry point. ``command`` None: the node FN_NODE_TYPE names (`start`)."""
    config, pm = _setup(ctx, _overrides(kwargs))
    if command is None:
        command = NODE_TYPES[config.node_type or "full"]
    elif config.node_type and NODE_TYPES[config.node_type] != command:
        raise FnCoreError(
            f"FN_NODE_TYPE={config.node_type} is `fn-core {NODE_TYPES[config.node_type]}`, not `fn-core {command}`: "
            "run that command (or `fn-core start`), or unset FN_NODE_TYPE"
        )
    _log_start(command, pm)
    raise_open_files_limit()
    module, entry = SERVER_ENTRY_POINTS[command]
    _run(getattr(importlib.import_module(module), entry)(config, pm))


#: open files a node may have, below which it says at start-up that it may run out: each client connection, each hot
#: container's socket, each Docker request and each runner channel takes one
FEW_OPEN_FILES = 4096


def raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard limit, as Go programs do at start (since Go 1.19): the soft limit
    (often 1024) is a default for interactive shells, and a busy node at it refuses connections unanswered and fails
    launches with EMFILE while the hard limit allows far more. Said in the log, and warned of when it stays low."""
    log = logging.getLogger(__name__)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # a hard limit of "unlimited" is past the kernel's nr_open, say
            log.info("open files: soft limit %d kept, the hard limit %s could not be taken: %s", soft, _limit(hard), exc)
        else:
            log.info("open files: soft limit raised from %d to the hard limit %s", soft, _limit(hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and soft < FEW_OPEN_FILES:
        log.warning("open files limited to %d (ulimit -n, the hard limit): a busy node needs more (each connection, hot "
                    "container and Docker request takes one); raise it to %d or more (LimitNOFILE= under systemd, "
                    "--ulimit nofile= under Docker)", soft, FEW_OPEN_FILES)


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


#: the nodes each selection is used on (an LB starts no container, a runner places no call)
NODES_USING = {"placer": ("serve", "lb"), "runner_pool": ("serve", "lb"), "driver": ("serve", "runner")}


def _log_start(command: str, pm: FnPluginManager) -> None:
    """One line saying what starts: the node, fn-core's and Python's versions, what is selected, and each third-party
    plugin with its distribution's version (what a bug report needs, and what differs between two nodes' installs);
    built-in plugins switched off and plugins skipped for failing to load are named too."""
    infos = pm.plugin_infos()
    third_party = [f"{i.name} ({i.distribution} {i.version})" for i in infos if i.status == "active" and not i.builtin]
    fields: dict[str, Any] = {"node": command, "version": __version__, "python": platform.python_version()}
    for kind, selected in (("placer", pm.placer), ("runner_pool", pm.runner_pool), ("driver", pm.driver)):
        if selected is not None and command in NODES_USING[kind]:
            fields[kind] = selected.name
    fields["plugins"] = ", ".join(third_party) or "-"
    for status in ("disabled", "failed"):
        names = [i.name for i in infos if i.status == status]
        if names:
            fields[status] = ", ".join(names)
    logfmt.log(logging.getLogger(__name__), logging.INFO, "starting", fields)


@main.command()
@server_options(http=True, lb=True, runner=True, store=True)
@click.pass_context
@fails_cleanly
def serve(ctx: click.Context, **kwargs: Any) -> None:
    """All in one process: the v2 API, the LB and a local runner (the embedded default)."""
    _start_server(ctx, kwargs, "serve")


@main.command()
@server_options(http=True, lb=True, store=True)
@click.pass_context
@fails_cleanly
def lb(ctx: click.Context, **kwargs: Any) -> None:
    """The v2 API and the load balancer over a pool of runners (FN_RUNNER_ADDRESSES / --runner).

    With --runner-api-url, an LB among several: it reads apps and fns from that API node and serves no v2 API.
    """
    _start_server(ctx, kwargs, "lb")


@main.command()
@server_options(http=True, store=True)
@click.pass_context
@fails_cleanly
def api(ctx: click.Context, **kwargs: Any) -> None:
    """An API node: the v2 API over the store, for LBs started with --runner-api-url (no invoke here)."""
    _start_server(ctx, kwargs, "api")


@main.command()
@server_options(http=True, grpc=True, runner=True)
@click.pass_context
@fails_cleanly
def runner(ctx: click.Context, **kwargs: Any) -> None:
    """A pure runner: Fn's gRPC RunnerProtocol, calls run in hot containers; /metrics on FN_PORT."""
    _start_server(ctx, kwargs, "runner")


@main.command()
@click.pass_context
@fails_cleanly
def start(ctx: click.Context) -> None:
    """The node FN_NODE_TYPE names (full, api, lb or pure-runner; default full), configured by FN_* and the config file only, as Fn's fnserver."""
    _start_server(ctx, {})


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
@fails_cleanly
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List plugins: name, distribution, version, status, hooks and what each provides."""
    config, pm = _setup(ctx, {}, select=False, keep_invalid=True)
    infos = pm.plugin_infos()
    invalid = [i.name for i in infos if i.status == "invalid"]
    # listed even when the config names a placer, driver or pool nobody offers, but said: a server would not start
    selections: list[tuple[str, str, dict[str, Any]]] = [
        ("placer", config.placer, pm.placers), ("driver", config.driver, pm.drivers), ("runner pool", config.runner_pool, pm.runner_pools),
    ]
    unknown = {label.replace(" ", "_"): name for label, name, offered in selections if name not in offered}
    if as_json:
        rows = [
            {
                "name": i.name,
                "distribution": i.distribution,
                "version": i.version,
                "status": i.status,
                "error": i.error,
                "builtin": i.builtin,
                "hooks": i.hooks,
                "provides": i.provides,
            }
            for i in infos
        ]
        report = {"plugins": rows, "placer": config.placer, "driver": config.driver, "runner_pool": config.runner_pool}
        click.echo(json.dumps({**report, "unknown": unknown}, indent=2))
        _exit_if_a_server_would_not_start(invalid, unknown)
        return
    header = ("NAME", "DISTRIBUTION", "VERSION", "STATUS", "PROVIDES", "HOOKS")
    rows_txt = [(i.name, i.distribution, i.version, i.status, ", ".join(i.provides), ", ".join(i.hooks)) for i in infos]
    widths = [max(len(r[c]) for r in [header, *rows_txt]) for c in range(len(header) - 1)]
    lead_width = sum(widths) + 2 * len(widths)
    for row in [header, *rows_txt]:
        lead = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  "
        # the hooks wrap under their column: a plugin with many would widen every row past a terminal's
        hooks = textwrap.wrap(row[-1], max(32, TABLE_WIDTH - lead_width), break_on_hyphens=False) or [""]
        click.echo((lead + hooks[0]).rstrip())
        for more in hooks[1:]:
            click.echo(" " * lead_width + more)
    # why a plugin failed or is invalid, under the table: one long reason would widen every row of it
    for info in infos:
        if info.error:
            click.echo(f"\n{info.name} is {info.status}: {info.error}")
    click.echo("\nselected " + "   ".join(f"{label}: {name}" for label, name, _ in selections))
    for label, name, offered in selections:
        if name not in offered:
            available = ", ".join(sorted(offered)) or "none"
            click.echo(f"unknown {label} {name!r}: no plugin offers it, a server would not start; available {label}s: {available}")
    _exit_if_a_server_would_not_start(invalid, unknown)


def _exit_if_a_server_would_not_start(invalid: list[str], unknown: dict[str, str]) -> None:
    """After the listing: an invalid plugin, or a placer, driver or pool no plugin offers, stops every server, so
    the listing fails too (exit 2): a script checking a config before a rollout reads the exit status."""
    problems = []
    if invalid:
        problems.append(f"invalid plugin{'s' if len(invalid) > 1 else ''} {', '.join(invalid)}")
    problems += [f"unknown {label.replace('_', ' ')} {name!r}" for label, name in unknown.items()]
    if problems:
        click.echo(f"fn-core: error: {'; '.join(problems)}: a server would not start", err=True)
        sys.exit(2)


@main.command("import-fn")
@click.argument("source")
@click.option("--db", "db_url", help="fn-core's store to write to, sqlite3:///path/fn.db [FN_DB_URL]")
@click.option("-H", "--header", "headers", multiple=True, help="'Name: value' sent to Fn's API (a token), repeatable")
@click.option("--dry-run", is_flag=True, help="read and check everything, say what would change, write nothing")
@click.option("--mirror", is_flag=True, help="also delete from the store what SOURCE does not have (Fn deleted it)")
@click.pass_context
@fails_cleanly
def import_fn(ctx: click.Context, source: str, db_url: str | None, headers: tuple[str, ...], dry_run: bool,
              mirror: bool) -> None:
    """Copy an Fn deployment's apps, fns and triggers into fn-core's store, with their ids and times.

    SOURCE is Fn's API (http://fn-host:8080, whatever database Fn runs on) or Fn's SQLite file
    (sqlite3:///path/fn.db, read only). Clients' /invoke/{fn_id} and /t/{app}/{path} URLs keep working.
    Each object is checked as the v2 API checks a create (installed plugins' validate_* hooks too); one
    refused, or a name another id holds here, and nothing is written. Run again to bring what changed on
    Fn since: Fn's version wins; what was deleted on Fn stays here, unless --mirror.
    """
    from fn_core.store.fn_import import import_command, report

    config, pm = _setup(ctx, _overrides({"db_url": db_url}), select=False)
    try:
        done = asyncio.run(until_stop_signal(import_command(config, pm.hook, source, headers, dry_run=dry_run, mirror=mirror)))
    except StoppedBySignal as stopped:  # the write was rolled back, a store file made for it removed
        click.echo(f"fn-core: error: stopped by {stopped}: nothing was imported", err=True)
        sys.exit(128 + stopped.signum)
    for line in report(done, source, config.db_path, dry_run):
        click.echo(line)


@main.command("build-image")
@click.argument("function", type=click.Path(exists=True, dir_okay=True))
@click.option("-t", "--tag", required=True, help="image tag, e.g. myapp/hello:1")
@fails_cleanly
def build_image(function: str, tag: str) -> None:
    """Build a function image locally (no registry) from FUNCTION: a func.py, or a dir holding one.

    The image is the host's Python 3.11 plus fdk-python, with FUNCTION's `handler` as entry point.
    """
    import docker

    from fn_core.images import build_function_image
    from fn_core.runner.main import docker_unreachable

    path = Path(function)
    func_py = path / "func.py" if path.is_dir() else path
    if not func_py.is_file():
        raise FnCoreError(f"{function}: no func.py there")
    try:
        client = docker.from_env()
    except docker.errors.DockerException as exc:  # from_env asks the engine its API version: none answered
        raise docker_unreachable(exc) from None
    try:
        built = build_function_image(client, func_py, tag)
    except docker.errors.DockerException as exc:  # a tag Docker refuses (upper case, a space), a failed build
        raise FnCoreError(f"cannot build {tag}: {getattr(exc, 'explanation', None) or exc}") from None
    click.echo(built)


@main.command()
def version() -> None:
    """Print fn-core's version."""
    click.echo(__version__)
