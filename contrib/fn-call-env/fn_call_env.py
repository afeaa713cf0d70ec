"""fn-core plugin: configured call extensions on the LB, exposed as env vars on the runner.

The settings live in a `CallEnv` that `configure` registers with each plugin manager, not at module
level: tests and `fn-core serve` build several managers in one process, each with its config.
"""

from __future__ import annotations

import re

import attrs

from fn_core import hookimpl
from fn_core.errors import ConfigError

__version__ = "0.1.0"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: what the runner sets for every container: fdk finds its socket by FN_LISTENER, so another value leaves the function
#: unreachable, and the others tell it who and what it is
PLATFORM_ENV = ("FN_APP_ID", "FN_FN_ID", "FN_MEMORY", "FN_TYPE", "FN_LISTENER", "FN_FORMAT")


@attrs.frozen(eq=False)  # a plugin object: the manager tells its plugins apart by identity, not by value
class CallEnv:
    """One plugin manager's settings (``[plugins.call-env]``) and the hooks that apply them."""

    extensions: dict[str, str]  # LB: added to every call
    expose: tuple[str, ...]  # runner: extensions that become container env vars

    @classmethod
    def from_settings(cls, own: dict) -> CallEnv:
        """The ``[plugins.call-env]`` table, checked; a bad value stops start-up naming it."""
        extensions = own.get("extensions", {})
        if not isinstance(extensions, dict) or not all(isinstance(v, str) for v in extensions.values()):
            raise ConfigError("[plugins.call-env] extensions must be a table of strings")
        expose = own.get("expose", list(extensions))
        if not isinstance(expose, list) or not all(isinstance(k, str) and _ENV_NAME.fullmatch(k) for k in expose):
            raise ConfigError(f"[plugins.call-env] expose must list env var names (letters, digits, _), got {expose!r}")
        taken = [key for key in expose if key in PLATFORM_ENV]
        if taken:
            raise ConfigError(f"[plugins.call-env] {', '.join(taken)}: the runner sets {'it' if len(taken) == 1 else 'them'} "
                              f"for every container ({', '.join(PLATFORM_ENV)}); give the extension another name")
        return cls(extensions=dict(extensions), expose=tuple(expose))

    @hookimpl
    def override_call(self, call, extensions):
        extensions.update(self.extensions)

    @hookimpl
    def modify_container_options(self, extensions, options):
        env = options.setdefault("environment", {})
        for key in self.expose:
            if key in extensions:
                if isinstance(env, dict):
                    env[key] = extensions[key]
                else:  # docker also accepts ["K=V", ...]
                    env.append(f"{key}={extensions[key]}")


@hookimpl
def configure(config, plugin_manager):
    call_env = CallEnv.from_settings(config.plugin_settings("call-env", known=("extensions", "expose")))
    if call_env.extensions or call_env.expose:  # nothing configured: no hook to run per call
        plugin_manager.register(call_env, name="call-env:settings")
