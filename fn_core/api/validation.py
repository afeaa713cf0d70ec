"""Fn's v2 model validation: JSON -> App/Fn/Trigger with Fn's defaults, limits and messages.

Create and update share the checks; updates merge like Fn (`config` keys with "" are removed,
annotations merged the same way, zero limits and an empty image mean "unchanged").
"""

from __future__ import annotations

import json
import re
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

MAX_NAME = 255
APP_NAME = re.compile(r"[a-zA-Z0-9_-]+")  # fullmatch: `$` would let a trailing newline through
FN_NAME = re.compile(r"[a-zA-Z0-9_.~-]+")  # URL-path safe, as Fn asks
SHAPES = ("", "GENERIC_X86", "GENERIC_ARM", "GENERIC_X86_ARM")
SYSLOG_SCHEMES = ("tcp", "udp", "unix", "unixgram", "tcp+tls")
TRIGGER_TYPES = ("http",)
MAX_ANNOTATION_KEYS = 100
MAX_ANNOTATION_KEY_BYTES = 128
MAX_ANNOTATION_VALUE_BYTES = 512

INVALID_JSON = "Invalid JSON"


def bad(message: str) -> APIError:
    return BadRequest(message)


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (and Go's decoder) has no such values, and a stored one
    # would make every later listing unreadable to a strict client
    raise ValueError(f"{name} is not JSON")


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw, parse_constant=_no_constant) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise bad(INVALID_JSON) from None
    if not isinstance(data, dict):
        raise bad(INVALID_JSON)
    return data


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad(INVALID_JSON)  # Go's unmarshal type error
    return value


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(INVALID_JSON)
    return value


def _config(data: dict[str, Any]) -> dict[str, str]:
    value = data.get("config") or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad(INVALID_JSON)
    return dict(value)


def _annotations(data: dict[str, Any]) -> dict[str, Any]:
    value = data.get("annotations") or {}
    if not isinstance(value, dict):
        raise bad(INVALID_JSON)
    return dict(value)


def check_annotations(annotations: dict[str, Any]) -> None:
    if len(annotations) > MAX_ANNOTATION_KEYS:
        raise bad(f"Too many annotations, the maximum is {MAX_ANNOTATION_KEYS}")
    for key, value in annotations.items():
        if not key or len(key.encode()) > MAX_ANNOTATION_KEY_BYTES:
            raise bad(f"Invalid annotation key, annotation keys must be non-empty and at most {MAX_ANNOTATION_KEY_BYTES} bytes")
        raw = json.dumps(value, separators=(",", ":"))
        if value in ("", None, {}, []) or len(raw.encode()) > MAX_ANNOTATION_VALUE_BYTES:
            raise bad(f"Invalid annotation value, annotation values must be non-empty JSON of at most {MAX_ANNOTATION_VALUE_BYTES} bytes")


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
        if value in ("", None):
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# --- apps --------------------------------------------------------------------------------
def _check_app(app: App) -> None:
    if not app.name:
        raise bad("Missing app name")
    if len(app.name) > MAX_NAME:
        raise bad(f"App name must be {MAX_NAME} characters or less")
    if not APP_NAME.fullmatch(app.name):
        raise bad("App name may only contain characters from the set [a-zA-Z0-9_-]")
    if app.syslog_url:
        for url in app.syslog_url.split(","):
            scheme, sep, rest = url.strip().partition("://")
            if not sep or scheme not in SYSLOG_SCHEMES or not rest:
                raise bad(f"Invalid syslog url: {url.strip()!r} (schemes: {', '.join(SYSLOG_SCHEMES)})")
    if app.shape not in SHAPES:
        raise bad(f"Invalid app shape {app.shape!r}, must be one of {', '.join(s for s in SHAPES if s)}")
    check_annotations(app.annotations)
    _check_fn_settings(app.annotations)


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
    if data.get("id") and data["id"] != old.id:
        raise bad("App ID in path does not match ID in body")
    name = _str(data, "name")
    if name and name != old.name:
        raise Conflict("Could not update - name is immutable")
    app = attrs.evolve(
        old,
        config=merge_map(old.config, _config(data)),
        annotations=merge_map(old.annotations, _annotations(data)),
        syslog_url=_str(data, "syslog_url") if "syslog_url" in data else old.syslog_url,
    )
    _check_app(app)
    return app


# --- fns ---------------------------------------------------------------------------------
def _check_fn(fn: Fn) -> None:
    if not fn.name:
        raise bad("Missing name")
    if len(fn.name) > MAX_NAME:
        raise bad(f"Fn name must be {MAX_NAME} characters or less")
    if not FN_NAME.fullmatch(fn.name):
        raise bad("Fn name must be URL-path safe: letters, digits and _ . ~ -")
    if not fn.app_id:
        raise bad("Missing AppID on Fn")
    if not fn.image:
        raise bad("Missing image")
    if not 1 <= fn.memory <= MAX_MEMORY_MB:
        raise bad(f"memory value is out of range. It should be between 0 and {MAX_MEMORY_MB}")
    if not 1 <= fn.timeout <= MAX_TIMEOUT_S:
        raise bad(f"timeout value is out of range. Sync should be between 0 and {MAX_TIMEOUT_S}")
    if not 1 <= fn.idle_timeout <= MAX_IDLE_TIMEOUT_S:
        raise bad(f"idle_timeout value is out of range. It should be between 0 and {MAX_IDLE_TIMEOUT_S}")
    if fn.shape not in SHAPES:
        raise bad(f"Invalid fn shape {fn.shape!r}")
    check_annotations(fn.annotations)
    _check_fn_settings(fn.annotations)


def _limits(data: dict[str, Any]) -> tuple[int, int, int]:
    memory, timeout, idle = _int(data, "memory"), _int(data, "timeout"), _int(data, "idle_timeout")
    for key, value in (("memory", memory), ("timeout", timeout), ("idle_timeout", idle)):
        if value < 0:
            raise bad(f"{key} value is out of range")
    return memory, timeout, idle


def fn_for_create(data: dict[str, Any]) -> Fn:
    if data.get("id"):
        raise bad("ID cannot be provided for Fn creation")
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
        raise bad("Fn ID in path does not match ID in body")
    if data.get("app_id") and data["app_id"] != old.app_id:
        raise bad("AppID cannot be changed on an Fn")  # Fn: ErrFnsAppIDMismatch
    name = _str(data, "name")
    if name and name != old.name:
        raise bad("Fn names and IDs cannot be modified")  # Fn's ErrFnsInvalidFieldChange (its update keeps the name)
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
    if not t.name:
        raise bad("Missing name on trigger")
    if len(t.name) > MAX_NAME or not FN_NAME.fullmatch(t.name):
        raise bad("Trigger name must be URL-path safe and at most 255 characters")
    if not t.app_id:
        raise bad("Missing App ID on trigger")
    if not t.fn_id:
        raise bad("Missing Fn ID on trigger")
    if t.type not in TRIGGER_TYPES:
        raise bad("Trigger Type Not Supported")
    if not t.source:
        raise bad("Missing trigger Source")
    if not t.source.startswith("/"):
        raise bad("Missing trigger Source prefix '/'")
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
    if data.get("id") and data["id"] != old.id:
        raise bad("Trigger ID in path does not match ID in body")
    for key in ("app_id", "fn_id", "type"):
        if data.get(key) and data[key] != getattr(old, key):
            raise bad(f"Trigger {key} cannot be changed")
    t = attrs.evolve(
        old,
        name=_str(data, "name") or old.name,
        source=_str(data, "source") or old.source,
        annotations=merge_map(old.annotations, _annotations(data)),
    )
    _check_trigger(t)
    return t
