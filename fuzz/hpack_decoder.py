"""Fuzz the transport's header block decoder (`fn_core.transport.hpack_codec.HeaderDecoder`) against the `hpack`
package's decoder, one connection's sequence of blocks at a time (the dynamic table and our memo of plain blocks
carry over from block to block).

Contract: `decode` returns the block's fields or raises `HeaderError` (a connection error for the peer), nothing
else; and it reads every block as the reference decoder does (the same fields, or both refuse it).
(Named hpack_decoder, not hpack: a fuzz/hpack.py would hide the hpack package from the h2 fuzzers.)
"""

from __future__ import annotations

import random
import sys

import hpack
from common import begin, mutate
from h2_common import request_block

from fn_core.transport.hpack_codec import HeaderDecoder, HeaderError, hpack_literal

SEEDS = [request_block("/test.Svc/Call"), request_block("/a/b"), b"\x88" + hpack_literal(31, b"application/grpc"),
         hpack_literal(b"grpc-status", b"0") + hpack_literal(b"grpc-message", b"hi%20there"),
         hpack.Encoder().encode([(":status", "200"), ("content-type", "application/grpc"), ("x", "y" * 50)], huffman=True),
         hpack.Encoder().encode([("x-a", "1"), ("x-a", "1"), (":path", "/p")])]  # the dynamic table used


def next_block(rnd: random.Random) -> bytes:
    roll = rnd.random()
    if roll < 0.3:
        return rnd.choice(SEEDS)
    if roll < 0.85:
        block = mutate(rnd, rnd.choice(SEEDS), 5)
        if rnd.random() < 0.2:  # another block inside, or an integer prefix that goes on and on
            i = rnd.randrange(len(block) + 1)
            block = block[:i] + rnd.choice([rnd.choice(SEEDS), bytes([rnd.choice([0x7F, 0xFF, 0x3F, 0x1F, 0x0F, 0x40, 0x20])])
                                            + b"\xff" * rnd.randint(0, 10)]) + block[i:]
        return block
    return rnd.randbytes(rnd.randint(0, 60))


def reference(decoder: hpack.Decoder, block: bytes):
    try:
        return dict(decoder.decode(block, raw=True))
    except Exception:  # the reference's own errors are not what is tested: a refusal either way
        return "refused"


def main() -> int:
    args, budget, found = begin("hpack_decoder", __doc__, cases=2000000, seconds=60)
    seeds = random.Random(args.seed)
    while budget.left():
        connection_seed = seeds.getrandbits(64)
        rnd = random.Random(connection_seed)
        ours, theirs, blocks = HeaderDecoder(), hpack.Decoder(), []
        for _ in range(rnd.randint(1, 8)):
            block = next_block(rnd)
            blocks.append(block.hex())
            budget.done += 1
            case = {"connection seed": connection_seed, "blocks": blocks}
            try:
                got = ours.decode(block)
            except HeaderError:
                got = "refused"
            except Exception as exc:
                found.exception("decode raised other than HeaderError", exc, case)
                break
            expected = reference(theirs, block)
            if got != expected:
                found.add("decoded otherwise than the hpack package", case, f"ours {got!r:.300}\nhpack {expected!r:.300}")
            if "refused" in (got, expected):
                break  # a refused block ends the connection: its table is lost
    return found.report()


if __name__ == "__main__":
    sys.exit(main())
