"""The platform's one typed configuration object.

Values come from, lowest precedence first: the defaults below < a TOML config file
(``--config`` or ``FN_CONFIG``) < ``FN_*`` environment variables (Fn's names where Fn has the
feature) < command-line flags. `load_config` merges and validates them once at start-up; the hot
path only ever reads the resulting frozen object.

A plugin's settings live in the file's ``[plugins.<name>]`` table and are read with
`Config.plugin_settings`.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shlex
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from fn_core.errors import ConfigError
from fn_core.log_dest import FORMS, parse_log_dest
from fn_core.logfmt import hide_passwords

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_IOFS_PATH = "/tmp/fn-core-iofs"
_LOGRUS_LEVELS = {"warn": "warning", "trace": "debug", "fatal": "error", "panic": "error"}

#: Fn's node types (FN_NODE_TYPE) and the `fn-core` command that runs each
NODE_TYPES = {"full": "serve", "api": "api", "lb": "lb", "pure-runner": "runner"}

#: Fn's variables that fn-core reads nowhere, with why. One that is set is named at start-up, so that
#: nobody takes it to be in force; every other FN_* of Fn's keeps its meaning here (the settings below).
FN_VARIABLES_WITHOUT_EFFECT = {
    "FN_HOT_POLL_MSECS": "waiting calls are woken when a container frees, not by polling",
    "FN_HOT_LAUNCHER_TIMEOUT_MSECS": "a function's queue on a runner goes as soon as it has no container and no waiting call",
}


def variables_without_effect(env: Mapping[str, str] | None = None) -> list[str]:
    """One line for each of Fn's variables that is set in ``env`` but has no effect in fn-core."""
    env = os.environ if env is None else env
    return [f"{name} is set, but has no effect in fn-core: {why}" for name, why in FN_VARIABLES_WITHOUT_EFFECT.items()
            if env.get(name, "") != ""]


#: FN_* variables of Fn's other tools (the fn CLI, the FDKs, the environment Fn gives a function), which a node's
#: environment may well hold: not taken for misspellings of ours
OTHER_FN_VARIABLES = frozenset({
    "FN_API_URL", "FN_REGISTRY", "FN_CONTEXT", "FN_TOKEN", "FN_FORMAT", "FN_LISTENER", "FN_APP_ID", "FN_FN_ID",
    "FN_APP_NAME", "FN_FN_NAME", "FN_MEMORY", "FN_TYPE", "FN_CPUS", "FN_TMPSIZE", "FN_CALL_ID", "FN_DEADLINE",
    "FN_LOGFRAME_NAME", "FN_LOGFRAME_HDR",
})


def misspelled_variables(env: Mapping[str, str]) -> list[str]:
    """One line for each FN_* variable in ``env`` that fn-core does not know but that is spelled nearly as one it
    reads (FN_PLACR, FN_RUNNER_ADDRESS): it would be ignored, and the node run on the default it was meant to change."""
    known = {*fields_by_env(), "FN_CONFIG", *FN_VARIABLES_WITHOUT_EFFECT}
    lines = []
    for name in sorted(env):
        if name.startswith("FN_") and name not in known and name not in OTHER_FN_VARIABLES:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            if close:
                lines.append(f"{name} is set, but fn-core reads no such variable: did you mean {close[0]}?")
    return lines


def setting(default: Any, env: str | None, help: str, **kwargs: Any) -> Any:
    """An attrs field with its environment variable name and its help text."""
    if isinstance(default, (list, dict)):
        factory = type(default)
        return attrs.field(factory=lambda: factory(default), metadata={"env": env, "help": help}, **kwargs)
    return attrs.field(default=default, metadata={"env": env, "help": help}, **kwargs)


def _port(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{attribute.name} must be a TCP port in 0..65535 (0 = any free port), got {value}")


def _non_negative(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ConfigError(f"{attribute.name} must not be negative, got {value}")


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{attribute.name} must be positive, got {value}")


# Seconds, as a float. A setting annotated `Duration` is read by `_coerce` in Go's duration syntax too, as Fn
# reads its timeouts (FN_HTTP_IDLE_TIMEOUT=1m30s)
Duration = float
# A list that Fn reads space-separated (FN_DOCKER_NETWORKS, FN_IMAGE_CLEAN_EXEMPT_TAGS): spaces or commas
# separate its items. Other lists are comma-separated, so that a value with a space in it is refused, not split.
Words = list[str]

_GO_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}  # in ns
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_GO_PART = rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h)"  # ms before m and s: the first alternative that fits wins


def parse_duration(value: object) -> float:
    """Seconds from a number, a decimal string ("30", "2.5") or a Go duration ("1m30s", "500ms", "2h"); never negative.

    Raises ValueError for anything else (a sign, units Go does not know, inf, nan, an empty string).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 <= value < float("inf"):
            raise ValueError(value)
        return float(value)
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip()
    if re.fullmatch(_NUMBER, text):
        return float(text)
    if not re.fullmatch(f"(?:{_GO_PART})+", text):
        raise ValueError(value)
    return sum(float(number) * _GO_UNITS[unit] for number, unit in re.findall(_GO_PART, text)) / 10**9


def _log_dest(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        parse_log_dest(value)
    except ValueError:
        raise ConfigError(f"{attribute.name} {value!r}: expected {FORMS}") from None


def log_level_name(value: Any) -> Any:
    """FN_LOG_LEVEL's value as a level of LOG_LEVELS (the --log-level flag reads it the same way)."""
    # Fn (logrus) reads the level in any case, and knows "warn", and "trace", "fatal" and "panic" beyond our four:
    # those are the nearest of ours (trace the finest, fatal and panic the coarsest)
    if isinstance(value, str):
        value = value.strip().lower()
        return _LOGRUS_LEVELS.get(value, value)
    return value


def _one_of(*choices: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ConfigError(f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}")

    return check


def _node_type(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value and value not in NODE_TYPES:
        raise ConfigError(f"{attribute.name} must be one of {', '.join(NODE_TYPES)} (or unset), got {value!r}")


def _name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise ConfigError(f"{attribute.name} must name a plugin-provided {attribute.name}, got an empty string")


def _json_object(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        return
    try:
        parsed = json.loads(value)
    except ValueError as exc:  # the message gives the position only, never the (secret) text
        raise ConfigError(f"{attribute.name} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{attribute.name} must be a JSON object, got a JSON {type(parsed).__name__}")


def _command(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"{attribute.name} must be a shell-quoted command, got {value!r}: {exc}") from None
    if not words:
        raise ConfigError(f"{attribute.name} must not be empty")


def _http_url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    scheme, sep, rest = value.partition("://")
    if value and not (sep and scheme in ("http", "https") and rest.split("/", 1)[0]):
        raise ConfigError(f"{attribute.name}: {hide_passwords(value)!r} is not an http(s) URL, e.g. http://fn-api:8080")


def _api_node_url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    _http_url(instance, attribute, value)
    path = value.partition("://")[2].partition("/")[2].partition("?")[0].rstrip("/")
    if path == "v2" or path.endswith("/v2"):  # every lookup would go to /v2/v2/...: each call a "not found"
        raise ConfigError(f"{attribute.name}: {hide_passwords(value)!r} ends in /v2: give the API node's base URL (fn-core adds /v2/...), e.g. http://fn-api:8080")


def _header_value(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if any(not (" " <= c <= "~") for c in value) or value != value.strip():  # a newline would end the header early
        raise ConfigError(f"{attribute.name} must be one line of printable ASCII with no leading or trailing space")


_HOST_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")


def is_host_port(address: object) -> bool:
    """A runner address: ``host:port`` with a port in 1..65535, the host a name, an IPv4 address or [an IPv6 one]."""
    if not isinstance(address, str):
        return False
    host, sep, port = address.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) <= 65535):
        return False
    if host.startswith("[") and host.endswith("]"):
        address6, _, zone = host[1:-1].partition("%")
        return bool(address6) and set(address6) <= _IPV6_CHARS and set(zone) <= _HOST_NAME_CHARS
    # "a:1;b:2" or "a:1 b:2" is two addresses run together, not a host name
    return set(host) <= _HOST_NAME_CHARS


def _addresses(_: object, attribute: attrs.Attribute[list[str]], value: list[str]) -> None:
    for address in value:
        if not is_host_port(address):
            host = address.rpartition(":")[0]
            # Go's dialler, and so Fn's, wants an IPv6 address in brackets too
            hint = f" (an IPv6 address goes in brackets: [{host}]:port)" if ":" in host and set(host) <= _IPV6_CHARS else ""
            raise ConfigError(f"{attribute.name}: {address!r} is not host:port{hint}")


# RFC 9110 token characters: what an HTTP header name may be made of
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_header_name(name: str) -> bool:
    return bool(name) and all(c in _TOKEN_CHARS for c in name)


def _header_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not _is_header_name(value):
        raise ConfigError(f"{attribute.name}: {value!r} is not an HTTP header name")


def _header_names(_: object, attribute: attrs.Attribute[list[str]], value: list[str]) -> None:
    for name in value:
        if not _is_header_name(name):
            raise ConfigError(f"{attribute.name}: {name!r} is not an HTTP header name")


def _is_origin(origin: str) -> bool:
    """scheme://host[:port], as browsers send it in Origin: no path, not even a trailing slash."""
    scheme, sep, host = origin.partition("://")
    return bool(
        sep and scheme[:1].isalpha() and all(c.isalnum() or c in "+.-" for c in scheme)
        and host and host.isprintable() and not any(c in "/?#* " for c in host)
    )


def _origins(_: object, attribute: attrs.Attribute[list[str]], value: list[str]) -> None:
    if "*" in value and len(value) > 1:
        raise ConfigError(f"{attribute.name}: * (any origin) must be the only entry, got {','.join(value)}")
    for origin in value:
        if origin != "*" and not _is_origin(origin):
            raise ConfigError(
                f"{attribute.name}: {origin!r} is not an origin: scheme://host[:port] with no path, e.g. https://ui.example.com, or *"
            )


@attrs.frozen
class Config:
    # --- every server ---------------------------------------------------------------------
    host: str = setting("0.0.0.0", "FN_HOST", "address the HTTP and gRPC servers bind")
    port: int = setting(8080, "FN_PORT", "HTTP port: the API/LB (serve, lb, api); a runner's /, /version, /metrics and /debug/stacks",
                        validator=_port)
    grpc_port: int = setting(9190, "FN_GRPC_PORT", "gRPC port of the runner (runner)", validator=_port)
    log_level: str = setting(
        "info", "FN_LOG_LEVEL", "debug, info, warning (or warn) or error, in any case (Fn's docs say DEBUG; Fn's trace is debug here, its fatal "
        "and panic error): the level of "
        "fn-core's own lines and its plugins'; libraries log at info and up (or this level, when higher)",
        converter=log_level_name, validator=_one_of(*LOG_LEVELS),
    )
    log_format: str = setting("text", "FN_LOG_FORMAT", "text or json (one JSON object per line, for log collectors)", validator=_one_of("text", "json"))
    log_dest: str = setting(
        "stderr", "FN_LOG_DEST", "where log lines go: stderr, file:///path, or syslog at udp://host:port or tcp://host:port",
        validator=_log_dest,
    )
    log_prefix: str = setting("", "FN_LOG_PREFIX", "syslog tag of the log lines ('' = fn-core)")
    disable_plugins: list[str] = setting([], "FN_DISABLE_PLUGINS", "plugin names not to load (comma list)")
    strict: bool = setting(False, "FN_STRICT_CONFIG", "unknown config file keys, `[plugins.<name>]` tables no plugin has, plugins that fail to import and FN_* variables "
                           "spelled nearly as one fn-core reads (FN_PLACR) are errors, not warnings")
    node_type: str = setting(
        "", "FN_NODE_TYPE", "the node `fn-core start` runs: full (serve), api, lb or pure-runner (runner); "
        "the other commands refuse to start as another node", validator=_node_type,
    )

    # --- LB and API -----------------------------------------------------------------------
    placer: str = setting("ch", "FN_PLACER", "placement strategy, by name (`fn-core plugins` lists them)", validator=_name)
    runner_addresses: list[str] = setting(
        [], "FN_RUNNER_ADDRESSES", "runners of the static pool, host:port (comma list)", validator=_addresses
    )
    runner_pool: str = setting(
        "static", "FN_RUNNER_POOL", "source of the runner list, by name (static = runner_addresses)", validator=_name
    )
    runner_pool_refresh_ms: int = setting(
        1000, "FN_RUNNER_POOL_REFRESH_MSECS", "how often a changing runner pool is asked again (ms)", validator=_positive
    )
    db_url: str = setting("", "FN_DB_URL", "store: sqlite3:///path/fn.db (default ./data/fn.db)")
    runner_api_url: str = setting(
        "", "FN_RUNNER_API_URL", "LB: read apps and fns from this API node (fn-core api) instead of a db_url store", validator=_api_node_url
    )
    # a secret: kept out of repr, and its errors never quote it
    runner_api_authorization: str = setting(
        "", "FN_RUNNER_API_AUTHORIZATION", "LB: Authorization header sent to the API node, e.g. 'Bearer <token>' ('' = none)",
        validator=_header_value, repr=False,
    )
    public_lb_url: str = setting("", "FN_PUBLIC_LB_URL", "base URL of the fns' invokeEndpoint and the triggers' httpEndpoint annotations ('' = the request's)")
    api_cors_origins: list[str] = setting(
        [], "FN_API_CORS_ORIGINS", "CORS on every route: browser origins allowed, * = any; none = CORS off (comma list)", validator=_origins
    )
    api_cors_headers: list[str] = setting(
        [], "FN_API_CORS_HEADERS", "CORS: request headers allowed besides Origin, Content-Length, Content-Type (comma list)",
        validator=_header_names,
    )
    rid_header: str = setting(
        "", "FN_RID_HEADER", "request id header: the request's value, or a new id, sent back in it ('' = none)", validator=_header_name
    )
    zipkin_url: str = setting(
        "", "FN_ZIPKIN_URL", "send each call's spans (LB and runner) to this Zipkin v2 endpoint, e.g. http://zipkin:9411/api/v2/spans ('' = none)",
        validator=_http_url,
    )
    jaeger_url: str = setting(
        "", "FN_JAEGER_URL",
        "send each call's spans to this Jaeger collector (Thrift over HTTP): its address, as Fn's, e.g. http://jaeger:14268 "
        "(spans go to its /api/traces), or a URL ending in /api/traces ('' = none)",
        validator=_http_url,
    )
    process_collector_list: str = setting(
        "dockerd docker-containerd", "FN_PROCESS_COLLECTOR_LIST",
        "commands whose CPU, memory and fds /metrics shows as <command>_process_*, beside the node's fn_process_* (space list; '' = none)",
    )
    max_request_size: int = setting(
        0, "FN_MAX_REQUEST_SIZE", "request body limit in bytes, 0 = none (413); runners apply it to the bodies sent to them too",
        validator=_non_negative,
    )
    max_request_header_size: int = setting(
        0, "FN_MAX_REQUEST_HEADER_SIZE", "bytes the whole request head may have (431, and the connection is closed); 0 = Go's 1 MiB",
        validator=_non_negative,
    )
    request_header_read_timeout_s: Duration = setting(
        0.0, "FN_REQUEST_HEADER_READ_TIMEOUT",
        "limit on reading a request head (s, or Go's 1m30s, 500ms; 408, and the connection is closed); 0 = FN_REQUEST_BODY_READ_TIMEOUT's, as Go",
        validator=_non_negative,
    )
    response_write_timeout_s: Duration = setting(
        0.0, "FN_RESPONSE_WRITE_TIMEOUT",
        "limit from the end of a request's head to the end of its response (s, or Go's 1m30s); 0 = none (the connection is cut)",
        validator=_non_negative,
    )
    http_idle_timeout_s: Duration = setting(
        0.0, "FN_HTTP_IDLE_TIMEOUT",
        "close a keep-alive connection idle this long (s, or Go's 1m30s, 500ms); 0 = 75 s (not Fn's none, so idle sockets don't pile up)",
        validator=_non_negative,
    )
    request_body_read_timeout_s: Duration = setting(
        0.0, "FN_REQUEST_BODY_READ_TIMEOUT",
        "limit on reading a request body (s, or Go's 1m30s, 500ms); 0 = none (408, and the connection is closed)",
        validator=_non_negative,
    )
    shutdown_grace_s: Duration = setting(
        30.0, "FN_SHUTDOWN_GRACE",
        "on SIGTERM/SIGINT, how long the calls under way may finish before they are cut (s, or Go's 1m30s); cutting them and "
        "exiting take about a second more (set the orchestrator's own grace, e.g. Kubernetes' terminationGracePeriodSeconds, a few s longer)",
        validator=_non_negative,
    )
    placer_timeout_s: float = setting(360.0, "FN_PLACER_TIMEOUT", "how long a call may wait for a runner (s)", validator=_positive)
    retry_all_delay_ms: int = setting(10, "FN_RETRY_ALL_DELAY_MSECS", "pause after every runner refused a call (ms)", validator=_non_negative)
    detached_placer_timeout_s: float = setting(
        30.0, "FN_DETACHED_PLACER_TIMEOUT", "how long a detached call may wait for a runner (s; then 503)", validator=_positive
    )
    execution_headroom_msecs: int = setting(
        360000, "FN_EXECUTION_HEADROOM",
        "a detached call's stream ends at most FN_DETACHED_PLACER_TIMEOUT + the fn's timeout + this long (ms) after it "
        'came in (then 500 "Unable to service the request", as Fn)',
        validator=_non_negative,
    )
    status_poll_ms: int = setting(
        500, "FN_RUNNER_STATUS_POLL_MSECS", "runner Status poll period, for placers that want it (ms)", validator=_positive
    )
    node_cert: str = setting("", "FN_NODE_CERT", "mTLS between LB and runners: this node's certificate (PEM); a runner needs it and FN_NODE_CERT_AUTHORITY, or neither")
    node_cert_key: str = setting("", "FN_NODE_CERT_KEY", "mTLS: this node's private key (PEM; unset: it is in FN_NODE_CERT's file); unencrypted")
    node_cert_authority: str = setting("", "FN_NODE_CERT_AUTHORITY", "mTLS: the CA that signs the peers' certificates (PEM); on an LB alone: TLS to runners without a client certificate")
    node_cert_server_name: str = setting(
        "", "FN_NODE_CERT_SERVER_NAME", "LB: the name runners' certificates must be for ('' = each runner's host as addressed); "
        "Fn's LB checks them all for 127.0.0.1, so an Fn runner's certificate is made for that"
    )

    # --- runner ---------------------------------------------------------------------------
    driver: str = setting("docker", "FN_DRIVER", "container driver, by name", validator=_name)
    grpc_keepalive_s: Duration = setting(
        60.0, "FN_GRPC_KEEPALIVE",
        "runner: PING an LB connection that sent nothing for this long (s, or Go's 1m); unanswered within 20 s (or this "
        "long, when shorter), the LB is gone (host down, network cut): the connection is dropped and its calls end as if "
        "it hung up. 0 = never",
        validator=_non_negative,
    )
    max_response_size: int = setting(0, "FN_MAX_RESPONSE_SIZE", "function response limit in bytes, 0 = none (502)", validator=_non_negative)
    max_hdr_response_size: int = setting(
        0, "FN_MAX_HDR_RESPONSE_SIZE", "bytes the whole function response head (status line and headers) may have, held in memory while read "
        "(502); 0 = 1 MiB (Fn's 0: Go's 10 MiB)",
        validator=_non_negative,
    )
    max_total_memory_bytes: int = setting(0, "FN_MAX_TOTAL_MEMORY_BYTES", "memory budget for containers, 0 = from the machine", validator=_non_negative)
    max_total_cpu_mcpus: int = setting(0, "FN_MAX_TOTAL_CPU_MCPUS", "CPU budget in milli-CPUs, 0 = from the machine", validator=_non_negative)
    enable_nb_resource_tracker: bool = setting(False, "FN_ENABLE_NB_RESOURCE_TRACKER", "when full, refuse (NACK 503) instead of waiting")
    evict_min_idle_msecs: int = setting(
        1000, "FN_EVICT_MIN_IDLE_MSECS", "NB mode: evict only containers idle this long, else NACK (0 = any idle one)",
        validator=_non_negative,
    )
    max_calls_per_container: int = setting(
        0, "FN_MAX_CALLS_PER_CONTAINER", "retire a hot container after this many calls, to contain leaks (0 = no limit); "
        "an fn's annotation `fn-core/max-calls-per-container` overrides it",
        validator=_non_negative,
    )
    freeze_idle_msecs: int = setting(
        -1, "FN_FREEZE_IDLE_MSECS", "pause idle containers after this many ms; negative = never (default: unpause costs ~35 ms)"
    )
    max_log_size_bytes: int = setting(
        1024 * 1024, "FN_MAX_LOG_SIZE_BYTES", "serve: bytes of a call's stdout/stderr logged at debug, the rest dropped (0 = no limit)",
        validator=_non_negative,
    )
    disable_debug_user_logs: bool = setting(
        False, "FN_DISABLE_DEBUG_USER_LOGS", "serve: do not log functions' stdout/stderr at debug"
    )
    hot_start_timeout_msecs: int = setting(5000, "FN_HOT_START_TIMEOUT_MSECS", "container start -> socket ready limit (504); an fn's annotation `fn-core/start-timeout-msecs` overrides it", validator=_positive)
    hot_pull_timeout_msecs: int = setting(600000, "FN_HOT_PULL_TIMEOUT_MSECS", "image pull limit (504)", validator=_positive)
    container_label_tag: str = setting(
        "", "FN_CONTAINER_LABEL_TAG",
        "label value marking our containers and socket dirs; when set, a starting runner removes all that carry it (as Fn), "
        "a live runner's with the same tag too: one tag per runner of a host. '' = labelled 'fn-core', nothing removed",
    )
    iofs_path: str = setting(
        DEFAULT_IOFS_PATH, "FN_IOFS_PATH", "host dir for per-container socket dirs (keep it short; '' = this default, as Fn's '' is "
        "the temp dir)", converter=lambda path: path or DEFAULT_IOFS_PATH,
    )
    iofs_tmpfs: bool = setting(
        False, "FN_IOFS_TMPFS", "mount a tmpfs (noexec, nosuid, nodev) on each container's socket dir; needs root"
    )
    iofs_opts: str = setting("", "FN_IOFS_OPTS", "mount options of those tmpfs, e.g. size=1m,nr_inodes=64 ('' = the kernel's)")
    iofs_docker_path: str = setting(
        "", "FN_IOFS_DOCKER_PATH", "iofs_path as the Docker engine sees it, for a runner in a container ('' = the same)"
    )
    max_pids: int = setting(50, "FN_MAX_PIDS", "pids limit per container; 0 = the engine's default", validator=_non_negative)
    max_open_files: int = setting(350, "FN_MAX_OPEN_FILES", "nofile ulimit per container; 0 = the engine's default", validator=_non_negative)
    max_locked_memory: int = setting(65536, "FN_MAX_LOCKED_MEMORY", "memlock ulimit per container (bytes); 0 = the engine's default", validator=_non_negative)
    max_pending_signals: int = setting(5000, "FN_MAX_PENDING_SIGNALS", "sigpending ulimit per container; 0 = the engine's default", validator=_non_negative)
    max_message_queue: int = setting(819200, "FN_MAX_MESSAGE_QUEUE", "msgqueue ulimit per container (bytes); 0 = the engine's default", validator=_non_negative)
    max_fs_size_mb: int = setting(0, "FN_MAX_FS_SIZE_MB", "container storage size limit, 0 = none; start-up stops when the engine's storage cannot limit it", validator=_non_negative)
    max_tmpfs_inodes: int = setting(0, "FN_MAX_TMPFS_INODES", "nr_inodes of the /tmp tmpfs, 0 = default", validator=_non_negative)
    disable_readonly_rootfs: bool = setting(False, "FN_DISABLE_READONLY_ROOTFS", "give containers a writable root fs")
    disable_unprivileged_containers: bool = setting(
        False, "FN_DISABLE_UNPRIVILEGED_CONTAINERS", "skip user 1000, cap drop and no-new-privileges"
    )
    docker_networks: Words = setting([], "FN_DOCKER_NETWORKS", "networks for containers, the one holding fewest of ours is picked (space or comma list); each must exist at start-up")
    prefork_pool_size: int = setting(
        0, "FN_EXPERIMENTAL_PREFORK_POOL_SIZE",
        "idle donor containers whose network namespaces new hot containers join: faster cold starts (0 = none)", validator=_non_negative,
    )
    prefork_image: str = setting("busybox", "FN_EXPERIMENTAL_PREFORK_IMAGE", "image of the donors (on the engine, or pullable)")
    prefork_cmd: str = setting(
        "tail -f /dev/null", "FN_EXPERIMENTAL_PREFORK_CMD", "what a donor runs: anything that waits for ever", validator=_command
    )
    prefork_use_once: bool = setting(False, "FN_EXPERIMENTAL_PREFORK_USE_ONCE", "a donor serves one container, then is replaced")
    prefork_networks: Words = setting([], "FN_EXPERIMENTAL_PREFORK_NETWORKS", "networks of the donors (space or comma list; '' = Docker's default)")
    image_enable_volume: bool = setting(False, "FN_IMAGE_ENABLE_VOLUME", "run images that declare a VOLUME (else 400)")
    image_clean_max_size: int = setting(
        0, "FN_IMAGE_CLEAN_MAX_SIZE", "keep the images this runner ran under this many bytes, removing unused ones (0 = keep all)",
        validator=_non_negative,
    )
    image_clean_exempt_tags: Words = setting(
        [], "FN_IMAGE_CLEAN_EXEMPT_TAGS", "images (name:tag) the cleaner never removes (space or comma list)"
    )
    docker_load_file: str = setting("", "FN_DOCKER_LOAD_FILE", "image tarball (`docker save`) the runner loads at start ('' = none)")
    # a secret: kept out of repr, and its errors never quote it
    docker_auth: str = setting(
        "", "FN_DOCKER_AUTH", "registry credentials, docker config.json JSON ({\"auths\": ...}) ('' = ~/.docker/config.json)",
        validator=_json_object, repr=False,
    )
    status_image: str = setting("", "FN_STATUS_IMAGE", "image Status runs as a health check ('' = none); fns may not use it")

    # --- plugins' own settings: [plugins.<name>] tables of the config file ----------------
    plugins: dict[str, dict[str, Any]] = setting({}, None, "per-plugin settings tables")

    # not a setting: what `load_config` ignored, logged by the caller once the log destination is set up
    load_warnings: tuple[str, ...] = attrs.field(default=(), eq=False, repr=False)

    def plugin_settings(self, name: str, known: Iterable[str] | None = None) -> dict[str, Any]:
        """The ``[plugins.<name>]`` table of the config file (a copy; empty when absent). ``known``: the keys the
        plugin reads; any other key (a typo, which would otherwise leave a setting at its default unsaid) stops
        start-up with a `ConfigError` naming it and the closest known key."""
        table = dict(self.plugins.get(name, {}))
        if known is not None:
            known = sorted(known)
            unknown = sorted(set(table) - set(known))
            if unknown:
                close = [m for key in unknown for m in difflib.get_close_matches(key, known, n=1, cutoff=0.7)]
                hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
                raise ConfigError(f"[plugins.{name}]: unknown keys {unknown}; known: {known}{hint}")
        return table

    @property
    def db_path(self) -> str:
        """Filesystem path of the SQLite store named by `db_url`."""
        url = self.db_url or f"sqlite3://{os.path.abspath('data/fn.db')}"
        for prefix in ("sqlite3://", "sqlite://"):
            if url.startswith(prefix):
                return url[len(prefix) :]
        raise ConfigError(f"db_url {url!r} is not supported: use sqlite3:///path/to/fn.db")


_NUMERIC = ("int", "float", "Duration")


def fields_by_env() -> dict[str, attrs.Attribute[Any]]:
    return {f.metadata["env"]: f for f in attrs.fields(Config) if f.metadata.get("env")}


def _coerce(field: attrs.Attribute[Any], value: Any, source: str) -> Any:
    """Turn a value from a file, the environment or a flag into the field's type."""
    kind = str(field.type)
    where = f"{field.name} (from {source})"
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on", "y", "t"):
                return True
            if text in ("0", "false", "no", "off", "n", "f", ""):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError  # 8000.5 is no port: refused, not cut to 8000
            return int(value)
        if kind == "float":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError  # nan would make every comparison false: a timeout that never ends
            return number
        if kind == "Duration":
            return parse_duration(value)
        if kind == "str":
            if not isinstance(value, (str, int, float)):
                raise ValueError
            return str(value)
        if kind in ("list[str]", "Words"):
            if isinstance(value, str):
                if kind == "Words":
                    return value.replace(",", " ").split()
                return [part.strip() for part in value.split(",") if part.strip()]
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ValueError
        if kind.startswith("dict"):
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
                raise ValueError
            return {k: dict(v) for k, v in value.items()}
    except (TypeError, ValueError):
        shown = repr(value) if field.repr else "the value"  # secrets are not echoed
        what = "duration: seconds (30, 2.5) or Go's 1m30s, 500ms" if kind == "Duration" else kind
        if kind == "Duration" and str(value).strip().startswith("-"):
            raise ConfigError(f"{where}: {shown} must not be negative (a {what})") from None
        raise ConfigError(f"{where}: {shown} is not a valid {what}") from None
    raise ConfigError(f"{where}: unsupported type {kind}")


def _naming_source(message: str, sources: Mapping[str, str]) -> str:
    """A validator's message (it starts with the setting's name) with where the value came from, as `_coerce`
    says it: ``max_pids (from $FN_MAX_PIDS) must not be negative, got -5``."""
    name, separator, rest = message.partition(" ")
    colon = name.endswith(":")
    name = name.removesuffix(":")
    if name not in sources or not separator:
        return message
    return f"{name} (from {sources[name]}){':' if colon else ''} {rest}"


def load_config(
    file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the `Config`: defaults < TOML file < ``FN_*`` environment < ``overrides`` (flags).

    ``overrides`` maps field names to values; None values are ignored (flags not given).
    Raises `ConfigError` with a message naming the bad key, its source and the problem. An unknown file key or
    a misspelled-looking FN_* variable outside strict mode, and an Fn variable without effect, is a line of
    ``load_warnings``: this runs before logging is set up, so the caller logs it.
    """
    env = os.environ if env is None else env
    fields = {f.name: f for f in attrs.fields(Config) if "help" in f.metadata}  # the settings
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # where each value came from, for an error that names it
    warnings: list[str] = []
    refused: list[str] = []  # under FN_STRICT_CONFIG: every such problem is said at once, not one per start
    flags = {key for key, value in (overrides or {}).items() if value is not None}

    file = file or env.get("FN_CONFIG") or None
    if file:
        path = Path(file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except OSError as exc:  # a directory, no permission, ...
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text, as TOML must be: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        # the environment outranks the file here too
        strict = _coerce(fields["strict"], env.get("FN_STRICT_CONFIG", data.get("strict", False)), str(path))
        for key, value in data.items():
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1, cutoff=0.7)
                hint = f"did you mean {close[0]!r}?" if close else f"the keys: {', '.join(sorted(fields))}"
                message = f"config file {path}: unknown key {key!r}: {hint}"
                if strict:
                    refused.append(message)
                else:
                    warnings.append(f"{message}; ignored")
                continue
            variable = fields[key].metadata["env"]
            if key in flags or (variable and env.get(variable, "").strip()):
                continue  # a higher source replaces it: not read (nor refused), as a variable a flag replaces
            values[key] = _coerce(fields[key], value, str(path))
            sources[key] = str(path)

    for name, field in fields_by_env().items():
        if name in env and field.name not in flags:  # a flag outranks it: the variable is not read (nor refused)
            if not env[name].strip() and str(field.type) in _NUMERIC:
                continue  # FN_MAX_PIDS= is unset, as Fn reads an empty variable; a number can't be empty
            values[field.name] = _coerce(field, env[name], f"${name}")
            sources[field.name] = f"${name}"
    for line in misspelled_variables(env):
        if values.get("strict", False):
            refused.append(line)
        else:
            warnings.append(line)
    if refused:
        raise ConfigError("\n  ".join(refused) if len(refused) == 1 else f"{len(refused)} problems (FN_STRICT_CONFIG):\n  "
                          + "\n  ".join(refused))
    warnings += variables_without_effect(env)  # Fn's, set but read nowhere here: said, never an error

    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in fields:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(fields[key], value, "the command line")
        sources[key] = "the command line"

    try:
        return Config(**values, load_warnings=tuple(warnings))
    except ConfigError as exc:
        raise ConfigError(_naming_source(str(exc), sources)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
