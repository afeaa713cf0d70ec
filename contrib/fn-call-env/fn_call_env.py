"""fn-core plugin: configured call extensions on the LB, exposed as env vars on the runner."""

from __future__ import annotations

import re

from fn_core import hookimpl

__version__ = "0.1.0"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

settings: dict = {"extensions": {}, "expose": []}


@hookimpl
def configure(config):
    from fn_core.errors import ConfigError

    own = config.plugin_settings("call-env")
    extensions = own.get("extensions", {})
    if not isinstance(extensions, dict) or not all(isinstance(v, str) for v in extensions.values()):
        raise ConfigError("[plugins.call-env] extensions must be a table of strings")
    expose = own.get("expose", list(extensions))
    if not isinstance(expose, list) or not all(isinstance(k, str) and _ENV_NAME.match(k) for k in expose):
        raise ConfigError(f"[plugins.call-env] expose must list env var names (letters, digits, _), got {expose!r}")
    settings.update(extensions=dict(extensions), expose=list(expose))


@hookimpl
def override_call(call, extensions):
    extensions.update(settings["extensions"])


@hookimpl
def modify_container_options(extensions, options):
    env = options.setdefault("environment", {})
    for key in settings["expose"]:
        if key in extensions:
            if isinstance(env, dict):
                env[key] = extensions[key]
            else:  # docker also accepts ["K=V", ...]
                env.append(f"{key}={extensions[key]}")
