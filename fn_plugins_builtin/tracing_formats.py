"""What each collector takes: Zipkin's v2 JSON, and Jaeger's Thrift over HTTP (what Fn's FN_JAEGER_URL sent).

An encoder turns a batch of `Span`s into the bodies to POST, each with its content type. Jaeger's
collector (``/api/traces``, port 14268) takes one ``Batch`` struct per POST in Thrift's binary protocol:
the spans of one process (here: one service, ``fn-core-lb`` or ``fn-core-runner``; `fn-core serve` has
both). The few Thrift types needed are written here, field ids as in jaeger-idl's ``jaeger.thrift``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fn_plugins_builtin.tracing import Span

Encoder = Callable[[list["Span"]], list[tuple[bytes, str]]]


def zipkin_json(spans: list[Span]) -> list[tuple[bytes, str]]:
    out = []
    for span in spans:
        record = {
            "traceId": span.trace_id,
            "id": span.span_id,
            "name": span.name,
            "kind": "SERVER",
            "timestamp": span.start_us,
            "duration": span.duration_us,
            "localEndpoint": {"serviceName": span.service},
            "tags": span.tags,
        }
        if span.parent_id:
            record["parentId"] = span.parent_id
        out.append(record)
    return [(json.dumps(out, separators=(",", ":")).encode(), "application/json")]


def jaeger_thrift(spans: list[Span]) -> list[tuple[bytes, str]]:
    by_service: dict[str, list[Span]] = {}
    for span in spans:
        by_service.setdefault(span.service, []).append(span)
    return [(_batch(service, group), "application/x-thrift") for service, group in by_service.items()]


# Thrift's binary protocol: a struct is its fields, each (type, id, value), then STOP
_STOP, _BOOL, _I32, _I64, _STRING, _STRUCT, _LIST = 0, 2, 8, 10, 11, 12, 15
_TAG_STRING, _TAG_BOOL = 0, 2  # jaeger.thrift's TagType
_SAMPLED = 1  # Span.flags


def _batch(service: str, spans: list[Span]) -> bytes:
    out = bytearray()
    _field(out, _STRUCT, 1)  # Batch.process
    _string(out, 1, service)  # Process.serviceName
    out.append(_STOP)
    _field(out, _LIST, 2)  # Batch.spans
    out += struct.pack(">bi", _STRUCT, len(spans))
    for span in spans:
        _span(out, span)
    out.append(_STOP)
    return bytes(out)


def _span(out: bytearray, span: Span) -> None:
    trace = span.trace_id.rjust(32, "0")
    _i64(out, 1, _signed(trace[16:]))  # traceIdLow
    _i64(out, 2, _signed(trace[:16]))  # traceIdHigh: 0 for a 64-bit trace id
    _i64(out, 3, _signed(span.span_id))
    _i64(out, 4, _signed(span.parent_id) if span.parent_id else 0)  # 0: a root span
    _string(out, 5, span.name)  # operationName
    _field(out, _I32, 7)
    out += struct.pack(">i", _SAMPLED)
    _i64(out, 8, span.start_us)
    _i64(out, 9, span.duration_us)
    tags = [(key, value) for key, value in span.tags.items() if key != "error"]
    tags.append(("span.kind", "server"))
    error = span.tags.get("error")
    if error:  # Jaeger marks a span failed by a boolean `error` tag; the message goes beside it
        tags.append(("error.message", error))
    _field(out, _LIST, 10)
    out += struct.pack(">bi", _STRUCT, len(tags) + bool(error))
    for key, value in tags:
        _string(out, 1, key)
        _field(out, _I32, 2)
        out += struct.pack(">i", _TAG_STRING)
        _string(out, 3, value)
        out.append(_STOP)
    if error:
        _string(out, 1, "error")
        _field(out, _I32, 2)
        out += struct.pack(">i", _TAG_BOOL)
        _field(out, _BOOL, 5)
        out.append(1)
        out.append(_STOP)
    out.append(_STOP)


def _field(out: bytearray, kind: int, field_id: int) -> None:
    out += struct.pack(">bh", kind, field_id)


def _i64(out: bytearray, field_id: int, value: int) -> None:
    _field(out, _I64, field_id)
    out += struct.pack(">q", value)


def _string(out: bytearray, field_id: int, value: str) -> None:
    data = value.encode()
    _field(out, _STRING, field_id)
    out += struct.pack(">i", len(data))
    out += data


def _signed(hex_id: str) -> int:
    """Up to 16 hex digits as Thrift's i64 (two's complement)."""
    value = int(hex_id, 16)
    return value - (1 << 64) if value >= 1 << 63 else value
