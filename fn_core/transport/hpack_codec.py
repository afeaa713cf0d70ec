"""HPACK (RFC 7541) as the transport uses it: header blocks we send, and those we receive.

Sending: indexed static entries and literals "without indexing", never the dynamic table, so a
header block can be built once and sent on every stream and every connection.

Receiving: a block made only of what we send ourselves (static-table references, literals not
indexed and not Huffman-coded) means the same whatever the connection's history, so it is read
here, in one pass over its bytes. Any other block (grpcio's Huffman strings and dynamic table)
goes to the ``hpack`` package's decoder, which keeps the table. One fn-core node talking to
another never needs it: a runner reads an LB's request block in a few microseconds instead of
the ~25 the general decoder takes, on every call, and less again for the blocks and the fields
it has seen before (`HeaderDecoder`).
"""

from __future__ import annotations

import hpack
from hpack.table import HeaderTable

#: RFC 7541 Appendix A: index 1..61 -> (name, value)
_STATIC: tuple[tuple[bytes, bytes], ...] = ((b"", b""), *HeaderTable.STATIC_TABLE)  # 0 is no index
_LAST_STATIC = len(HeaderTable.STATIC_TABLE)
#: blocks longer than this always take the general decoder, which enforces the header list limit
_PLAIN_MAX_BLOCK = 4096
#: plain blocks up to this size are remembered, per connection, up to `_MEMO_ENTRIES` of them
_MEMO_MAX_BLOCK = 512
_MEMO_ENTRIES = 32


class HeaderError(Exception):
    """A header block that cannot be decoded: the connection's compression state is lost."""


# -- sending ------------------------------------------------------------------------------
def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(value: bytes) -> bytes:
    return _hpack_int(len(value), 7, 0) + value


def hpack_literal(name: bytes | int, value: bytes) -> bytes:
    """A literal field without indexing; ``name`` is a static-table index or the name itself."""
    if isinstance(name, int):
        return _hpack_int(name, 4, 0) + hpack_string(value)
    return b"\x00" + hpack_string(name) + hpack_string(value)


#: first in the first header block of every connection: "our dynamic table is empty" (size 0), so
#: a peer that shrank its table size never finds us out of step
HPACK_TABLE_SIZE_ZERO = b"\x20"
HPACK_CONTENT_TYPE_GRPC = hpack_literal(31, b"application/grpc")


# -- receiving ----------------------------------------------------------------------------
class HeaderDecoder:
    """One connection's reading of header blocks (each block is handed over whole, in order).

    A plain block means the same every time it comes, and so does any run of its first fields.
    Between two fn-core nodes the same few blocks come on every call: the response's and the
    trailers' whole, the request's but for its last field (the call's request id). So a plain
    block small enough is remembered whole, and the fields before its last one as the `head`
    that the next blocks are likely to begin with: a call's header blocks then cost a lookup
    each, and the request's one field more.
    """

    def __init__(self) -> None:
        self._general = hpack.Decoder()
        self._known: dict[bytes, dict[bytes, bytes]] = {}
        self._head = b""  # the first fields of a recent block, up to where its last field began
        self._head_fields: dict[bytes, bytes] = {}

    def decode(self, block: bytes) -> dict[bytes, bytes]:
        """The block's fields (a repeated name keeps its last value); `HeaderError` when malformed."""
        known = self._known.get(block)
        if known is not None:
            return known.copy()  # the caller's own: a stream may keep or change it
        if len(block) <= _PLAIN_MAX_BLOCK:
            head = self._head
            if head and block.startswith(head):  # same bytes, so the rest starts where a field starts
                headers = _decode_plain(block, len(head), self._head_fields.copy())
                if headers is not None:
                    return headers
            starts: list[int] = []
            headers = _decode_plain(block, starts=starts)
            if headers is not None:
                self._remember(block, headers, starts)
                return headers
        try:
            return dict(self._general.decode(block, raw=True))
        except hpack.HPACKError as exc:
            raise HeaderError(str(exc)) from None

    def _remember(self, block: bytes, headers: dict[bytes, bytes], starts: list[int]) -> None:
        if len(block) > _MEMO_MAX_BLOCK:
            return
        if len(self._known) >= _MEMO_ENTRIES:  # blocks that differ call by call: start over
            self._known.clear()
        self._known[block] = headers.copy()
        if len(starts) > 1:
            self._head = block[: starts[-1]]
            self._head_fields = _decode_plain(self._head) or {}


def _decode_plain(
    block: bytes, pos: int = 0, headers: dict[bytes, bytes] | None = None, starts: list[int] | None = None
) -> dict[bytes, bytes] | None:
    """The fields of a block that leaves the dynamic table alone and has no Huffman strings, else None.

    From ``pos`` on, added to ``headers`` (the fields before ``pos``); ``starts`` gets where each field begins.
    None also for a malformed block: the general decoder then says what is wrong with it.
    """
    if headers is None:
        headers = {}
    end = len(block)
    try:
        while pos < end:
            if starts is not None:
                starts.append(pos)
            first = block[pos]
            if first & 0x80:  # indexed field
                index = first & 0x7F
                if not 0 < index <= _LAST_STATIC:
                    return None  # the dynamic table (or index 0, an error)
                name, value = _STATIC[index]
                pos += 1
            elif first & 0xE0 == 0:  # literal without indexing (0000) or never indexed (0001)
                index, pos = _integer(block, pos, 0x0F)
                if index > _LAST_STATIC:
                    return None
                if index:
                    name = _STATIC[index][0]
                else:
                    name, pos = _string(block, pos)
                value, pos = _string(block, pos)
            else:
                return None  # a literal with indexing, or a table size update: the table changes
            headers[name] = value
    except _NotPlain:
        return None
    return headers


class _NotPlain(Exception):
    pass


def _integer(block: bytes, pos: int, mask: int) -> tuple[int, int]:
    """RFC 7541 5.1: the integer at ``pos`` with a ``mask``-bit prefix, and where the next field starts."""
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(block) or shift > 28:
            raise _NotPlain
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _string(block: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(block) or block[pos] & 0x80:
        raise _NotPlain  # Huffman-coded (or truncated)
    length, pos = _integer(block, pos, 0x7F)
    if pos + length > len(block):
        raise _NotPlain
    return block[pos : pos + length], pos + length
