"""Fn's v2 model validation: JSON -> App/Fn/Trigger with Fn's defaults, limits and messages.

Create and update share the checks; updates merge like Fn (`config` keys with "" are removed,
annotations merged the same way, zero limits and an empty image mean "unchanged").
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

import attrs

from fn_core.errors import APIError, BadRequest, Conflict
from fn_core.models import (
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_S,
    FN_SETTINGS,
    MAX_IDLE_TIMEOUT_S,
    MAX_MEMORY_MB,
    MAX_TIMEOUT_S,
    App,
    Fn,
    Trigger,
)

MAX_NAME = 255  # bytes of UTF-8, as Go's len() counts (api/models/error.go MaxLength*Name)
# What Go's url.PathEscape leaves as it is (Fn's fn name rule): the unreserved characters and the
# reserved ones a path segment may hold. fullmatch: `$` would let a trailing newline through.
FN_NAME = re.compile(r"[A-Za-z0-9_.~$&+:=@-]+")
SHAPES = ("", "GENERIC_X86", "GENERIC_ARM", "GENERIC_X86_ARM")
SYSLOG_SCHEMES = ("tcp", "udp", "unix", "unixgram", "tcp+tls")
TRIGGER_TYPES = ("http",)
# Fn's annotation limits and rules (api/models/annotations.go)
MAX_ANNOTATION_KEYS = 100
MAX_ANNOTATION_KEY_BYTES = 128
MAX_ANNOTATION_VALUE_BYTES = 512
ANNOTATION_KEY = re.compile(r"[!-~]+")  # printable ASCII, no whitespace; fullmatch, as Go's `^...$`

# A config entry is the container's environment variable KEY=value (not Fn's rule: Fn stores what exec(2) or the
# engine then refuses at each call, and an LB copies every byte into each call it sends)
MAX_CONFIG_ENTRY_BYTES = 128 * 1024 - 1  # Linux's MAX_ARG_STRLEN, for "KEY=value" and its NUL
MAX_CONFIG_BYTES = 512 * 1024  # an app's or an fn's; both together stay within ARG_MAX (2 MiB at the least)

# Fn's integer fields: memory is a uint64, the timeouts int32s; a number outside is Go's unmarshal error
UINT64 = (0, 2**64 - 1)
INT32 = (-(2**31), 2**31 - 1)

INVALID_JSON = "Invalid JSON"
#: fields every object has that no body sets (the store does), which Go's decoder still reads as strings
_SET_BY_STORE = ("created_at", "updated_at")


def bad(message: str) -> APIError:
    return BadRequest(message)


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (and Go's decoder) has no such values, and a stored one
    # would make every later listing unreadable to a strict client
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # 1e400 is read as inf without parse_constant's say: Go's decoder refuses a number out of float64's range
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deeper than Python's stack
        raise bad(INVALID_JSON) from None
    if not isinstance(data, dict):
        raise bad(INVALID_JSON)
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except RecursionError:
        raise bad(INVALID_JSON) from None
    except UnicodeEncodeError:
        # a \u escape of one half of a UTF-16 pair is no character: no UTF-8 holds it (SQLite, the container's
        # environment and the slot key's hash refuse it); Go's decoder quietly makes it U+FFFD, not what was sent
        raise bad(f"{INVALID_JSON}: a string holds a lone UTF-16 surrogate (a \\u escape in D800-DFFF)") from None
    for key in _SET_BY_STORE:
        _str(data, key)
    return data


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad(INVALID_JSON)  # Go's unmarshal type error
    return value


def _int(data: dict[str, Any], key: str, bounds: tuple[int, int]) -> int:
    """An integer field of Go type ``bounds`` (`UINT64`, `INT32`): anything else does not unmarshal."""
    value = data.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise bad(INVALID_JSON)
    return value


def _config(data: dict[str, Any]) -> dict[str, str]:
    value = data.get("config")
    if value is None:
        return {}
    # only an object of strings unmarshals into Go's map[string]string: [], false, "" do not
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad(INVALID_JSON)
    return dict(value)


def _annotations(data: dict[str, Any]) -> dict[str, Any]:
    value = data.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(INVALID_JSON)
    return dict(value)


def check_config(config: dict[str, str]) -> None:
    """What a container's environment can take: a key is a variable's name (not empty, no ``=``, no NUL), a value has
    no NUL, and each ``KEY=value`` and the whole are within exec(2)'s bounds (`MAX_CONFIG_ENTRY_BYTES`,
    `MAX_CONFIG_BYTES`)."""
    total = 0
    for key, value in config.items():
        if not key or "=" in key or "\0" in key:
            raise bad(f"Invalid config key {key!r}: a config key is an environment variable's name (not empty, no '=' or NUL)")
        if "\0" in value:
            raise bad(f"Invalid config value of {key!r}: an environment variable's value has no NUL")
        size = _name_bytes(key) + 1 + _name_bytes(value)
        if size > MAX_CONFIG_ENTRY_BYTES:
            raise bad(f"Invalid config value of {key!r}: {size} bytes as KEY=value, an environment variable may have "
                      f"{MAX_CONFIG_ENTRY_BYTES}")
        total += size + 1
    if total > MAX_CONFIG_BYTES:
        raise bad(f"Invalid config: {total} bytes as environment variables, at most {MAX_CONFIG_BYTES}")


def _empty_annotation(value: Any) -> bool:
    """Fn's empty annotation value: JSON "" or null (an empty object or array is a value); on update it deletes."""
    return value is None or (isinstance(value, str) and value == "")


def check_annotations(annotations: dict[str, Any]) -> None:
    """Fn's `Annotations.Validate`: each key and value, then the number of keys."""
    for key, value in annotations.items():
        if not ANNOTATION_KEY.fullmatch(key):
            raise bad("Invalid annotation key, annotation keys must be non-empty ascii strings excluding whitespace")
        if len(key) > MAX_ANNOTATION_KEY_BYTES:  # ASCII by now: characters are bytes
            raise bad(f"Invalid annotation key length, annotation keys may not be larger than {MAX_ANNOTATION_KEY_BYTES} bytes")
        if _empty_annotation(value):
            raise bad("Invalid annotation value, annotation values may only be non-empty strings, numbers, objects, or arrays")
        # Fn measures the compacted JSON the client sent: UTF-8 as it came, not \u escapes
        raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        if len(raw.encode("utf-8", "surrogatepass")) > MAX_ANNOTATION_VALUE_BYTES:
            raise bad(
                "Invalid annotation value length, annotation values may not be larger than "
                f"{MAX_ANNOTATION_VALUE_BYTES} bytes when serialized as JSON"
            )
    if len(annotations) > MAX_ANNOTATION_KEYS:
        raise bad(
            "Invalid annotation change, new key(s) exceed maximum permitted number of annotations keys "
            f"({MAX_ANNOTATION_KEYS})"
        )


def _check_fn_settings(annotations: dict[str, Any]) -> None:
    """The runner settings an app or fn may give itself as annotations (`fn_core.models.FnSetting`)."""
    for setting in FN_SETTINGS:
        try:
            setting.of(annotations, 0)
        except ValueError as exc:
            raise bad(str(exc)) from None


def merge_map(old: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """Fn's update merge: set new keys, a key with an empty value is removed."""
    merged = dict(old)
    for key, value in change.items():
        if _empty_annotation(value):
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _name_bytes(name: str) -> int:
    return len(name.encode("utf-8", "surrogatepass"))  # Go's len(): bytes


def _letters_digits_dash(name: str) -> bool:
    """Fn's app and trigger name rule: each character a Unicode letter or number (Go's unicode.IsLetter,
    unicode.IsNumber: categories L* and N*), ``_`` or ``-``."""
    return all(c in "_-" or unicodedata.category(c)[0] in "LN" for c in name)


# --- apps --------------------------------------------------------------------------------
def _check_app(app: App) -> None:
    """Fn's `App.Validate` (api/models/app.go), in its order: name, annotations, syslog url, shape; then the config."""
    if not app.name:
        raise bad("Missing Name")  # Fn's ErrMissingName (its ErrAppsMissingName is not used here)
    if _name_bytes(app.name) > MAX_NAME:
        raise bad(f"App name must be {MAX_NAME} characters or less")
    if not _letters_digits_dash(app.name):
        raise bad("Invalid app name")
    check_annotations(app.annotations)
    _check_fn_settings(app.annotations)
    if app.syslog_url:
        for url in app.syslog_url.split(","):
            scheme, sep, rest = url.strip().partition("://")
            if not sep or scheme not in SYSLOG_SCHEMES or not rest:
                raise bad(f"Invalid syslog url: {url.strip()!r} (schemes: {', '.join(SYSLOG_SCHEMES)})")
    if app.shape not in SHAPES:
        raise bad("Invalid app shape")
    check_config(app.config)


def app_for_create(data: dict[str, Any]) -> App:
    if data.get("id"):
        raise bad("App ID cannot be supplied on create")
    app = App(
        name=_str(data, "name"),
        config=_config(data),
        annotations=_annotations(data),
        syslog_url=_str(data, "syslog_url"),
        shape=_str(data, "shape"),
    )
    app.config = merge_map({}, app.config)
    _check_app(app)
    return app


def app_for_update(old: App, data: dict[str, Any]) -> App:
    """Fn's app update: a ``shape`` is neither changed nor checked (Fn's `App.Update` and its UPDATE leave it out)."""
    if data.get("id") and data["id"] != old.id:
        raise bad("App ID in path does not match ID in body")
    name = _str(data, "name")
    if name and name != old.name:
        raise Conflict("Could not update - name is immutable")
    _str(data, "shape")  # not changed, but a body whose shape is no string does not unmarshal
    app = attrs.evolve(
        old,
        config=merge_map(old.config, _config(data)),
        annotations=merge_map(old.annotations, _annotations(data)),
        syslog_url=_str(data, "syslog_url") if "syslog_url" in data else old.syslog_url,
    )
    _check_app(app)
    return app


# --- fns ---------------------------------------------------------------------------------
MISSING_FN_NAME = "Missing Fn name"
MISSING_FN_APP_ID = "Missing AppID on Fn"


def _check_fn(fn: Fn) -> None:
    """Fn's `Fn.Validate` (api/models/fn.go), in its order; then the config."""
    if not fn.name:
        raise bad(MISSING_FN_NAME)
    if _name_bytes(fn.name) > MAX_NAME:
        raise bad(f"Fn name must be {MAX_NAME} characters or less")
    if not FN_NAME.fullmatch(fn.name):
        raise bad("name must be a valid string")
    if not fn.app_id:
        raise bad(MISSING_FN_APP_ID)
    if not fn.image:
        raise bad("Missing image on Fn")
    if not 1 <= fn.timeout <= MAX_TIMEOUT_S:
        raise bad(f"timeout value is out of range, must be between 0 and {MAX_TIMEOUT_S}")
    if not 1 <= fn.idle_timeout <= MAX_IDLE_TIMEOUT_S:
        raise bad(f"idle_timeout value is out of range, must be between 0 and {MAX_IDLE_TIMEOUT_S}")
    if not 1 <= fn.memory <= MAX_MEMORY_MB:
        raise bad(f"memory value is out of range. It should be between 0 and {MAX_MEMORY_MB}")
    check_annotations(fn.annotations)
    _check_fn_settings(fn.annotations)
    if fn.shape not in SHAPES:
        raise bad(f"Invalid fn shape {fn.shape!r}")
    check_config(fn.config)


def _limits(data: dict[str, Any]) -> tuple[int, int, int]:
    """memory (a uint64: a negative one is not JSON to Fn), timeout and idle_timeout (int32s: a negative one
    reaches `_check_fn` and is out of range); 0 means the default on create, "unchanged" on update."""
    return _int(data, "memory", UINT64), _int(data, "timeout", INT32), _int(data, "idle_timeout", INT32)


def fn_for_create(data: dict[str, Any]) -> Fn:
    # Fn's datastore checks these three before `Fn.Validate` (api/datastore/internal/datastoreutil/validator.go)
    if data.get("id"):
        raise bad("ID cannot be provided for Fn creation")
    if not _str(data, "app_id"):
        raise bad(MISSING_FN_APP_ID)
    if not _str(data, "name"):
        raise bad(MISSING_FN_NAME)
    memory, timeout, idle = _limits(data)
    fn = Fn(
        name=_str(data, "name"),
        app_id=_str(data, "app_id"),
        image=_str(data, "image"),
        memory=memory or DEFAULT_MEMORY_MB,
        timeout=timeout or DEFAULT_TIMEOUT_S,
        idle_timeout=idle or DEFAULT_IDLE_TIMEOUT_S,
        config=merge_map({}, _config(data)),
        annotations=_annotations(data),
        shape=_str(data, "shape"),
    )
    _check_fn(fn)
    return fn


def fn_for_update(old: Fn, data: dict[str, Any]) -> Fn:
    if data.get("id") and data["id"] != old.id:
        raise bad("Fn ID in path does not match that in body")
    if data.get("app_id") and data["app_id"] != old.app_id:
        raise bad("AppID cannot be changed on an Fn")  # Fn: ErrFnsAppIDMismatch
    name = _str(data, "name")
    if name and name != old.name:
        raise bad("Fn names and IDs cannot be modified")  # Fn's ErrFnsInvalidFieldChange (its update keeps the name)
    _str(data, "shape")  # not changed (as an app's), but a body whose shape is no string does not unmarshal
    memory, timeout, idle = _limits(data)
    fn = attrs.evolve(
        old,
        image=_str(data, "image") or old.image,
        memory=memory or old.memory,
        timeout=timeout or old.timeout,
        idle_timeout=idle or old.idle_timeout,
        config=merge_map(old.config, _config(data)),
        annotations=merge_map(old.annotations, _annotations(data)),
    )
    _check_fn(fn)
    return fn


# --- triggers ----------------------------------------------------------------------------
def _check_trigger(t: Trigger) -> None:
    """Fn's `Trigger.Validate` (api/models/trigger.go), in its order."""
    if not t.app_id:
        raise bad("Missing App ID on Trigger")
    if not t.name:
        raise bad("Missing name on Trigger")
    if _name_bytes(t.name) > MAX_NAME:
        raise bad(f"Trigger name must be {MAX_NAME} characters or less")
    if not _letters_digits_dash(t.name):
        raise bad("Invalid name for Trigger")
    if not t.fn_id:
        raise bad("Missing Fn ID on Trigger")
    if t.type not in TRIGGER_TYPES:
        raise bad("Trigger Type Not Supported")
    if not t.source:
        raise bad("Missing Trigger Source")
    if not t.source.startswith("/"):
        raise bad("Missing Trigger Source Prefix '/'")
    check_annotations(t.annotations)


def trigger_for_create(data: dict[str, Any]) -> Trigger:
    if data.get("id"):
        raise bad("ID cannot be provided for Trigger creation")
    t = Trigger(
        name=_str(data, "name"),
        app_id=_str(data, "app_id"),
        fn_id=_str(data, "fn_id"),
        type=_str(data, "type"),
        source=_str(data, "source"),
        annotations=_annotations(data),
    )
    _check_trigger(t)
    return t


def trigger_for_update(old: Trigger, data: dict[str, Any]) -> Trigger:
    """Fn's trigger update: ``name``, ``source``, ``fn_id`` and annotations change (the store checks that a new
    fn is one of the trigger's app); a trigger does not move to another app nor change its type."""
    if data.get("id") and data["id"] != old.id:
        raise bad("ID in path does not match ID in body")
    for key in ("app_id", "type"):
        if data.get(key) and data[key] != getattr(old, key):
            raise bad(f"Trigger {key} cannot be changed")
    t = attrs.evolve(
        old,
        name=_str(data, "name") or old.name,
        fn_id=_str(data, "fn_id") or old.fn_id,
        source=_str(data, "source") or old.source,
        annotations=merge_map(old.annotations, _annotations(data)),
    )
    _check_trigger(t)
    return t
