"""What both ends of the RunnerProtocol share: frame size, NACK test, status conversion."""

from __future__ import annotations

from fn_core.proto import runner_pb2 as pb
from fn_core.records import RunnerStatus

#: Largest DataFrame payload either side sends (Fn's MaxDataChunk).
MAX_DATA_CHUNK = 10 * 1024

#: gRPC metadata key carrying the request id (Fn's `fn_request_id`).
REQUEST_ID_METADATA = "fn_request_id"

#: The NACK's error code: the runner refused before anything was committed.
NACK_CODE = 503


def is_nack(finished: pb.CallFinished, result_started: bool) -> bool:
    """Fn's rule: a 503 finish before any result_start means "not placed, try another runner"."""
    return not result_started and not finished.success and finished.errorCode == NACK_CODE


def status_to_proto(status: RunnerStatus) -> pb.RunnerStatus:
    return pb.RunnerStatus(
        active=status.active,
        failed=status.failed,
        id=status.id,
        details=status.details,
        errorCode=status.error_code,
        errorStr=status.error_str,
        requestsReceived=status.requests_received,
        requestsHandled=status.requests_handled,
        isNetworkDisabled=status.is_network_disabled,
        cached=status.cached,
        customStatus=status.custom_status,
    )


def status_from_proto(msg: pb.RunnerStatus) -> RunnerStatus:
    return RunnerStatus(
        active=msg.active,
        failed=msg.failed,
        id=msg.id,
        details=msg.details,
        error_code=msg.errorCode,
        error_str=msg.errorStr,
        requests_received=msg.requestsReceived,
        requests_handled=msg.requestsHandled,
        is_network_disabled=msg.isNetworkDisabled,
        cached=msg.cached,
        custom_status=dict(msg.customStatus),
    )
