"""fn-core placer plugin `ch-bounded`: CH affinity, but saturated runners are tried last."""

from __future__ import annotations

from fn_core import Placer, hookimpl

__version__ = "0.1.0"


class BoundedLoadPlacer:
    def __init__(self, home_order) -> None:
        self.max_active = 8
        self._home_order = home_order

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


PLACER = BoundedLoadPlacer(_ch_order)


@hookimpl
def configure(config):
    from fn_core.errors import ConfigError

    max_active = config.plugin_settings("placer-bounded").get("max_active", 8)
    if not isinstance(max_active, int) or isinstance(max_active, bool) or max_active < 1:
        raise ConfigError(f"[plugins.placer-bounded] max_active must be a positive integer, got {max_active!r}")
    PLACER.max_active = max_active


@hookimpl
def register_placers():
    return [
        Placer(
            name="ch-bounded",
            hooks=PLACER,
            description="consistent hash, but runners at max_active calls (or failed) are tried last",
            wants_runner_status=True,
        )
    ]
