"""Tracing (Fn's ``FN_ZIPKIN_URL`` and ``FN_JAEGER_URL``): one span per call on the LB, one on the runner that ran it.

Off unless ``zipkin_url`` or ``jaeger_url`` is set: then `configure` registers a `Tracer` for this plugin
manager, which turns `call_finished` (LB) and `runner_call_finished` (runner) into spans and hands each to
every configured `Collector`. A collector POSTs its spans in batches, from a task of its own: a call never
waits for it. Zipkin gets v2 JSON, Jaeger Thrift over HTTP (`fn_plugins_builtin.tracing_formats`).

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

import aiohttp
import attrs

from fn_core import hookimpl
from fn_core.logfmt import hide_passwords
from fn_core.metrics import by_label
from fn_plugins_builtin.tracing_formats import Encoder, jaeger_thrift, zipkin_json

log = logging.getLogger(__name__)

FLUSH_S = 0.5  # how long a finished span may wait for its batch
MAX_BATCH = 200
MAX_PENDING = 10_000  # beyond this, with the collector down or slow, new spans are dropped (fn_trace_spans_dropped_total)
POST_TIMEOUT_S = 5.0
_HEX = re.compile(r"[0-9a-f]+")


#: where a Jaeger collector takes Thrift over HTTP, below the address FN_JAEGER_URL gives in Fn's form
JAEGER_PATH = "/api/traces"


def jaeger_endpoint(url: str) -> str:
    """Where spans for FN_JAEGER_URL go. Fn's value is the collector's address (``http://jaeger:14268``), to which its
    exporter adds ``/api/traces?format=jaeger.thrift``; a URL that names that path already is taken as it is."""
    base, sep, query = url.partition("?")
    if base.rstrip("/").endswith(JAEGER_PATH):
        return url
    return f"{base.rstrip('/')}{JAEGER_PATH}?format=jaeger.thrift{'&' + query if sep and query else ''}"


@hookimpl
def configure(config, plugin_manager):
    collectors = [Collector(name, url, encode) for name, url, encode in (
        ("zipkin", config.zipkin_url, zipkin_json),
        ("jaeger", config.jaeger_url and jaeger_endpoint(config.jaeger_url), jaeger_thrift),
    ) if url]
    if collectors:
        plugin_manager.register(Tracer(collectors), name="tracing:tracer")


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


@attrs.frozen
class Span:
    """One finished span, as every collector's format needs it (ids in lowercase hex, times in microseconds)."""

    trace_id: str
    span_id: str
    parent_id: str  # '' for a root span
    name: str
    service: str
    start_us: int
    duration_us: int
    tags: dict[str, str]


class Tracer:
    """Spans of this node's calls, each handed to every collector."""

    def __init__(self, collectors: list[Collector]) -> None:
        self.collectors = collectors

    # trylast: registered in configure, these would run first; built-ins run after third-party plugins
    @hookimpl(trylast=True)
    def metric_families(self):
        return [
            ("fn_trace_spans_sent_total", "counter", "spans a collector took",
             by_label("fn_trace_spans_sent_total", "collector", {c.name: c.sent for c in self.collectors})),
            ("fn_trace_spans_dropped_total", "counter", "spans dropped: the collector down or slow, or too many waiting",
             by_label("fn_trace_spans_dropped_total", "collector", {c.name: c.dropped for c in self.collectors})),
        ]

    @hookimpl(trylast=True)
    def call_finished(self, call, outcome):
        extra = {"fn.runner": outcome.runner, "fn.attempts": str(outcome.attempts)}
        self._record(call, "lb", lb_span_id(call.id), None, f"invoke {call.fn_id}", outcome, extra)

    @hookimpl(trylast=True)
    def runner_call_finished(self, call, outcome):
        self._record(call, "runner", runner_span_id(call.id), lb_span_id(call.id), f"run {call.fn_id}", outcome, {"fn.image": call.image})

    def _record(self, call, node: str, span_id: str, parent_id: str | None, name: str, outcome, extra: dict[str, str]) -> None:
        """One span of ``call`` on this ``node``: the call's ids, its status and error, and ``extra`` as tags."""
        parent = parent_of(call.id, call.headers)
        if not parent.sampled:
            return
        tags = {"fn.call_id": call.id, "fn.app_id": call.app_id, "fn.fn_id": call.fn_id,
                "http.status_code": str(outcome.status), "error": outcome.error, **extra}
        duration_us = max(1, round(outcome.duration_s * 1e6))
        span = Span(
            trace_id=parent.trace_id,
            span_id=span_id,
            parent_id=parent_id or parent.span_id,
            name=name,
            service=f"fn-core-{node}",
            start_us=round(time.time() * 1e6) - duration_us,
            duration_us=duration_us,
            tags={key: value for key, value in tags.items() if value},
        )
        for collector in self.collectors:
            collector.add(span)


class Collector:
    """One collector (``name``: zipkin, jaeger) at ``url``: spans wait here and go out in batches, each batch
    encoded by ``encode`` into the bodies to POST, from a task of its own."""

    def __init__(self, name: str, url: str, encode: Encoder) -> None:
        self.name = name
        self.url = url
        self.shown_url = hide_passwords(url)  # a collector behind basic auth: its password in no log line
        self.encode = encode
        self.pending: list[Span] = []
        self.sent = 0
        self.dropped = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def add(self, span: Span) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self.pending.append(span)
        if self._task is None:  # the first span: this node's loop is running, so the sender can start
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._send_forever(), name=f"{self.name}-exporter")
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
            # one service's spans at a time (Jaeger takes a body per service anyway): when a later POST fails,
            # the spans an earlier one delivered are counted sent, not dropped
            groups = _by_service(batch)
            for taken, group in enumerate(groups):
                problem = await self._post(session, group)
                if problem:
                    lost = sum(len(g) for g in groups[taken:])  # this one's and those not tried
                    self.dropped += lost
                    if not self._failing:  # once per outage, not per batch
                        problem = hide_passwords(problem)  # an error quoting the URL (aiohttp's InvalidURL)
                        log.warning("%s at %s did not take %d span(s): %s", self.name.capitalize(), self.shown_url, lost, problem)
                    self._failing = True
                    return
                self.sent += len(group)
            if self._failing:
                log.info("%s at %s takes spans again", self.name.capitalize(), self.shown_url)
                self._failing = False

    async def _post(self, session: aiohttp.ClientSession, spans: list[Span]) -> str:
        """POST ``spans`` (each body ``encode`` makes of them); what went wrong, or '' when the collector took them all."""
        try:
            for body, content_type in self.encode(spans):
                async with session.post(self.url, data=body, headers={"Content-Type": content_type}) as response:
                    if response.status >= 300:  # its body is for the log: any bytes (a proxy's page), never a crash
                        return f"HTTP {response.status} {(await response.text(errors='replace'))[:200]}".strip()
        except Exception as exc:  # the spans did not get there, however it failed: counted and said, never the sender's end
            return f"{type(exc).__name__}: {exc}"
        return ""


def _by_service(spans: list[Span]) -> list[list[Span]]:
    groups: dict[str, list[Span]] = {}
    for span in spans:
        groups.setdefault(span.service, []).append(span)
    return list(groups.values())
