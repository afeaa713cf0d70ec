"""Header blocks: ours are read in one pass, anyone else's (Huffman, dynamic table) as the RFC says."""

from __future__ import annotations

import hpack
import pytest

from fn_core.transport.hpack_codec import (
    HPACK_CONTENT_TYPE_GRPC,
    HPACK_TABLE_SIZE_ZERO,
    HeaderDecoder,
    HeaderError,
    _decode_plain,
    hpack_literal,
)

LONG = b"v" * 300  # a length that needs a multi-byte integer


def our_request_block(call_id: bytes) -> bytes:
    # as the LB's channel builds it: :method POST, :scheme http, then literals
    return (
        b"\x83\x86"
        + hpack_literal(1, b"127.0.0.1:9190")
        + HPACK_CONTENT_TYPE_GRPC  # static index 31: a name index past the 4-bit prefix
        + hpack_literal(b"te", b"trailers")
        + hpack_literal(4, b"/RunnerProtocol/Engage")
        + hpack_literal(b"fn_request_id", call_id)
        + hpack_literal(b"x-long", LONG)
    )


def test_our_blocks_are_read_in_one_pass_and_agree_with_the_general_decoder():
    block = our_request_block(b"01KABC")
    plain = _decode_plain(block)
    assert plain == dict(hpack.Decoder().decode(block, raw=True))
    assert plain[b":method"] == b"POST"
    assert plain[b":scheme"] == b"http"
    assert plain[b"content-type"] == b"application/grpc"
    assert plain[b"fn_request_id"] == b"01KABC"
    assert plain[b"x-long"] == LONG


def test_a_never_indexed_literal_is_read_in_one_pass():
    block = b"\x10" + b"\x06secret" + b"\x02ab"  # never indexed, literal name
    assert _decode_plain(block) == {b"secret": b"ab"}


def test_the_first_block_of_a_connection_carries_a_table_size_update():
    decoder = HeaderDecoder()
    first = decoder.decode(HPACK_TABLE_SIZE_ZERO + our_request_block(b"1"))
    then = decoder.decode(our_request_block(b"2"))
    assert first[b"fn_request_id"] == b"1" and then[b"fn_request_id"] == b"2"


def test_huffman_and_the_dynamic_table_keep_their_meaning_between_our_blocks():
    encoder = hpack.Encoder()  # Huffman strings, fields added to the dynamic table
    decoder = HeaderDecoder()
    fields = [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"x-trace", b"abc123")]
    assert decoder.decode(encoder.encode(fields)) == dict(fields)
    # a block of ours in between leaves the table as it was...
    assert decoder.decode(hpack_literal(b"grpc-status", b"0")) == {b"grpc-status": b"0"}
    # ...so the next block's references to dynamic entries still resolve
    again = encoder.encode(fields)
    assert len(again) < 10  # all three are now dynamic-table references
    assert decoder.decode(again) == dict(fields)


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # index 0
        b"\x00\x05ab",  # a name longer than the block
        b"\xbf",  # a dynamic-table index that does not exist
        b"\x0f",  # an integer cut short
    ],
)
def test_a_malformed_block_is_a_header_error(block: bytes):
    with pytest.raises(HeaderError):
        HeaderDecoder().decode(block)


def test_blocks_read_again_from_memory_mean_what_they_say_each_time():
    decoder = HeaderDecoder()
    reference = hpack.Decoder()
    response = b"\x88" + HPACK_CONTENT_TYPE_GRPC
    blocks = [our_request_block(str(n).encode()) for n in range(40)]  # only the last-but-one field differs
    blocks += [response, response, hpack_literal(b"grpc-status", b"0")] * 3
    blocks += [our_request_block(b"x")[:-len(hpack_literal(b"x-long", LONG))]]  # the request id is now last
    blocks += [b"\x83\x86" + hpack_literal(4, b"/RunnerProtocol/Status")]  # shares only the first two fields
    for block in blocks:
        assert decoder.decode(block) == dict(reference.decode(block, raw=True))


def test_a_callers_change_to_its_headers_does_not_reach_the_next_block():
    decoder = HeaderDecoder()
    block = our_request_block(b"1")
    decoder.decode(block)  # learnt
    first = decoder.decode(block)
    first[b":path"] = b"/changed"
    first.pop(b"te")
    again = decoder.decode(block)
    assert again[b":path"] == b"/RunnerProtocol/Engage" and again[b"te"] == b"trailers"
    other = decoder.decode(our_request_block(b"2"))  # from the remembered head
    assert other[b":path"] == b"/RunnerProtocol/Engage" and other[b"fn_request_id"] == b"2"
