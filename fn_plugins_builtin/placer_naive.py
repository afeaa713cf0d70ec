"""The naive placer: round robin over the runners, each call starting one further along."""

from __future__ import annotations

import itertools

from fn_core import Placer, hookimpl


class RoundRobinPlacer:
    def __init__(self) -> None:
        self._next = itertools.count()

    @hookimpl
    def place_call(self, call, runners):
        if not runners:
            return []
        start = next(self._next) % len(runners)
        return runners[start:] + runners[:start]


@hookimpl
def register_placers():
    return [Placer(name="naive", hooks=RoundRobinPlacer(), description="round robin: calls spread over all runners")]
