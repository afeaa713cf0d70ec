"""What both ends of the RunnerProtocol share: the offered call, frame size, NACK test, status conversion."""

from __future__ import annotations

import attrs

from fn_core.errors import BadRequest
from fn_core.models import Call, slot_key
from fn_core.proto import runner_pb2 as pb
from fn_core.records import RunnerStatus

#: Largest DataFrame payload either side sends (Fn's MaxDataChunk).
MAX_DATA_CHUNK = 10 * 1024

#: gRPC metadata key carrying the request id (Fn's `fn_request_id`).
REQUEST_ID_METADATA = "fn_request_id"

#: The service's method paths (the proto has no package line).
ENGAGE = "/RunnerProtocol/Engage"
STATUS = "/RunnerProtocol/Status"
STATUS2 = "/RunnerProtocol/Status2"
CONFIGURE_RUNNER = "/RunnerProtocol/ConfigureRunner"
STREAM_LOGS = "/RunnerProtocol/StreamLogs"

#: A slot key's size (SHA-256, Fn's and ours); `TryCall.slot_hash_id` carries it as hex.
SLOT_KEY_BYTES = 32

#: The NACK's error code: the runner refused before anything was committed.
NACK_CODE = 503


@attrs.define(eq=False)
class CallOffer:
    """What the LB offers a runner for one call (Fn's TryCall): the call, its slot key, the extensions.

    Over gRPC it travels as the TryCall message, built once however many runners are tried; a
    runner in the LB's own process (`fn-core serve`) gets the record itself, with no JSON either way.
    """

    call: Call
    slot_key: bytes
    extensions: dict[str, str] = attrs.field(factory=dict)
    #: `Call.shared_json` of the call's fn version, when no plugin changed the call ("": encode it all)
    shared_json: str = attrs.field(default="", repr=False)
    _message: bytes | None = attrs.field(default=None, init=False, repr=False)

    def try_bytes(self) -> bytes:
        """The serialized TryCall message, built once however many runners are tried."""
        if self._message is None:
            try_call = pb.TryCall(
                models_call_json=self.call.to_json(self.shared_json),
                slot_hash_id=self.slot_key.hex(),
                extensions=self.extensions,
            )
            message = pb.ClientMsg(**{"try": try_call})  # type: ignore[arg-type]  # "try" is a Python keyword
            self._message = message.SerializeToString()
        return self._message

    @classmethod
    def from_message(cls, msg: pb.ClientMsg) -> CallOffer:
        """A runner's reading of an Engage stream's first message; `BadRequest` when it is no valid TryCall."""
        if msg.WhichOneof("body") != "try":
            raise BadRequest("expected a try message first")
        try_call = getattr(msg, "try")  # a Python keyword, so not an attribute name
        try:
            call = Call.from_json(try_call.models_call_json)
            _check_limits(call)
            extensions = dict(try_call.extensions)
            key = bytes.fromhex(try_call.slot_hash_id) if try_call.slot_hash_id else b""
            if len(key) != SLOT_KEY_BYTES:  # not a SHA-256 (Fn's and ours): the runner's own (`Agent.acquire` checks)
                key = slot_key(call, extensions)
        except ValueError as exc:
            raise BadRequest(f"invalid call: {exc}") from None
        return cls(call, key, extensions)


#: the bounds of a call's limits on a runner: Fn's types (uint32 timeouts and tmpfs size, uint64 memory and cpus),
#: and at least 1 where 0 would mean no limit at all (memory 0 is a container without one, outside the budget)
_CALL_LIMITS = (("memory", 1, 2**64 - 1), ("timeout", 1, 2**32 - 1), ("idle_timeout", 1, 2**32 - 1),
                ("tmpfs_size", 0, 2**32 - 1), ("cpus", 0, 2**64 - 1))


def _check_limits(call: Call) -> None:
    # the API refuses such values, but a runner takes calls from whoever reaches its port (~0.7 us a call)
    for name, low, high in _CALL_LIMITS:
        value = getattr(call, name)
        if not low <= value <= high:
            raise ValueError(f"{name} must be in {low}..{high}, got {value}")


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
        createdAt=status.created_at,
        startedAt=status.started_at,
        completedAt=status.completed_at,
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
        created_at=msg.createdAt,
        started_at=msg.startedAt,
        completed_at=msg.completedAt,
    )
