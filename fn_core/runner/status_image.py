"""The status image (Fn's ``runner_status.go``): a runner's ``Status`` proves it can run a function.

With ``status_image`` set (`FN_STATUS_IMAGE`), each ``Status`` / ``Status2`` also runs that image as
a sync call: payload ``{}`` (Status) or the request's JSON (Status2), memory 0 so it never waits
for or evicts anything, timeout 5 s and idle timeout 1 s as in Fn. The status reports the call's
id, its response body (``details``), and ``failed`` with the error when the call fails or answers
>= 400. An LB or operator polling the runner thus sees a runner whose Docker, disk or image store
is broken, not just one whose gRPC port is up.

Results are cached for 1.5 s per payload (``cached`` is then true) and concurrent asks share the
call in flight, so many pollers do not become a container start each. The call runs detached from
the asker: a poller that gives up does not cut it.
"""

from __future__ import annotations

import asyncio
import json
import logging

import attrs

from fn_core.errors import APIError
from fn_core.models import Call, now_rfc3339, slot_key
from fn_core.records import RunnerStatus
from fn_core.runner.agent import Agent
from fn_core.store.base import new_id

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 5
CALL_IDLE_TIMEOUT_S = 1
CACHE_S = CALL_IDLE_TIMEOUT_S + 0.5
#: the whole check, image pull and container start included (Fn's StatusCtxTimeout)
CHECK_TIMEOUT_S = 60.0
#: the response body kept as ``details``
MAX_DETAILS = 64 * 1024

EMPTY_PAYLOAD = b"{}"


@attrs.frozen
class StatusCallResult:
    call_id: str
    details: str = ""
    failed: bool = False
    error_code: int = 0
    error_str: str = ""
    created_at: str = ""
    started_at: str = ""
    completed_at: str = ""

    def apply_to(self, status: RunnerStatus, cached: bool) -> None:
        status.id, status.details, status.cached = self.call_id, self.details, cached
        status.created_at, status.started_at, status.completed_at = self.created_at, self.started_at, self.completed_at
        if self.failed:
            status.failed, status.error_code, status.error_str = True, self.error_code, self.error_str


def payload_of_struct(fields: dict) -> bytes:
    """Status2's ``google.protobuf.Struct``, as the JSON the status function reads."""
    return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()


class StatusImageCheck:
    def __init__(self, agent: Agent, image: str) -> None:
        self.agent = agent
        self.image = image
        self._cache: dict[bytes, tuple[float, StatusCallResult]] = {}
        self._in_flight: dict[bytes, asyncio.Future[StatusCallResult]] = {}

    async def run(self, payload: bytes = EMPTY_PAYLOAD) -> tuple[StatusCallResult, bool]:
        """The result for ``payload`` and whether it came from the cache."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._cache = {p: hit for p, hit in self._cache.items() if hit[0] > now}  # few payloads: a sweep is cheap
        if payload in self._cache:
            return self._cache[payload][1], True
        flight = self._in_flight.get(payload)
        if flight is None:
            flight = self._in_flight[payload] = asyncio.ensure_future(self._check(payload))
            flight.add_done_callback(lambda done: self._landed(payload, done))
        return await asyncio.shield(flight), False

    def _landed(self, payload: bytes, flight: asyncio.Future[StatusCallResult]) -> None:
        del self._in_flight[payload]
        if not flight.cancelled() and flight.exception() is None:
            self._cache[payload] = (asyncio.get_running_loop().time() + CACHE_S, flight.result())

    def status_call(self) -> Call:
        return Call(
            id=new_id(),
            image=self.image,
            memory=0,
            timeout=CALL_TIMEOUT_S,
            idle_timeout=CALL_IDLE_TIMEOUT_S,
            method="GET",
            url="/",
            headers={"Content-Type": ["application/json"]},
        )

    async def _check(self, payload: bytes) -> StatusCallResult:
        call = self.status_call()
        created = now_rfc3339()
        answered, started = 0, ""
        body = bytearray()

        async def on_start(status: int, headers: list[tuple[str, str]]) -> None:
            nonlocal answered, started
            answered, started = status, now_rfc3339()

        async def on_data(chunk: bytes) -> None:
            body.extend(chunk[: MAX_DETAILS - len(body)])

        error: APIError | None = None
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await self.agent.run(call, slot_key(call), {}, payload, on_start, on_data)
        except APIError as exc:
            error = exc
        except TimeoutError:
            error = APIError(f"status call took over {CHECK_TIMEOUT_S:.0f} s", status=504)
        except Exception as exc:
            log.exception("status call %s failed inside the runner", call.id)
            error = APIError(f"internal error: {type(exc).__name__}")
        result = StatusCallResult(
            call_id=call.id,
            details=body.decode("utf-8", "replace"),
            created_at=created,
            started_at=started,
            completed_at=now_rfc3339(),
        )
        if error is not None:
            result = attrs.evolve(result, failed=True, error_code=error.status, error_str=error.message)
        elif answered >= 400:
            result = attrs.evolve(result, failed=True, error_code=answered, error_str=f"status image answered {answered}")
        if result.failed:
            log.warning("status image %s failed: %s %s", self.image, result.error_code, result.error_str)
        return result
