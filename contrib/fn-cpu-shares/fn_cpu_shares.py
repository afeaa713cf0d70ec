"""fn-core plugin: Docker cpu-shares for function containers, from an fn annotation.

LB: `override_call` validates the annotation (or derives shares from memory) and sends the value
to the runner as a call extension. Runner: `modify_container_options` sets ``cpu_shares``.
"""

from __future__ import annotations

from fn_core import APIError, hookimpl

__version__ = "0.1.0"

EXTENSION = "fn-cpu-shares/shares"
MIN_SHARES, MAX_SHARES = 2, 262144  # Docker's accepted range

settings = {"annotation": "fnproject.io/cpu-shares", "shares_per_mb": 0}


@hookimpl
def configure(config):
    from fn_core.errors import ConfigError

    own = config.plugin_settings("cpu-shares")
    unknown = set(own) - set(settings)
    if unknown:
        raise ConfigError(f"[plugins.cpu-shares]: unknown keys {sorted(unknown)}; known: {sorted(settings)}")
    ratio = own.get("shares_per_mb", 0)
    if not isinstance(ratio, int) or isinstance(ratio, bool) or ratio < 0:
        raise ConfigError(f"[plugins.cpu-shares] shares_per_mb must be a non-negative integer, got {ratio!r}")
    annotation = own.get("annotation", "fnproject.io/cpu-shares")
    if not isinstance(annotation, str) or not annotation:
        raise ConfigError(f"[plugins.cpu-shares] annotation must be a non-empty string, got {annotation!r}")
    settings.update(annotation=annotation, shares_per_mb=ratio)


def parse_shares(value: object, annotation: str) -> int:
    """The annotation's value as shares, or a 400 that says what is wrong."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise APIError(f"annotation {annotation} must be an integer cpu-shares value, got {value!r}", status=400)
    if not MIN_SHARES <= value <= MAX_SHARES:
        raise APIError(f"annotation {annotation} must be in {MIN_SHARES}..{MAX_SHARES} (Docker's range), got {value}", status=400)
    return value


@hookimpl
def override_call(call, extensions):
    annotation = settings["annotation"]
    if annotation in call.annotations:
        extensions[EXTENSION] = str(parse_shares(call.annotations[annotation], annotation))
    elif settings["shares_per_mb"]:
        shares = min(MAX_SHARES, max(MIN_SHARES, call.memory * settings["shares_per_mb"]))
        extensions[EXTENSION] = str(shares)


@hookimpl
def modify_container_options(extensions, options):
    if EXTENSION in extensions:
        options["cpu_shares"] = int(extensions[EXTENSION])
