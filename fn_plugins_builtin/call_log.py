"""One structured log line per call on the LB: what operators grep when a call went wrong.

Its fields are logfmt (`fn_core.logfmt`): a parser splits them, and no value a client chose can add one; with
``FN_LOG_FORMAT=json`` they are top-level keys of the line's object too.
"""

from __future__ import annotations

import logging

from fn_core import hookimpl, logfmt

log = logging.getLogger("fn_core.calls")


@hookimpl
def call_finished(call, outcome):
    fields = {
        "call_id": call.id,
        "app_id": call.app_id,
        "fn_id": call.fn_id,
        "runner": outcome.runner or "-",
        "status": outcome.status,
        "attempts": outcome.attempts,
        "duration_ms": round(outcome.duration_s * 1000, 2),
    }
    if outcome.wait_s is not None:  # the part of it spent waiting on the runner for a container (a cold start's)
        fields["wait_ms"] = round(outcome.wait_s * 1000, 2)
    if outcome.error:
        fields["error"] = outcome.error
    if outcome.request_id:
        fields["rid"] = outcome.request_id
    logfmt.log(log, logging.INFO, "call finished", fields)
