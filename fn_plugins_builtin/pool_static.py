"""The static runner pool (Fn's ``StaticRunnerPool``): the runners named in the config.

``runner_addresses`` comes from ``FN_RUNNER_ADDRESSES``, repeated ``--runner`` flags or the
config file; the list is read once, at LB start-up.
"""

from __future__ import annotations

from fn_core import RunnerPool, hookimpl


class ConfiguredRunners:
    def __init__(self, config) -> None:
        self._addresses = list(config.runner_addresses)

    async def addresses(self) -> list[str]:
        return self._addresses


@hookimpl
def register_runner_pools():
    return [
        RunnerPool(
            name="static", factory=ConfiguredRunners, refresh=False, description="runner_addresses (FN_RUNNER_ADDRESSES)"
        )
    ]
