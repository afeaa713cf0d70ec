"""Building the call model from an fn and an HTTP request: Fn's ``FromHTTPFnRequest``.

What the calls of one fn version share (its fields, slot key and their JSON) is worked out once, in
a `CallTemplate`; each request adds only its id, time, method, URL and headers.

Also the trigger header mapping both ways (Fn's ``ServeHTTPTrigger`` / ``triggerResponseWriter``).
"""

from __future__ import annotations

import copy
import functools
import json
import operator
from collections.abc import Iterable
from typing import Any

import attrs

from fn_core.errors import FunctionInvalidResponse
from fn_core.models import (
    CALL_TYPE_DETACHED,
    CALL_TYPE_SYNC,
    PER_CALL_FIELDS,
    SHARED_FIELDS,
    App,
    Call,
    Fn,
    Trigger,
    now_rfc3339,
    slot_key,
)
from fn_core.store.base import new_id

HTTP_HEADER_PREFIX = "Fn-Http-H-"
MAX_KEYS_WITH_EXTENSIONS = 256
INTENT_HTTP = "httprequest"
#: request headers Go's net/http server keeps out of ``req.Header``, so Fn never maps or passes them on: Host goes to
#: ``req.Host``, Transfer-Encoding to ``req.TransferEncoding`` (the body comes dechunked)
NOT_IN_GO_HEADERS = frozenset(("Host", "Transfer-Encoding"))
# Never forwarded to the client from a runner's result_start: the HTTP server sets its own.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer",
              "Transfer-Encoding", "Upgrade", "Content-Length", "Proxy-Connection")
)


@functools.lru_cache(maxsize=4096)  # clients send the same few names on every call
def canonical_header(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey: "content-type" -> "Content-Type", as Fn's call JSON has it."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def collect_headers(items: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """The request's headers as Go's net/http gives them to Fn: canonical names, no Host or Transfer-Encoding."""
    headers: dict[str, list[str]] = {}
    for key, value in items:
        name = canonical_header(key)
        if name not in NOT_IN_GO_HEADERS:
            headers.setdefault(name, []).append(value)
    return headers


def trigger_headers(items: Iterable[tuple[str, str]], method: str, url: str) -> dict[str, list[str]]:
    """Every request header X but Host and Transfer-Encoding becomes Fn-Http-H-X (Content-Type stays), plus method,
    URL and intent."""
    headers: dict[str, list[str]] = {}
    for key, value in items:
        name = canonical_header(key)
        if name in NOT_IN_GO_HEADERS:
            continue
        if name != "Content-Type":
            name = HTTP_HEADER_PREFIX + name
        headers.setdefault(name, []).append(value)
    headers["Fn-Http-Method"] = [method]
    headers["Fn-Http-Request-Url"] = [url]
    headers["Fn-Intent"] = [INTENT_HTTP]
    return headers


@attrs.frozen(eq=False)
class CallTemplate:
    """What every call of one fn version shares, worked out once per app and fn record: the fields
    that come from them, the slot key and their JSON (`Call.shared_json`). The LB makes each call
    from it; a call whose shared fields no `override_call` plugin changed (`unchanged`) keeps the
    template's slot key and JSON."""

    app: App
    fn: Fn
    config: dict[str, str]
    annotations: dict[str, Any]
    slot_key: bytes
    shared_json: str
    shared_values: tuple[Any, ...] = ()
    #: an annotation value is a JSON object or array: each call gets its own copy (a plugin may change it in place)
    nested_annotations: bool = False
    #: slot keys of this version with extensions, by the extensions (an `override_call` plugin's usually repeat)
    _keys_with: dict[tuple[tuple[str, str], ...], bytes] = attrs.field(factory=dict, init=False)

    @classmethod
    def of(cls, app: App, fn: Fn) -> CallTemplate:
        config = {**app.config, **fn.config}
        config.update(FN_APP_ID=app.id, FN_FN_ID=fn.id, FN_MEMORY=str(fn.memory), FN_TYPE=CALL_TYPE_SYNC)
        annotations = {**app.annotations, **fn.annotations}
        nested = any(isinstance(value, (dict, list)) for value in annotations.values())
        blank = cls(app, fn, config, annotations, b"", "", nested_annotations=nested)
        sample = blank.new_call(method="", url="", headers={})
        return cls(app, fn, config, annotations, slot_key(sample), sample.shared_json(), _shared_values(sample), nested)

    def slot_key_with(self, extensions: dict[str, str]) -> bytes:
        """The slot key of an unchanged call of this version with ``extensions`` (`fn_core.models.slot_key`)."""
        if not extensions:
            return self.slot_key
        held = tuple(sorted(extensions.items()))
        key = self._keys_with.get(held)
        if key is None:
            if len(self._keys_with) >= MAX_KEYS_WITH_EXTENSIONS:
                self._keys_with.clear()  # a plugin whose extensions vary per call: hashing each is all it costs
            sample = self.new_call(method="", url="", headers={})
            key = self._keys_with[held] = slot_key(sample, extensions)
        return key

    def unchanged(self, call: Call) -> bool:
        """Whether ``call``'s shared fields still equal the template's: one tuple compare, some 40 times
        cheaper than the slot key and the whole JSON (cpu-shares, say, reads the call and changes nothing)."""
        return _shared_values(call) == self.shared_values

    def new_call(
        self,
        *,
        method: str,
        url: str,
        headers: dict[str, list[str]],
        detached: bool = False,
        trigger: Trigger | None = None,
    ) -> Call:
        """A new call (id, time) of this fn for one request: Fn's ``FromHTTPFnRequest``."""
        app, fn = self.app, self.fn
        return Call(
            id=new_id(),
            app_id=app.id,
            app_name=app.name,
            fn_id=fn.id,
            trigger_id=trigger.id if trigger else "",
            image=fn.image,
            type=CALL_TYPE_DETACHED if detached else CALL_TYPE_SYNC,
            memory=fn.memory,
            timeout=fn.timeout,
            idle_timeout=fn.idle_timeout,
            config=dict(self.config),  # copies: plugins may change a call's maps in place
            annotations=copy.deepcopy(self.annotations) if self.nested_annotations else dict(self.annotations),
            headers=headers,
            method=method,
            url=url,
            syslog_url=app.syslog_url,
            created_at=now_rfc3339(),
        )


_shared_values = operator.attrgetter(*SHARED_FIELDS)
_per_call_values = operator.attrgetter(*PER_CALL_FIELDS)


def per_call_state(call: Call) -> tuple[Any, ...]:
    """The call's `PER_CALL_FIELDS` as they are (the objects) and its number of headers: one taken before
    `override_call` equals one taken after it unless a plugin set one of them (or added a header)."""
    return (*_per_call_values(call), len(call.headers))


# --- what an `override_call` plugin may put into a call: the types of `fn_core.models.Call`'s attrs fields ----------
CALL_FIELD_NAMES = tuple(field.name for field in attrs.fields(Call))
_FIELD_TYPES = {field.name: str(field.type) for field in attrs.fields(Call)}
#: the slot key packs these as unsigned 32- and 64-bit numbers (`fn_core.models.slot_key`)
_INT_BITS = {"timeout": 32, "idle_timeout": 32, "tmpfs_size": 32, "memory": 64, "cpus": 64}
_JSON = json.JSONEncoder(separators=(",", ":"))


def _said(value: Any) -> str:
    return f"{type(value).__name__} ({value!r:.60})"


def wrong_extensions(extensions: dict[str, str]) -> str | None:
    """The first entry of ``extensions`` that is not str -> str, said as ``extensions['k'] is int (5), must be str``."""
    for key, value in extensions.items():
        if key.__class__ is not str and not isinstance(key, str):
            return f"an extensions key is {_said(key)}, must be str"
        if value.__class__ is not str and not isinstance(value, str):
            return f"extensions[{key!r}] is {_said(value)}, must be str"
    return None


def wrong_field(call: Call, names: tuple[str, ...] = CALL_FIELD_NAMES) -> str | None:
    """The first of ``names`` whose value in ``call`` is not of its field's type in `fn_core.models.Call` (what the
    slot key and the call's JSON are made of), said as ``call.memory is str ('lots'), must be int``; None if none."""
    for name in names:
        value = getattr(call, name)
        kind = _FIELD_TYPES[name]
        where = f"call.{name}"
        if kind == "str":
            if not isinstance(value, str):
                return f"{where} is {_said(value)}, must be str"
        elif kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                return f"{where} is {_said(value)}, must be int"
            bits = _INT_BITS.get(name)
            if bits is not None and not 0 <= value < 2**bits:
                return f"{where} is {value}, must be an int in 0..2**{bits}-1"
        elif not isinstance(value, dict):
            return f"{where} is {_said(value)}, must be {kind}"
        else:
            problem = _wrong_entry(where, kind, value)
            if problem is not None:
                return problem
    return None


def _wrong_entry(where: str, kind: str, mapping: dict[Any, Any]) -> str | None:
    for key, value in mapping.items():
        if not isinstance(key, str):
            return f"a key of {where} is {_said(key)}, must be str"
        if kind == "dict[str, str]":
            if not isinstance(value, str):
                return f"{where}[{key!r}] is {_said(value)}, must be str"
        elif kind == "dict[str, list[str]]":
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                return f"{where}[{key!r}] is {_said(value)}, must be a list of str"
        else:  # annotations: any JSON value
            try:
                _JSON.encode(value)
            except (TypeError, ValueError) as exc:
                return f"{where}[{key!r}] is {_said(value)}, must be a JSON value ({exc})"
    return None


class CallTemplates:
    """The LB's `CallTemplate` per fn, made again when the lookup cache hands out an app or fn record that
    differs from the template's (the same record, or an equal one, e.g. the app read by name for a trigger,
    keeps it)."""

    def __init__(self, max_entries: int = 10000) -> None:
        self.max_entries = max_entries
        self._by_fn: dict[str, CallTemplate] = {}

    def get(self, app: App, fn: Fn) -> CallTemplate:
        template = self._by_fn.get(fn.id)
        if template is None or not (_same(template.fn, fn) and _same(template.app, app)):
            if len(self._by_fn) >= self.max_entries:
                self._by_fn.clear()  # crude bound, as the lookup cache's
            template = self._by_fn[fn.id] = CallTemplate.of(app, fn)
        return template


def _same(held: App | Fn, given: App | Fn) -> bool:
    return held is given or held == given  # identity first: the usual case, and no field-by-field compare


def response_headers(runner_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """/invoke: the function's headers as the runner sent them, less hop-by-hop ones."""
    return [(k, v) for k, v in runner_headers if k.lower() not in HOP_BY_HOP]


def trigger_response(status: int, runner_headers: Iterable[tuple[str, str]]) -> tuple[int, list[tuple[str, str]]]:
    """Triggers: keep Content-Type and Fn-Http-H-* (prefix stripped); Fn-Http-Status gives the status.

    As Fn: a service status of 400 or more wins, else the (first) Fn-Http-Status, else 200. An Fn-Http-Status that
    is not a final HTTP status (three ASCII digits, 200-599) is the function's bad answer, Fn's 502: ``int`` took
    '²' (and raised) or 5000 digits, and no client can read a status of 600 and up. A 1xx is no answer at all: sent
    as the status of the response it would be an interim one (100 Continue, 103 Early Hints), which a client reads
    and then waits on for a final response that never comes.
    """
    out: list[tuple[str, str]] = []
    user_status: str | None = None
    prefix = HTTP_HEADER_PREFIX.lower()
    for key, value in runner_headers:
        lower = key.lower()
        if lower == "content-type":
            out.append(("Content-Type", value))
        elif lower.startswith(prefix) and len(key) > len(prefix):
            if key[len(prefix):].lower() not in HOP_BY_HOP:
                out.append((key[len(prefix):], value))
        elif lower == "fn-http-status" and user_status is None:
            user_status = value  # the first, as Go's Header.Get
    if status >= 400:
        return status, out
    if user_status is None:
        return 200, out
    if not (len(user_status) == 3 and user_status.isascii() and user_status.isdigit() and "200" <= user_status <= "599"):
        raise FunctionInvalidResponse(
            f"invalid function response: Fn-Http-Status {user_status[:20]!r} is not a final HTTP status (200-599)"
        )
    return int(user_status), out


