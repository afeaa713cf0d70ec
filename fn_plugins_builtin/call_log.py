"""One structured log line per call on the LB: what operators grep when a call went wrong."""

from __future__ import annotations

import logging

from fn_core import hookimpl

log = logging.getLogger("fn_core.calls")


@hookimpl
def call_finished(call, outcome):
    log.info(
        "call finished call_id=%s app_id=%s fn_id=%s runner=%s status=%d attempts=%d duration_ms=%.2f%s%s",
        call.id,
        call.app_id,
        call.fn_id,
        outcome.runner or "-",
        outcome.status,
        outcome.attempts,
        outcome.duration_s * 1000,
        f" error={outcome.error!r}" if outcome.error else "",
        f" rid={_field(outcome.request_id)}" if outcome.request_id else "",
    )


def _field(value: str) -> str:
    """A client's value as one field of the line: as is when it is one printable word, else quoted."""
    return value if value.isprintable() and " " not in value else repr(value)
