"""HPACK (RFC 7541) as the transport uses it: header blocks we send, and those we receive.

Sending: indexed static entries and literals "without indexing", never the dynamic table, so a
header block can be built once and sent on every stream and every connection.

Receiving: a block made only of what we send ourselves (static-table references, literals not
indexed and not Huffman-coded) means the same whatever the connection's history, so it is read
here, in one pass over its bytes. Any other block (grpcio's Huffman strings and dynamic table)
goes to the ``hpack`` package's decoder, which keeps the table. One fn-core node talking to
another never needs it: a runner reads an LB's request block in a few microseconds instead of
the ~25 the general decoder takes, on every call.
"""

from __future__ import annotations

import hpack
from hpack.table import HeaderTable

#: RFC 7541 Appendix A: index 1..61 -> (name, value)
_STATIC: tuple[tuple[bytes, bytes], ...] = ((b"", b""), *HeaderTable.STATIC_TABLE)  # 0 is no index
_LAST_STATIC = len(HeaderTable.STATIC_TABLE)
#: blocks longer than this always take the general decoder, which enforces the header list limit
_PLAIN_MAX_BLOCK = 4096


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
    """One connection's reading of header blocks (each block is handed over whole, in order)."""

    def __init__(self) -> None:
        self._general = hpack.Decoder()

    def decode(self, block: bytes) -> dict[bytes, bytes]:
        """The block's fields (a repeated name keeps its last value); `HeaderError` when malformed."""
        headers = _decode_plain(block) if len(block) <= _PLAIN_MAX_BLOCK else None
        if headers is not None:
            return headers
        try:
            return dict(self._general.decode(block, raw=True))
        except hpack.HPACKError as exc:
            raise HeaderError(str(exc)) from None


def _decode_plain(block: bytes) -> dict[bytes, bytes] | None:
    """The fields of a block that leaves the dynamic table alone and has no Huffman strings, else None.

    None also for a malformed block: the general decoder then says what is wrong with it.
    """
    headers: dict[bytes, bytes] = {}
    pos, end = 0, len(block)
    try:
        while pos < end:
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
