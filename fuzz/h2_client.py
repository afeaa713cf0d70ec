"""Fuzz our gRPC client (`fn_core.transport.Channel`, what an LB calls runners with) against servers that break
HTTP/2 and gRPC: answers with odd :status, content-type, grpc-status and grpc-message, split or padded header blocks,
bad message prefixes, resets, GOAWAYs, PINGs, SETTINGS, PUSH_PROMISE, garbage; and byte mutations of a recorded good
answer from our own server.

Contract: a call ends with its answer or an `RpcError`, nothing else; it ends by its deadline, and before it when the
server closed the connection (no DEADLINE_EXCEEDED for a peer that is gone); no exception reaches the event loop's
exception handler or is logged with a traceback.
"""

from __future__ import annotations

import asyncio
import random
import struct
import sys

import h2_common as h2
from common import Budget, Findings, begin, mutate

from fn_core.transport import Channel, RpcError
from fn_core.transport.errors import Status
from fn_core.transport.hpack_codec import hpack_literal

DEADLINE_S = 1.5


def status_block(rnd: random.Random) -> bytes:
    roll = rnd.random()
    status = (b"\x88" if roll < 0.7 else hpack_literal(8, rnd.choice([b"500", b"", b"abc", b"2000", b"\xff"])) if roll < 0.8
              else rnd.choice([b"\x89", b"\x8d", b"\x8e"]) if roll < 0.85 else b"")
    content_type = hpack_literal(31, rnd.choice([b"application/grpc", b"text/html", b""])) if rnd.random() < 0.7 else b""
    return status + content_type


def trailer_block(rnd: random.Random) -> bytes:
    if rnd.random() < 0.2:
        return h2.encoded_block(rnd, [("grpc-status", rnd.choice(["0", "3", "x"])), ("grpc-message", "m" * rnd.randint(0, 100))])
    block = b""
    if rnd.random() < 0.85:
        block += hpack_literal(b"grpc-status", rnd.choice([b"0", b"0", b"1", b"13", b"14", b"99", b"-1", b"", b"abc", b" 0",
                                                          b"\xff", b"4294967296", b"1" * 200, b"00"]))
    if rnd.random() < 0.5:
        block += hpack_literal(b"grpc-message", rnd.choice([b"hi", b"%", b"%zz", b"%ff%fe", b"\xff\xfe", b"%" * 50, b"x" * 3000]))
    return block


def header_frames(rnd: random.Random, sid: int, block: bytes, end_stream: bool) -> bytes:
    flags = h2.END_STREAM if end_stream else 0
    if rnd.random() < 0.1:
        block = mutate(rnd, block, 3)
    if rnd.random() < 0.15 and len(block) > 1:  # the block split over a CONTINUATION
        cut = rnd.randint(1, len(block) - 1)
        return h2.frame(h2.HEADERS, flags, sid, block[:cut]) + h2.frame(h2.CONTINUATION, h2.END_HEADERS, sid, block[cut:])
    if rnd.random() < 0.1:
        n = rnd.randint(0, 4)
        return h2.frame(h2.HEADERS, flags | h2.END_HEADERS | h2.PADDED, sid, bytes([n]) + block + bytes(n))
    return h2.frame(h2.HEADERS, flags | h2.END_HEADERS, sid, block)


def generated_answer(rnd: random.Random, sid: int) -> bytes:
    """A mostly valid answer with twists, then a few frames of any kind."""
    out = []
    if rnd.random() < 0.6:
        out.append(header_frames(rnd, sid, status_block(rnd), rnd.random() < 0.15))
        for _ in range(rnd.choice([0, 1, 1, 2])):
            roll = rnd.random()
            payload = (h2.grpc_message(b"resp" * rnd.randint(0, 5), 0 if rnd.random() < 0.9 else 1) if roll < 0.6
                       else struct.pack(">BI", 0, rnd.choice([2**32 - 1, 2**26 + 1, 100, 5])) if roll < 0.8
                       else rnd.randbytes(rnd.randint(0, 10)))
            flags = h2.END_STREAM if rnd.random() < 0.1 else 0
            if rnd.random() < 0.1:
                n = rnd.randint(0, 3)
                out.append(h2.frame(h2.DATA, flags | h2.PADDED, sid, bytes([n]) + payload + bytes(n)))
            else:
                out.append(h2.frame(h2.DATA, flags, sid, payload))
        if rnd.random() < 0.85:
            out.append(header_frames(rnd, sid, trailer_block(rnd), rnd.random() < 0.9))
    for _ in range(rnd.choice([0, 0, 1, 2, 4])):
        roll, other = rnd.random(), rnd.choice([sid, sid, 0, sid + 2, 2, rnd.getrandbits(31)])
        if roll < 0.15:
            out.append(h2.frame(h2.RST_STREAM, 0, other, struct.pack(">I", rnd.choice([0, 1, 7, 8, 2**32 - 1]))))
        elif roll < 0.3:
            last = rnd.choice([0, max(sid - 2, 0), sid, 2**31 - 1])
            out.append(h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", last, rnd.choice([0, 1, 2, 11])) + b"bye"))
        elif roll < 0.4:
            out.append(h2.frame(h2.PING, rnd.choice([0, 1]), 0, bytes(8)))
        elif roll < 0.5:
            out.append(h2.frame(h2.WINDOW_UPDATE, 0, other, struct.pack(">I", rnd.choice(h2.EDGES))))
        elif roll < 0.6:
            out.append(h2.frame(h2.SETTINGS, rnd.choice([0, 1]), 0, h2.settings_payload(rnd)))
        elif roll < 0.65:
            out.append(h2.frame(h2.PUSH_PROMISE, h2.END_HEADERS, sid, struct.pack(">I", 2) + b"\x88"))
        elif roll < 0.75:
            out.append(h2.frame(rnd.randint(0, 12), rnd.getrandbits(8), other, rnd.randbytes(rnd.randint(0, 12))))
        elif roll < 0.85:
            out.append(header_frames(rnd, other, rnd.choice([status_block(rnd), trailer_block(rnd), rnd.randbytes(12)]),
                                     rnd.random() < 0.5))
        else:
            out.append(rnd.randbytes(rnd.randint(1, 12)))
    data = b"".join(out)
    return mutate(rnd, data, 3) if data and rnd.random() < 0.1 else data


async def one_call(rnd: random.Random, recorded: bytes) -> tuple[str, bool]:
    """Our Channel's unary call against a server that answers its first request with the case's bytes:
    (the outcome, whether that server closed the connection)."""
    settings = h2.frame(h2.SETTINGS, 0, 0, h2.settings_payload(rnd)) if rnd.random() < 0.95 else rnd.randbytes(rnd.randint(0, 20))
    replay, close_after = rnd.random() < 0.3, rnd.random() < 0.5
    closed = asyncio.Event()

    async def evil(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(recorded[:15] if replay else settings)  # a recorded answer starts with the server's SETTINGS
            await reader.readexactly(len(h2.PREFACE))
            while True:  # answer the request's HEADERS (generated) or its last DATA (replayed)
                head = await reader.readexactly(9)
                await reader.readexactly(int.from_bytes(head[:3], "big"))
                if head[3] == h2.HEADERS and not replay or head[3] == h2.DATA and head[4] & h2.END_STREAM and replay:
                    break
            sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            writer.write(mutate(rnd, recorded[15:], 6) if replay else generated_answer(rnd, sid))
            await writer.drain()
            if close_after:
                await asyncio.sleep(0.01)
                writer.close()
                closed.set()
                return
            while await reader.read(65536):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(evil, "127.0.0.1", 0)
    channel = Channel(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", connect_timeout_s=1.0)
    try:
        async with asyncio.timeout(DEADLINE_S + 2):
            await channel.unary(h2.UNARY, b"req", DEADLINE_S)
        outcome = "ok"
    except RpcError as exc:
        outcome = f"rpc {Status(exc.code).name if exc.code in set(Status) else exc.code}"
    except TimeoutError:
        outcome = "the call outlived its deadline by 2 s"
    except Exception as exc:
        outcome = f"the call raised {type(exc).__name__}: {exc}"
    await channel.close()
    server.close()
    return outcome, closed.is_set()


async def record_answer() -> bytes:
    """What our own server sends for a unary call (through a relay)."""
    server, port = await h2.start_test_server()
    answer = bytearray()

    async def relay(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)

        async def pump(reader, writer, keep):
            while data := await reader.read(65536):
                keep += data
                writer.write(data)
            writer.close()
        await asyncio.gather(pump(client_reader, server_writer, bytearray()), pump(server_reader, client_writer, answer),
                             return_exceptions=True)
    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    channel = Channel(f"127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
    await channel.unary(h2.UNARY, b"hello", 3.0)
    await channel.close()
    await asyncio.sleep(0.2)
    proxy.close()
    await server.stop(0)
    return bytes(answer)


async def run(budget: Budget, found: Findings, seed: int) -> dict[str, int]:
    watch = h2.EscapeWatch(asyncio.get_running_loop())
    recorded = await record_answer()
    seeds, outcomes = random.Random(seed), {}
    while budget.left():
        batch = [seeds.getrandbits(64) for _ in range(16)]
        results = await asyncio.gather(*(one_call(random.Random(s), recorded) for s in batch))
        await asyncio.sleep(0.05)
        budget.done += len(batch)
        for case_seed, (outcome, closed) in zip(batch, results, strict=True):
            outcomes[outcome.split(":")[0]] = outcomes.get(outcome.split(":")[0], 0) + 1
            if not outcome.startswith(("ok", "rpc")):
                found.add(outcome[:120], {"seed": case_seed})
            elif closed and outcome == "rpc DEADLINE_EXCEEDED":
                found.add("DEADLINE_EXCEEDED although the server had closed the connection", {"seed": case_seed})
        watch.report_to(found, {"batch seeds": batch})
    return outcomes


def main() -> int:
    args, budget, found = begin("h2_client", __doc__, cases=1500, seconds=90)
    outcomes = asyncio.run(run(budget, found, args.seed))
    return found.report(f"outcomes {dict(sorted(outcomes.items()))}")


if __name__ == "__main__":
    sys.exit(main())
