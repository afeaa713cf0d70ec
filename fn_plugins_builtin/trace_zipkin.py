"""Tracing to Zipkin (Fn's ``FN_ZIPKIN_URL``): one span per call on the LB, one on the runner that ran it.

Off unless ``zipkin_url`` is set: then `configure` registers a `ZipkinExporter` for this plugin
manager, which turns `call_finished` (LB) and `runner_call_finished` (runner) into Zipkin v2 spans
and POSTs them, in batches, from a task of its own: a call never waits for the collector.

The trace a call joins is the client's: B3 headers (``X-B3-TraceId``, ``X-B3-SpanId``,
``X-B3-Sampled``, or the single ``b3``) or W3C ``traceparent``, on ``/invoke`` and on triggers
alike. A call without them starts a trace of its own. Nothing extra crosses the LB -> runner
stream: the runner reads the same headers from the call, and both nodes derive the call's span
ids from its id, so the runner's span is the child of the LB's wherever each is recorded. (Sending
the LB's span id as a call extension instead would cost every call the LB's call template: see
`LBAgent.prepare`. The price: a runner behind an LB that records no span names a parent that never
arrives.) A client that sends ``X-B3-Sampled: 0`` (or a ``traceparent`` not sampled) gets no span.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from typing import Any

import aiohttp
import attrs

from fn_core import hookimpl

log = logging.getLogger(__name__)

FLUSH_S = 0.5  # how long a finished span may wait for its batch
MAX_BATCH = 200
MAX_PENDING = 10_000  # beyond this, with the collector down or slow, new spans are dropped (fn_trace_spans_dropped_total)
POST_TIMEOUT_S = 5.0
_HEX = re.compile(r"[0-9a-f]+")


@hookimpl
def configure(config, plugin_manager):
    if config.zipkin_url:
        plugin_manager.register(ZipkinExporter(config.zipkin_url), name="trace-zipkin:exporter")


@attrs.frozen
class Parent:
    """The trace a call joins: its trace id, the caller's span id ('' when none) and whether it is sampled."""

    trace_id: str
    span_id: str = ""
    sampled: bool = True


def parent_of(call_id: str, headers: dict[str, list[str]]) -> Parent:
    """The client's trace context from a call's headers (a trigger's ``Fn-Http-H-`` ones too), else a new trace."""
    found: dict[str, str] = {}
    for name, values in headers.items():
        key = name.lower().removeprefix("fn-http-h-")
        if values and key in ("x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags", "b3", "traceparent"):
            found[key] = values[0].strip().lower()
    if "traceparent" in found:  # 00-<trace 32 hex>-<span 16 hex>-<flags>
        parts = found["traceparent"].split("-")
        if len(parts) == 4 and _hex(parts[1], 32) and _hex(parts[2], 16) and _hex("1" + parts[3], 3):
            return Parent(parts[1], parts[2], sampled=bool(int(parts[3], 16) & 1))
    if "b3" in found:  # <trace>-<span>[-<sampled>[-<parent>]], or just the sampling state
        parts = found["b3"].split("-")
        if len(parts) == 1 and parts[0] == "0":
            return Parent(_derived(call_id, "trace", 32), sampled=False)
        if len(parts) >= 2 and _hex(parts[0], 16, 32) and _hex(parts[1], 16):
            return Parent(parts[0], parts[1], sampled=not (len(parts) > 2 and parts[2] == "0"))
    trace_id, span_id = found.get("x-b3-traceid", ""), found.get("x-b3-spanid", "")
    sampled = found.get("x-b3-sampled", "1") not in ("0", "false") or found.get("x-b3-flags") == "1"
    if _hex(trace_id, 16, 32) and _hex(span_id, 16):
        return Parent(trace_id, span_id, sampled)
    return Parent(_derived(call_id, "trace", 32), sampled=sampled)


def lb_span_id(call_id: str) -> str:
    return _derived(call_id, "lb", 16)


def runner_span_id(call_id: str) -> str:
    return _derived(call_id, "runner", 16)


def _derived(call_id: str, role: str, digits: int) -> str:
    # the same on every node that sees the call, with no id sent between them
    return hashlib.blake2b(f"{role}:{call_id}".encode(), digest_size=digits // 2).hexdigest()


def _hex(value: str, *lengths: int) -> bool:
    """Lowercase hex of one of these lengths, not all zeros (an id of zeros is invalid in B3 and W3C alike)."""
    return len(value) in lengths and _HEX.fullmatch(value) is not None and value.strip("0") != ""


class ZipkinExporter:
    """Spans of this node's calls, POSTed to ``url`` as Zipkin v2 JSON in batches."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pending: list[dict[str, Any]] = []
        self.sent = 0
        self.dropped = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @hookimpl
    def metric_families(self):
        return [
            ("fn_trace_spans_sent_total", "counter", "spans Zipkin took", [f"fn_trace_spans_sent_total {self.sent}"]),
            ("fn_trace_spans_dropped_total", "counter", "spans dropped: Zipkin down or slow, or too many waiting",
             [f"fn_trace_spans_dropped_total {self.dropped}"]),
        ]

    @hookimpl
    def call_finished(self, call, outcome):
        extra = {"fn.runner": outcome.runner, "fn.attempts": str(outcome.attempts)}
        self._record(call, "lb", lb_span_id(call.id), None, f"invoke {call.fn_id}", outcome, extra)

    @hookimpl
    def runner_call_finished(self, call, outcome):
        self._record(call, "runner", runner_span_id(call.id), lb_span_id(call.id), f"run {call.fn_id}", outcome, {"fn.image": call.image})

    def _record(self, call, node: str, span_id: str, parent_id: str | None, name: str, outcome, extra: dict[str, str]) -> None:
        """One span of ``call`` on this ``node``: the call's ids, its status and error, and ``extra`` as tags."""
        parent = parent_of(call.id, call.headers)
        if not parent.sampled:
            return
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        tags = {"fn.call_id": call.id, "fn.app_id": call.app_id, "fn.fn_id": call.fn_id,
                "http.status_code": str(outcome.status), "error": outcome.error, **extra}
        duration_us = max(1, round(outcome.duration_s * 1e6))
        span = {
            "traceId": parent.trace_id,
            "id": span_id,
            "name": name,
            "kind": "SERVER",
            "timestamp": round(time.time() * 1e6) - duration_us,
            "duration": duration_us,
            "localEndpoint": {"serviceName": f"fn-core-{node}"},
            "tags": {key: value for key, value in tags.items() if value},
        }
        parent_id = parent_id or parent.span_id
        if parent_id:
            span["parentId"] = parent_id
        self.pending.append(span)
        if self._task is None:  # the first span: this node's loop is running, so the sender can start
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._send_forever(), name="zipkin-exporter")
        elif len(self.pending) >= MAX_BATCH and self._wake is not None:
            self._wake.set()

    async def _send_forever(self) -> None:
        assert self._wake is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S)) as session:
            try:
                while True:
                    try:
                        async with asyncio.timeout(FLUSH_S):  # not wait_for, which on 3.11 can drop a cancel
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    self._wake.clear()
                    await self._send(session)
            except asyncio.CancelledError:
                await self._send(session)  # at shutdown: what is left goes out once more
                raise

    async def _send(self, session: aiohttp.ClientSession) -> None:
        while self.pending:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            try:
                async with session.post(self.url, json=batch) as response:
                    problem = f"HTTP {response.status} {(await response.text())[:200]}".strip() if response.status >= 300 else ""
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem:
                self.dropped += len(batch)
                if not self._failing:  # once per outage, not per batch
                    log.warning("Zipkin at %s did not take %d span(s): %s", self.url, len(batch), problem)
                self._failing = True
                return
            self.sent += len(batch)
            if self._failing:
                log.info("Zipkin at %s takes spans again", self.url)
                self._failing = False
