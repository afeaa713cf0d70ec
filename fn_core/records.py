"""Records that plugins hand to the platform (placers, drivers, runner pools) and get from it (runner status)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # fullmatch: `$` lets a trailing newline through


def _valid_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{attribute.name} {value!r} must be lower case letters, digits, '-', '_' or '.', starting with a letter or digit"
        )


@attrs.frozen
class Placer:
    """A named placement strategy, returned by a `register_placers` hookimpl.

    :param name: the name operators select it by (`placer = "ch"`, `FN_PLACER=ch`).
    :param hooks: an object with a `place_call` hookimpl; the platform registers it as a plugin
        only when this placer is the selected one, so exactly one `place_call` is active.
    :param description: one line shown by `fn-core plugins`.
    :param wants_runner_status: when True the LB polls every runner's `Status` and hands the
        latest one to the placer as `RunnerRef.status`.
    """

    name: str = attrs.field(validator=_valid_name)
    hooks: object
    description: str = ""
    wants_runner_status: bool = False


@attrs.frozen
class Driver:
    """A named container driver for the runner, returned by a `register_drivers` hookimpl.

    :param name: the name operators select it by (`driver = "docker"`).
    :param factory: called once at runner start-up as ``factory(config=..., hook=...)``
        (the platform `Config` and the plugin manager's hook relay); returns the driver object
        (see `fn_core.runner.driver.ContainerDriver` for the methods it must have).
    :param description: one line shown by `fn-core plugins`.
    """

    name: str = attrs.field(validator=_valid_name)
    factory: Callable[..., Any]
    description: str = ""


@attrs.frozen
class RunnerPool:
    """A named source of the LB's runner list, returned by a `register_runner_pools` hookimpl.

    A pool decides *which* runners the LB has; the placer decides, per call, in which order to
    try them. Fn's ``RunnerPool`` interface, as a plugin.

    :param name: the name operators select it by (`runner_pool = "static"`, `FN_RUNNER_POOL`).
    :param factory: called once when the LB starts as ``factory(config=...)``; returns the
        source object (see `fn_core.lb.pool.RunnerSource`: ``async addresses() -> list[str]``
        and an optional ``async close()``).
    :param description: one line shown by `fn-core plugins`.
    :param refresh: True when the list can change: the LB asks the source again every
        ``runner_pool_refresh_ms`` and adds and retires runners to match. False: it asks once.
    """

    name: str = attrs.field(validator=_valid_name)
    factory: Callable[..., Any]
    description: str = ""
    refresh: bool = True


@attrs.define
class RunnerStatus:
    """A runner's status: Fn's `RunnerStatus` message with Python names.

    Counters are live; `custom_status` is where `runner_status` plugins add their entries
    (both keys and values are strings, as in the proto's `customStatus` map). On a runner with
    a status image, `id`, `details` and the times are those of the status call, and `failed`,
    `error_code` and `error_str` say how it went.
    """

    active: int = 0
    failed: bool = False
    id: str = ""
    details: str = ""
    error_code: int = 0
    error_str: str = ""
    requests_received: int = 0
    requests_handled: int = 0
    is_network_disabled: bool = False
    cached: bool = False
    custom_status: dict[str, str] = attrs.field(factory=dict)
    # the status image's call (runners with `status_image`), RFC 3339
    created_at: str = ""
    started_at: str = ""
    completed_at: str = ""


@attrs.frozen
class HttpRequest:
    """An HTTP request as `check_request` sees it: its head, before fn-core reads the body or looks anything up.

    :param method: ``GET``, ``POST``, ...
    :param path: the path as the client sent it, still percent-encoded, without the query.
    :param query: the raw query string ("" when none).
    :param headers: the request's headers, case-insensitive and read-only (``headers.getall(name)`` gives every
        value of a repeated one).
    :param remote: the client's address as the socket gives it (a proxy's, behind one; no header is trusted for it).
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    remote: str


@attrs.define
class RunnerRef:
    """What a placer sees of one runner of the pool: its address and last known status.

    `status` is None unless the selected placer asked for runner status
    (`Placer.wants_runner_status`) and a poll has been made. A poll the runner did not answer
    gives a status with ``failed`` set and ``error_str`` saying why.
    """

    address: str
    status: RunnerStatus | None = None
    handle: Any = attrs.field(default=None, repr=False, eq=False)


@attrs.define
class CallOutcome:
    """How a call ended, as handed to `call_finished` listeners.

    :param status: the HTTP status the client got (or will get).
    :param error: the error message, "" on success.
    :param runner: address of the runner that ran the call ("" if none / on the runner itself).
    :param attempts: how many runners were tried (NACKs and unreachable runners included).
    :param duration_s: wall time from the request arriving to the call ending, in seconds.
    :param request_id: the request's id under ``FN_RID_HEADER`` (the client's or a new one), "" when unset.
    :param wait_s: how long the call waited on its runner for a container, in seconds (Fn's scheduler duration, from
        the runner's ``finished``): ~0 when a hot container was idle, a cold start's launch when one was started for
        it; None when no runner told (not placed, or the runner was lost before its ``finished``).
    """

    status: int
    error: str = ""
    runner: str = ""
    attempts: int = 0
    duration_s: float = 0.0
    request_id: str = ""
    wait_s: float | None = None
