"""Sizing an HTTP head that aiohttp's parser read, or refused: shared by the nodes' client connections
(request heads, `fn_core.api.connection`) and the runner's client of hot containers (response heads,
`fn_core.runner.uds`); and what a header may be made of, for the heads the nodes pass on (`fn_core.runner.uds`,
`fn_core.lb.runner_client`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

#: what a header name is made of (RFC 9110 5.1, a token); fullmatch
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: what no header value may hold (RFC 9110 5.5): a control character but tab. A CR or LF would let a value add
#: headers or a request; a NUL or another one, HTTP parsers refuse
NOT_IN_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def headers_size(raw_headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Bytes of the header lines as sent: ``name: value\\r\\n`` each."""
    return sum(len(name) + len(value) + 4 for name, value in raw_headers)


def too_many_headers(exc: BaseException | None) -> bool:
    """aiohttp's parser stopped at its count of headers (it says so only in the message)."""
    return isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message)


def head_too_large(exc: BaseException | None) -> bool:
    """aiohttp's parser gave up on a head's size: a line too long, or too many headers."""
    return isinstance(exc, LineTooLong) or too_many_headers(exc)
