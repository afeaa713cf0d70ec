"""fn-core: a serverless execution platform in the architecture of the Fn Project.

Plugin authors need mostly what this module exports::

    from fn_core import hookimpl, APIError, App, Call, Fn, HttpRequest, Placer, Driver, RunnerPool, RunnerStatus, Trigger

and, for some hooks, `fn_core.errors.ConfigError` (`configure`), `fn_core.metrics.Family` (`metric_families`) and
`fn_plugins_builtin.driver_docker.DockerDriver` (a driver built on the built-in one); each hook's example in
`fn_core.hookspecs` (docs/hooks.md) shows its imports. Everything else is the platform's own machinery.
"""

import pluggy

__version__ = "0.1.0"

#: The pluggy project name; plugins mark their hook implementations with it.
PROJECT_NAME = "fn_core"
#: Entry-point group third-party plugins register in.
ENTRY_POINT_GROUP = "fn_core.plugins"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

from fn_core.errors import APIError  # noqa: E402
from fn_core.models import App, Call, Fn, Trigger  # noqa: E402
from fn_core.records import Driver, HttpRequest, Placer, RunnerPool, RunnerStatus  # noqa: E402

__all__ = [
    "APIError",
    "App",
    "Call",
    "Driver",
    "ENTRY_POINT_GROUP",
    "Fn",
    "HttpRequest",
    "PROJECT_NAME",
    "Placer",
    "RunnerPool",
    "RunnerStatus",
    "Trigger",
    "__version__",
    "hookimpl",
    "hookspec",
]
