"""Sizing an HTTP head that aiohttp's parser read, or refused: shared by the nodes' client connections
(request heads, `fn_core.api.connection`) and the runner's client of hot containers (response heads,
`fn_core.runner.uds`)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp.http_exceptions import BadHttpMessage, LineTooLong


def headers_size(raw_headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Bytes of the header lines as sent: ``name: value\\r\\n`` each."""
    return sum(len(name) + len(value) + 4 for name, value in raw_headers)


def too_many_headers(exc: BaseException | None) -> bool:
    """aiohttp's parser stopped at its count of headers (it says so only in the message)."""
    return isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message)


def head_too_large(exc: BaseException | None) -> bool:
    """aiohttp's parser gave up on a head's size: a line too long, or too many headers."""
    return isinstance(exc, LineTooLong) or too_many_headers(exc)
