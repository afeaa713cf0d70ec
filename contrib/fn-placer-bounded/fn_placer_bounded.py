"""fn-core placer plugin `ch-bounded`: CH affinity, but saturated runners are tried last.

Each plugin manager gets a placer of its own from `register_placers`, which reads its manager's
``max_active`` in `configure`: nothing lives at module level, since tests and `fn-core serve` build
several managers in one process, each with its config.
"""

from __future__ import annotations

from fn_core import Placer, hookimpl
from fn_core.errors import ConfigError

__version__ = "0.1.0"

DEFAULT_MAX_ACTIVE = 8


def max_active_setting(config) -> int:
    """``[plugins.placer-bounded] max_active``, checked; a bad value stops start-up naming it."""
    max_active = config.plugin_settings("placer-bounded", known=("max_active",)).get("max_active", DEFAULT_MAX_ACTIVE)
    if not isinstance(max_active, int) or isinstance(max_active, bool) or max_active < 1:
        raise ConfigError(f"[plugins.placer-bounded] max_active must be a positive integer, got {max_active!r}")
    return max_active


class BoundedLoadPlacer:
    def __init__(self, home_order) -> None:
        self.max_active = DEFAULT_MAX_ACTIVE
        self._home_order = home_order

    @hookimpl
    def configure(self, config):  # the platform registers the selected placer's object, so this runs with its manager's config
        self.max_active = max_active_setting(config)

    def saturated(self, runner) -> bool:
        status = runner.status
        return status is not None and (status.failed or status.active >= self.max_active)

    @hookimpl
    def place_call(self, call, runners):
        order = self._home_order(call, runners)
        return [r for r in order if not self.saturated(r)] + [r for r in order if self.saturated(r)]


def _ch_order(call, runners):
    # Public helpers of the built-in ch placer: the same affinity as `ch`.
    from fn_plugins_builtin.placer_ch import fn_hash, jump_hash

    if not runners:
        return []
    start = jump_hash(fn_hash(call.fn_id), len(runners))
    return runners[start:] + runners[:start]


@hookimpl
def configure(config):
    max_active_setting(config)  # a bad value stops start-up even where another placer is selected


@hookimpl
def register_placers():
    # called once per plugin manager: a fresh placer each time, so no manager sees another's max_active
    return [
        Placer(
            name="ch-bounded",
            hooks=BoundedLoadPlacer(_ch_order),
            description="consistent hash, but runners at max_active calls (or failed) are tried last",
            wants_runner_status=True,
        )
    ]
