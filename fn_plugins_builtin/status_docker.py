"""Runner status: is Docker answering, how much memory/CPU is free (placeholder)."""

from __future__ import annotations

from fn_core import hookimpl


@hookimpl
def runner_status(status, runner):
    return None
