"""The platform's data model, with Fn's JSON field names.

`App`, `Fn` and `Trigger` are what the v2 API stores; `Call` is one invocation, built on the LB
from an fn and an HTTP request, changed by `override_call` plugins, and sent to a runner as the
JSON in `TryCall.models_call_json` (Fn's `models.Call`, so an Fn runner understands it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import re
import struct
import time
from collections.abc import Mapping
from typing import Any

import attrs

# Fn's model defaults and limits (api/models/fn.go).
DEFAULT_MEMORY_MB = 128
DEFAULT_TIMEOUT_S = 30
DEFAULT_IDLE_TIMEOUT_S = 30
MAX_MEMORY_MB = 8192
MAX_TIMEOUT_S = 300
MAX_IDLE_TIMEOUT_S = 3600

CALL_TYPE_SYNC = "sync"
CALL_TYPE_DETACHED = "detached"


@functools.lru_cache(maxsize=8)  # calls stamp the same few seconds (now, now + timeout) many times
def utc_seconds(epoch_s: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s))


def now_rfc3339(ago_ns: int = 0) -> str:
    """Fn's timestamp format: RFC 3339 in UTC with milliseconds (three stamps per call: kept cheap), of now or of
    ``ago_ns`` nanoseconds ago (a moment timed on the monotonic clock)."""
    ms = (time.time_ns() - ago_ns) // 1_000_000
    return f"{utc_seconds(ms // 1000)}.{ms % 1000:03d}Z"


def parse_milli_cpus(value: object) -> int:
    """Fn's `MilliCPUs`: "" or 0 (unlimited), "100m" (milli) or "0.1" (cores) -> milli-CPUs."""
    if value in (None, "", 0):
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"cpus must not be negative: {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"cpus must be a string like '100m' or '0.1', got {value!r}")
    text = value.strip()
    try:
        milli = int(text[:-1]) if text.endswith("m") else round(float(text) * 1000)
    except (ValueError, OverflowError):  # OverflowError: "inf" and "1e400" read as infinite
        raise ValueError(f"cpus must be like '100m' or '0.1', got {value!r}") from None
    if milli < 0:
        raise ValueError(f"cpus must not be negative: {value!r}")
    return milli


def format_milli_cpus(milli: int) -> str:
    return f"{milli}m" if milli else ""


# Annotations the API adds to what it answers (never stored): where to invoke the fn / the trigger.
INVOKE_ENDPOINT = "fnproject.io/fn/invokeEndpoint"
HTTP_ENDPOINT = "fnproject.io/trigger/httpEndpoint"


@attrs.frozen
class FnSetting:
    """A runner setting an fn (or its app, for all its fns) may give itself as an annotation.

    The value is a whole number, as JSON or as a string of digits (annotation values are JSON), in
    ``least``..``most``. The fn's annotations are merged over its app's, and they are part of the slot
    key, so each slot's containers have one value.
    """

    key: str
    least: int
    most: int | None = None
    meaning: str = ""  # said in the error, e.g. what 0 means

    def of(self, annotations: dict[str, Any], default: int) -> int:
        """The annotation's value, else the runner's ``default``; a ValueError that says what was found when
        it is not one (the API refuses it at create/update time, a runner at call time)."""
        value = annotations.get(self.key)
        if value is None:
            return default
        if isinstance(value, str) and value.isascii() and value.isdigit():
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            number = None
        if number is None or number < self.least or (self.most is not None and number > self.most):
            bounds = f">= {self.least}" if self.most is None else f"in {self.least}..{self.most}"
            meaning = f" ({self.meaning})" if self.meaning else ""
            raise ValueError(f"annotation {self.key} must be a whole number {bounds}{meaning}, got {value!r}")
        return number


#: FN_MAX_CALLS_PER_CONTAINER for one fn
MAX_CALLS_PER_CONTAINER = FnSetting("fn-core/max-calls-per-container", 0, meaning="0: no limit")
#: FN_HOT_START_TIMEOUT_MSECS for one fn: a runtime with a slow start (a JVM, heavy imports) gets more
START_TIMEOUT_MSECS = FnSetting("fn-core/start-timeout-msecs", 1, 600_000)
FN_SETTINGS = (MAX_CALLS_PER_CONTAINER, START_TIMEOUT_MSECS)


@attrs.define
class App:
    name: str
    id: str = ""
    config: dict[str, str] = attrs.field(factory=dict)
    annotations: dict[str, Any] = attrs.field(factory=dict)
    syslog_url: str = ""
    shape: str = ""
    created_at: str = ""
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return _drop_empty(attrs.asdict(self), keep=("id", "name"))


@attrs.define
class Fn:
    name: str
    app_id: str
    image: str
    id: str = ""
    memory: int = DEFAULT_MEMORY_MB
    timeout: int = DEFAULT_TIMEOUT_S
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT_S
    config: dict[str, str] = attrs.field(factory=dict)
    annotations: dict[str, Any] = attrs.field(factory=dict)
    shape: str = ""
    created_at: str = ""
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return _drop_empty(attrs.asdict(self), keep=("id", "name", "app_id", "image", "memory", "timeout", "idle_timeout"))


@attrs.define
class Trigger:
    name: str
    app_id: str
    fn_id: str
    source: str
    type: str = "http"
    id: str = ""
    annotations: dict[str, Any] = attrs.field(factory=dict)
    created_at: str = ""
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return _drop_empty(attrs.asdict(self), keep=("id", "name", "app_id", "fn_id", "type", "source"))


def _drop_empty(data: dict[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    """Go's `omitempty`: leave out empty optional fields, as Fn's JSON does."""
    return {k: v for k, v in data.items() if k in keep or v not in ("", None, {}, [])}


@attrs.define
class Call:
    """One invocation of a function: Fn's `models.Call`, field for field where we use it.

    Mutable on purpose: `override_call` plugins change it in place on the LB (e.g. `memory`,
    `config`, `annotations`). `memory` is in MB, `timeout` and `idle_timeout` in seconds,
    `tmpfs_size` in MB, `cpus` in milli-CPUs (JSON: "100m"), `headers` maps a header name to
    its list of values (Go's `http.Header`).
    """

    id: str
    app_id: str = ""
    app_name: str = ""
    fn_id: str = ""
    trigger_id: str = ""
    image: str = ""
    type: str = CALL_TYPE_SYNC
    memory: int = DEFAULT_MEMORY_MB
    timeout: int = DEFAULT_TIMEOUT_S
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT_S
    tmpfs_size: int = 0
    cpus: int = 0
    config: dict[str, str] = attrs.field(factory=dict)
    annotations: dict[str, Any] = attrs.field(factory=dict)
    headers: dict[str, list[str]] = attrs.field(factory=dict)
    method: str = "POST"
    url: str = ""
    syslog_url: str = ""
    status: str = ""
    error: str = ""
    created_at: str = ""
    started_at: str = ""
    completed_at: str = ""

    # --- Fn's JSON (TryCall.models_call_json) -------------------------------------------------
    def to_json_dict(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Fn's JSON fields (of `names`, default all): empty strings and maps are left out, numbers kept."""
        data: dict[str, Any] = {}
        for name in _CALL_FIELDS if names is None else names:
            if name == "cpus":  # milli-CPUs: "100m" in Fn's JSON, left out when 0
                if self.cpus:
                    data["cpus"] = format_milli_cpus(self.cpus)
                continue
            value = getattr(self, name)
            if value or value.__class__ is int or name in _CALL_ALWAYS:
                data[name] = value
        return data

    def to_json(self, shared: str = "") -> str:
        """The call's JSON. ``shared``: `shared_json` of a call of the same fn version, so that only
        the `PER_CALL_FIELDS` are encoded again (the LB sends one JSON per call)."""
        if not shared:
            return _COMPACT_JSON.encode(self.to_json_dict())
        return f"{_COMPACT_JSON.encode(self.to_json_dict(PER_CALL_FIELDS))[:-1]},{shared}}}"

    def shared_json(self) -> str:
        """The JSON members of every field but the `PER_CALL_FIELDS` (no braces): the same for
        every call of one fn version, until a plugin changes a call."""
        return _COMPACT_JSON.encode(self.to_json_dict(SHARED_FIELDS))[1:-1]

    @classmethod
    def from_json(cls, text: str) -> Call:
        """Parse Fn's call JSON; unknown fields are ignored (as Go does), wrong types raise ValueError."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"call JSON is not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError("call JSON is nested too deep") from None
        if not isinstance(data, dict):
            raise ValueError("call JSON must be an object")
        if not data.get("id") or not isinstance(data["id"], str):
            raise ValueError("call JSON has no id")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            kind = _CALL_FIELD_TYPES.get(name)
            if kind is None or value is None:
                continue
            if value.__class__ is not kind:  # as the LB sends it, each field already has its type
                value = _checked_field(name, kind, value)
            kwargs[name] = value
        headers = kwargs.get("headers")
        if headers:
            for values in headers.values():
                if values.__class__ is not list:  # of strings: the request to the container checks each value
                    raise ValueError("call JSON field 'headers' must map names to lists of values")
        config = kwargs.get("config")
        if config and not all(value.__class__ is str for value in config.values()):
            raise ValueError("call JSON field 'config' must map names to strings")
        if "\\u" in text and _SURROGATE_ESCAPE.search(text):  # only an escape puts a surrogate into a str of UTF-8
            _refuse_lone_surrogates(data)
        return cls(**kwargs)


# Worked out once from the class, not per call: the field names and how each is checked in from_json.
_CALL_FIELDS = tuple(f.name for f in attrs.fields(Call))
_CALL_ALWAYS = frozenset(("id", "image", "type"))
#: what differs between the calls of one fn version; the rest comes from its app and fn
PER_CALL_FIELDS = ("id", "trigger_id", "type", "headers", "method", "url", "status", "error", "created_at",
                   "started_at", "completed_at")
#: the rest: all that the slot key and `Call.shared_json` are made of
SHARED_FIELDS = tuple(name for name in _CALL_FIELDS if name not in PER_CALL_FIELDS)
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
_CALL_FIELD_TYPES: dict[str, type] = {
    f.name: dict if str(f.type).startswith("dict") else {"str": str, "int": int}[str(f.type)] for f in attrs.fields(Call)
}


#: a JSON escape of a UTF-16 surrogate: a pair is one character, one alone is none
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(data: dict[str, Any]) -> None:
    """A lone surrogate is no character and no UTF-8 holds it (the container's request, environment and the call's
    `finished` would each fail on it), but for header values' \\udc80-\\udcff: the bytes of a client's header that
    were not UTF-8, as aiohttp decoded them on the LB (the request to the container restores them)."""
    for name, value in data.items():
        try:
            if name == "headers" and isinstance(value, dict):
                for key, values in value.items():
                    key.encode()
                    for item in values:
                        if isinstance(item, str):
                            item.encode("utf-8", "surrogateescape")
            else:
                json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ValueError(f"call JSON field {name!r} holds a lone UTF-16 surrogate") from None


class _MilliCpus:
    """`cpus`' kind in `_CALL_FIELD_TYPES`: no JSON value has it, so "100m" or "0.1" is always converted."""


_CALL_FIELD_TYPES["cpus"] = _MilliCpus


def _checked_field(name: str, kind: type, value: Any) -> Any:
    """A call JSON value whose type is not the field's exact type: converted (cpus), or refused."""
    if kind is _MilliCpus:
        return parse_milli_cpus(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is not int and isinstance(value, kind):
        return value
    noun = {int: "an integer", str: "a string", dict: "an object"}[kind]
    raise ValueError(f"call JSON field {name!r} must be {noun}")


#: what a call's containers are started with: the fields `slot_key` hashes (with the call's extensions)
SLOT_FIELDS = ("app_id", "syslog_url", "fn_id", "image", "timeout", "idle_timeout", "tmpfs_size", "memory", "cpus",
               "config", "annotations")
slot_values = operator.attrgetter(*SLOT_FIELDS)


def slot_key(call: Call, extensions: Mapping[str, str] | None = None) -> bytes:
    """Fn's slot key (api/agent/slots.go): calls with equal keys may share hot containers.

    SHA-256 over app id, syslog url, fn id, image, the limits, the sorted config and the
    sorted annotations, so that any change to what a container is started with gives a new
    key (and so new containers). Returned raw (32 bytes); it travels as hex in
    `TryCall.slot_hash_id`. The call's ``extensions`` (`override_call`) come last, sorted: a
    `modify_container_options` plugin may start containers from them, so calls that differ
    there must not share one (Fn's place for them, its driver's slot key extension, is empty for
    Docker; with no extensions the key is Fn's).
    """
    h = hashlib.sha256()
    for part in (call.app_id, call.syslog_url, call.fn_id, call.image):
        h.update(part.encode())
        h.update(b"\0")
    h.update(struct.pack("<IIIQQ", call.timeout, call.idle_timeout, call.tmpfs_size, call.memory, call.cpus))
    h.update(b"\0")
    for key in sorted(call.config):
        h.update(key.encode() + b"\0" + call.config[key].encode() + b"\0")
    h.update(b"\0")
    for key in sorted(call.annotations):
        raw = json.dumps(call.annotations[key], separators=(",", ":"))
        h.update(key.encode() + b"\0" + raw.encode() + b"\0")
    if extensions:
        for key in sorted(extensions):
            h.update(key.encode() + b"\0" + extensions[key].encode() + b"\0")
    return h.digest()
