"""The consistent-hash placer (Fn's ``ch``): one function's calls stick to one runner.

Fn's keys: SipHash-2-4 of the fn id with k0=0, k1=0x4c617279426f6174 ("LaryBoat"), then jump
consistent hash (Lamping & Veach) over the runner list, then walk i, i+1, ... so that when the
home runner refuses (it is full) the call goes to the next one, the same for every call of
that function. Hot containers therefore pile up where the function already runs.
"""

from __future__ import annotations

from functools import lru_cache

from fn_core import Placer, hookimpl

_MASK = 0xFFFFFFFFFFFFFFFF
K0, K1 = 0, 0x4C617279426F6174


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash24(data: bytes, k0: int = K0, k1: int = K1) -> int:
    """SipHash-2-4 of ``data`` with the 128-bit key (k0, k1) as two 64-bit halves."""
    v0, v1, v2, v3 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    tail_len = len(data) % 8
    for i in range(0, len(data) - tail_len, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        rounds(2)
        v0 ^= m
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[len(data) - tail_len :], "little")
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: a bucket in [0, buckets) that moves little when buckets change.

    The paper's, in floating point. Fn's Go code divides integers here (``(1<<31)/(key>>33)+1``), which
    makes every first jump land past bucket 1: with two runners it always picks the first. So an Fn LB
    and ours give a function different home runners (ours spread functions evenly).
    """
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


@lru_cache(maxsize=65536)
def fn_hash(fn_id: str) -> int:
    """The 64-bit placement key of a function (cached: it is the same for every call)."""
    return siphash24(fn_id.encode())


class ConsistentHashPlacer:
    @hookimpl
    def place_call(self, call, runners):
        if not runners:
            return []
        start = jump_hash(fn_hash(call.fn_id), len(runners))
        return runners[start:] + runners[:start]


@hookimpl
def register_placers():
    return [
        Placer(
            name="ch",
            hooks=ConsistentHashPlacer(),
            description="consistent hash of the fn id: a function's calls stick to one runner while it has room",
        )
    ]
