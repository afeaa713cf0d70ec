"""fn-core plugin: Docker cpu-shares for function containers, from an fn annotation.

API: `validate_app` and `validate_fn` refuse a bad annotation when the app or fn is saved (400).
LB: `override_call` reads the annotation (checked again: apps and fns saved before the plugin was
installed were not), or derives shares from memory, and sends the value to the runner as a call
extension. Runner: `modify_container_options` sets ``cpu_shares``.

The settings live in a `CpuShares` that `configure` registers with each plugin manager, not at
module level: tests and `fn-core serve` build several managers in one process, each with its config.
"""

from __future__ import annotations

import attrs

from fn_core import APIError, hookimpl
from fn_core.errors import ConfigError

__version__ = "0.1.0"

EXTENSION = "fn-cpu-shares/shares"
MIN_SHARES, MAX_SHARES = 2, 262144  # Docker's accepted range
DEFAULT_ANNOTATION = "fnproject.io/cpu-shares"


@attrs.frozen(eq=False)  # a plugin object: the manager tells its plugins apart by identity, not by value
class CpuShares:
    """One plugin manager's settings (``[plugins.cpu-shares]``) and the LB hook that applies them."""

    annotation: str = DEFAULT_ANNOTATION
    shares_per_mb: int = 0  # 0: no shares unless the annotation asks

    @classmethod
    def from_settings(cls, own: dict) -> CpuShares:
        """The ``[plugins.cpu-shares]`` table, checked; a bad key or value stops start-up naming it."""
        ratio = own.get("shares_per_mb", 0)
        if not isinstance(ratio, int) or isinstance(ratio, bool) or ratio < 0:
            raise ConfigError(f"[plugins.cpu-shares] shares_per_mb must be a non-negative integer, got {ratio!r}")
        annotation = own.get("annotation", DEFAULT_ANNOTATION)
        if not isinstance(annotation, str) or not annotation:
            raise ConfigError(f"[plugins.cpu-shares] annotation must be a non-empty string, got {annotation!r}")
        return cls(annotation=annotation, shares_per_mb=ratio)

    @hookimpl
    def validate_app(self, app):
        if self.annotation in app.annotations:
            parse_shares(app.annotations[self.annotation], self.annotation)

    @hookimpl
    def validate_fn(self, fn):
        if self.annotation in fn.annotations:
            parse_shares(fn.annotations[self.annotation], self.annotation)

    @hookimpl
    def override_call(self, call, extensions):
        if self.annotation in call.annotations:
            extensions[EXTENSION] = str(parse_shares(call.annotations[self.annotation], self.annotation))
        elif self.shares_per_mb:
            extensions[EXTENSION] = str(min(MAX_SHARES, max(MIN_SHARES, call.memory * self.shares_per_mb)))


@hookimpl
def configure(config, plugin_manager):
    plugin_manager.register(CpuShares.from_settings(
        config.plugin_settings("cpu-shares", known=[field.name for field in attrs.fields(CpuShares)])), name="cpu-shares:settings")


def parse_shares(value: object, annotation: str) -> int:
    """The annotation's value as shares, or a 400 that says what is wrong."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():  # "²" is a digit, and no int
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise APIError(f"annotation {annotation} must be an integer cpu-shares value, got {value!r}", status=400)
    if not MIN_SHARES <= value <= MAX_SHARES:
        raise APIError(f"annotation {annotation} must be in {MIN_SHARES}..{MAX_SHARES} (Docker's range), got {value}", status=400)
    return value


@hookimpl
def modify_container_options(extensions, options):  # no settings: the LB already decided, in the extension
    if EXTENSION in extensions:
        options["cpu_shares"] = int(extensions[EXTENSION])
