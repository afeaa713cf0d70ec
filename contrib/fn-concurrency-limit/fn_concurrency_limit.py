"""fn-core plugin: caps on the calls of an app, and of an fn, running at once on an LB; over a cap, 429.

LB: `override_call` counts each call against its app's cap and its fn's from the moment the LB accepts it
(the wait for a runner included: a call waiting to be placed holds its place) until `call_finished`, which the
core runs once for every call `override_call` saw; a call whose client hung up, until its function may have
ended (its timeout later: the runner lets it finish unseen). A call over a cap is refused at once with 429 and
``Retry-After``, before it is placed: nothing runs and no runner is asked, so one tenant's flood cannot fill the
runners or the placer's queue of the others. API: `validate_app` / `validate_fn` refuse a bad annotation (400).

Each LB counts on its own: behind N LBs an app may run up to N times its cap (the "fuzzy" cluster-wide limit of
Fn's discussions); divide the caps by the number of LBs for a cluster-wide bound.

The settings and the counts live in a `ConcurrencyLimit` that `configure` registers with each plugin manager, not at
module level: tests and `fn-core serve` build several managers in one process, each with its config.
"""

from __future__ import annotations

import asyncio
import collections

import attrs

from fn_core import APIError, hookimpl
from fn_core.errors import ConfigError
from fn_core.metrics import label_value

__version__ = "0.1.0"

DEFAULT_ANNOTATION = "fnproject.io/max-concurrency"
SETTINGS = ("per_app", "per_fn", "apps", "annotation", "retry_after_s")
HUNG_UP = 444  # Fn's "Client cancelled context": the client went away, the call was dropped


class OverCap(APIError):
    """Fn has no quotas; 429 is what Lambda and OpenWhisk answer a tenant over its concurrency (a 503 would blame
    the platform: it means "too busy" to Fn's clients)."""

    status = 429


@attrs.define(eq=False)  # a plugin object: the manager tells its plugins apart by identity, not by value
class ConcurrencyLimit:
    """One plugin manager's ``[plugins.concurrency-limit]`` and the calls it counts."""

    per_app: int | None = None  # None: no cap
    per_fn: int | None = None
    apps: dict[str, int] = attrs.field(factory=dict)  # by app name: the app's own cap, in place of per_app
    annotation: str = DEFAULT_ANNOTATION
    retry_after_s: int = 1
    running_by_app: dict[str, int] = attrs.field(factory=dict)  # app id -> its calls counted now
    running_by_fn: dict[str, int] = attrs.field(factory=dict)
    counted: dict[str, tuple[str, str]] = attrs.field(factory=dict)  # call id -> (app id, fn id)
    app_names: dict[str, str] = attrs.field(factory=dict)  # app id -> name, for /metrics
    refused: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter)  # (app name, scope)

    @classmethod
    def from_settings(cls, own: dict) -> ConcurrencyLimit:
        """The ``[plugins.concurrency-limit]`` table, checked; a bad key or value stops start-up naming it."""
        apps = own.get("apps", {})
        if not isinstance(apps, dict):
            raise ConfigError(f"[plugins.concurrency-limit] apps must be a table of app name = cap, got {apps!r}")
        annotation = own.get("annotation", DEFAULT_ANNOTATION)
        if not isinstance(annotation, str) or not annotation:
            raise ConfigError(f"[plugins.concurrency-limit] annotation must be a non-empty string, got {annotation!r}")
        return cls(
            per_app=_setting(own, "per_app"),
            per_fn=_setting(own, "per_fn"),
            apps={name: _setting(apps, name, f"apps.{name}") for name in apps},
            annotation=annotation,
            retry_after_s=_setting(own, "retry_after_s") or 1,
        )

    # --- the API node: a bad annotation is refused when saved, not at every call ----------------------------------
    @hookimpl
    def validate_app(self, app):
        if self.annotation in app.annotations:
            parse_cap(app.annotations[self.annotation], self.annotation)

    @hookimpl
    def validate_fn(self, fn):
        if self.annotation in fn.annotations:
            parse_cap(fn.annotations[self.annotation], self.annotation)

    # --- the LB: count from acceptance to the end --------------------------------------------------------------------
    @hookimpl(trylast=True)  # after the other plugins: a call one of them refuses is never counted
    def override_call(self, call, extensions):
        app_cap = self.apps.get(call.app_name, self.per_app)
        fn_cap = self.per_fn
        if self.annotation in call.annotations:  # the fn's (or its app's) own cap may only lower the operator's
            own = parse_cap(call.annotations[self.annotation], self.annotation)
            fn_cap = own if fn_cap is None else min(own, fn_cap)
        if app_cap is not None and self.running_by_app.get(call.app_id, 0) >= app_cap:
            self._refuse(call.app_name, "app", f"app {call.app_name}", app_cap)
        if fn_cap is not None and self.running_by_fn.get(call.fn_id, 0) >= fn_cap:
            self._refuse(call.app_name, "fn", f"fn {call.fn_id} of app {call.app_name}", fn_cap)
        self.counted[call.id] = (call.app_id, call.fn_id)
        self.running_by_app[call.app_id] = self.running_by_app.get(call.app_id, 0) + 1
        self.running_by_fn[call.fn_id] = self.running_by_fn.get(call.fn_id, 0) + 1
        self.app_names[call.app_id] = call.app_name

    def _refuse(self, app_name: str, scope: str, what: str, cap: int) -> None:
        self.refused[app_name, scope] += 1
        raise OverCap(f"{what} has {cap} calls running, its cap on this node: retry later",
                      headers={"Retry-After": str(self.retry_after_s)})

    @hookimpl
    def call_finished(self, call, outcome):
        ids = self.counted.pop(call.id, None)
        if ids is None:  # refused here, or by a plugin that ran before this one
            return
        if outcome.status == HUNG_UP:
            # the runner lets the function finish unseen, up to its timeout: until then it still takes a container,
            # and a client that posts and hangs up in a loop would otherwise run any number at once
            asyncio.get_running_loop().call_later(call.timeout, self._release, *ids)
            return
        self._release(*ids)

    def _release(self, app_id: str, fn_id: str) -> None:
        _release(self.running_by_fn, fn_id)
        if _release(self.running_by_app, app_id) is None:
            del self.app_names[app_id]

    @hookimpl
    def metric_families(self):
        refused = [f'fn_concurrency_limit_refused_total{{app="{label_value(app)}",scope="{scope}"}} {n}'
                   for (app, scope), n in self.refused.items()]
        running = [f'fn_concurrency_limit_running{{app="{label_value(self.app_names[app_id])}"}} {n}'
                   for app_id, n in self.running_by_app.items()]
        return [
            ("fn_concurrency_limit_refused_total", "counter", "calls refused with 429: their app or fn was at its cap",
             refused),
            ("fn_concurrency_limit_running", "gauge", "calls of each app counted against its cap now", running),
        ]


@hookimpl
def configure(config, plugin_manager):
    plugin_manager.register(ConcurrencyLimit.from_settings(config.plugin_settings("concurrency-limit", known=SETTINGS)),
                            name="concurrency-limit:limits")


def parse_cap(value: object, annotation: str) -> int:
    """The annotation's value as a cap, or a 400 that says what is wrong."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) < 10:
        value = int(value.strip())  # (isdigit alone passes "²", which int refuses)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise APIError(f"annotation {annotation} must be a positive integer (calls running at once), got {value!r}",
                       status=400)
    return value


def _setting(table: dict, key: str, name: str | None = None) -> int | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"[plugins.concurrency-limit] {name or key} must be a positive integer, got {value!r}")
    return value


def _release(counts: dict[str, int], key: str) -> int | None:
    """One call fewer under ``key``; the count left, None once none is (the key goes: apps and fns come and go)."""
    left = counts[key] - 1
    if left:
        counts[key] = left
        return left
    del counts[key]
    return None
