"""Fuzz our gRPC server (`fn_core.transport`, what a runner listens with) with clients that break HTTP/2: frames of
every type with odd stream ids, flags, lengths, padding, settings, header blocks (ours, mutated, another encoder's,
garbage), gRPC messages with bad prefixes; and byte mutations of recorded good exchanges (a unary and a streaming call).

Contract: whatever a client sends ends, at worst, in a connection or stream error for that client; no exception
reaches the event loop's exception handler or is logged with a traceback; the server drops every connection its
client closed (no hang, nothing left behind), and keeps serving a fresh connection.
"""

from __future__ import annotations

import asyncio
import random
import struct
import sys

import h2_common as h2
from common import Budget, Findings, begin, mutate

from fn_core.transport import Channel


def header_block(rnd: random.Random) -> bytes:
    roll = rnd.random()
    if roll < 0.35:
        return h2.request_block(rnd.choice([h2.UNARY, h2.STREAMING, "/nope", ""]))
    if roll < 0.5:
        extra = [(f"x-{rnd.randint(0, 99)}", "v" * rnd.randint(0, 300)) for _ in range(rnd.randint(0, 4))]
        return h2.encoded_block(rnd, [(":method", rnd.choice(["POST", "GET"])), (":scheme", "http"), (":authority", "x"),
                                      (":path", h2.UNARY), ("content-type", "application/grpc"), ("te", "trailers"), *extra])
    if roll < 0.75:
        return mutate(rnd, h2.request_block(rnd.choice([h2.UNARY, h2.STREAMING])))
    if roll < 0.85:  # HPACK integers and string lengths at their edges
        return bytes([rnd.choice([0x80 | rnd.randint(0, 127), 0x7F, 0x3F, 0x1F, 0x0F, 0x40, 0x20 | rnd.randint(0, 31)])]) \
            + b"\xff" * rnd.randint(0, 8) + rnd.randbytes(rnd.randint(0, 8))
    return rnd.randbytes(rnd.randint(0, 64))


def data_payload(rnd: random.Random) -> bytes:
    roll = rnd.random()
    if roll < 0.5:
        return h2.grpc_message(rnd.randbytes(rnd.randint(0, 40)), 0 if rnd.random() < 0.9 else rnd.getrandbits(8))
    if roll < 0.7:  # a prefix announcing any length
        return struct.pack(">BI", rnd.choice([0, 0, 1, 2, 255]), h2.edge_int(rnd)) + bytes(rnd.randint(0, 20))
    if roll < 0.8:
        return h2.grpc_message(b"x" * rnd.randint(0, 20))[: rnd.randint(0, 5)]
    return rnd.randbytes(rnd.randint(0, 30))


def padded(rnd: random.Random, payload: bytes, flags: int) -> tuple[bytes, int]:
    if rnd.random() >= 0.2:
        return payload, flags
    n = rnd.choice([0, 1, len(payload), len(payload) + 1, 255, rnd.randint(0, 10)]) & 0xFF
    return bytes([n]) + payload + bytes(n), flags | h2.PADDED


def frames_case(rnd: random.Random) -> bytes:
    """A preface and SETTINGS (mostly), then 1-14 frames of any kind on the current stream or an odd one."""
    out = [h2.PREFACE if rnd.random() < 0.97 else rnd.randbytes(rnd.randint(0, 30))]
    if rnd.random() < 0.95:
        out.append(h2.frame(h2.SETTINGS, 0, 0, h2.settings_payload(rnd)))
    current = 1
    for _ in range(rnd.randint(1, 14)):
        sid = rnd.choice([current, current, current, 0, current + 2, max(current - 2, 1), 2, rnd.getrandbits(31), 0x80000001])
        roll = rnd.random()
        if roll < 0.22:
            flags = rnd.choice([4, 5, 5, 4, 0, 1]) | (h2.PRIORITY_FLAG if rnd.random() < 0.1 else 0)
            payload = header_block(rnd)
            if flags & h2.PRIORITY_FLAG:
                payload = struct.pack(">IB", rnd.getrandbits(32), rnd.getrandbits(8))[: rnd.choice([5, 5, 3, 0])] + payload
            payload, flags = padded(rnd, payload, flags)
            out.append(h2.frame(h2.HEADERS, flags, sid, payload))
            if not flags & h2.END_HEADERS:
                out += [h2.frame(h2.CONTINUATION, rnd.choice([0, 4, 4]), rnd.choice([sid, sid, 3]), header_block(rnd)[:20])
                        for _ in range(rnd.randint(0, 3))]
            elif sid >= current and sid % 2:
                current = sid + 2 if rnd.random() < 0.5 else sid
        elif roll < 0.45:
            payload, flags = padded(rnd, data_payload(rnd), rnd.choice([0, 0, 1]))
            out.append(h2.frame(h2.DATA, flags, sid, payload))
        elif roll < 0.52:
            out.append(h2.frame(h2.WINDOW_UPDATE, 0, sid, struct.pack(">I", h2.edge_int(rnd))[: rnd.choice([4, 4, 4, 3, 5])]))
        elif roll < 0.58:
            out.append(h2.frame(h2.RST_STREAM, 0, sid, struct.pack(">I", rnd.choice([0, 1, 2, 7, 8, h2.edge_int(rnd)]))[: rnd.choice([4, 4, 0])]))
        elif roll < 0.63:
            out.append(h2.frame(h2.PING, rnd.choice([0, 1]), rnd.choice([0, 0, sid]), bytes(rnd.choice([8, 8, 0, 7, 9]))))
        elif roll < 0.68:
            out.append(h2.frame(h2.SETTINGS, rnd.choice([0, 0, 1]), rnd.choice([0, 0, sid]),
                                h2.settings_payload(rnd) + bytes(rnd.choice([0, 0, 0, 1, 5]))))
        elif roll < 0.72:
            out.append(h2.frame(h2.GOAWAY, 0, rnd.choice([0, sid]), struct.pack(">II", h2.edge_int(rnd), h2.edge_int(rnd))[: rnd.choice([8, 8, 7, 0])]))
        elif roll < 0.76:
            out.append(h2.frame(h2.PRIORITY, 0, sid, bytes(rnd.choice([5, 5, 4, 6]))))
        elif roll < 0.79:
            out.append(h2.frame(h2.PUSH_PROMISE, rnd.getrandbits(8), sid, bytes(rnd.randint(0, 8))))
        elif roll < 0.84:
            out.append(h2.frame(h2.CONTINUATION, rnd.getrandbits(8), sid, header_block(rnd)))
        elif roll < 0.9:  # a frame type no one defined: to be ignored
            out.append(h2.frame(rnd.randint(10, 255), rnd.getrandbits(8), sid, rnd.randbytes(rnd.randint(0, 16))))
        elif roll < 0.95:  # a frame head announcing any length
            n = rnd.choice([0, 1, 3, 4, 5, 7, 8, 9, 16384, 16385, rnd.randint(0, 100)])
            out.append(n.to_bytes(3, "big") + bytes([rnd.randint(0, 12), rnd.getrandbits(8)]) + rnd.randbytes(4) + rnd.randbytes(min(n, 200)))
        else:
            out.append(rnd.randbytes(rnd.randint(1, 20)))
    data = b"".join(out)
    return mutate(rnd, data, 6) if rnd.random() < 0.15 else data


async def record_exchanges(port: int) -> list[bytes]:
    """What our own Channel sends for a unary call and for a streaming call of three messages (through a relay)."""
    sent: list[bytes] = []

    async def relay(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
        captured = bytearray()

        async def pump(reader, writer, keep):
            try:
                while data := await reader.read(65536):
                    keep += data
                    writer.write(data)
            except ConnectionError:
                pass
            finally:
                writer.close()
        await asyncio.gather(pump(client_reader, server_writer, captured), pump(server_reader, client_writer, bytearray()))
        sent.append(bytes(captured))
    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    address = f"127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
    channel = Channel(address)
    await channel.unary(h2.UNARY, b"hello", 3.0)
    await channel.close()
    channel = Channel(address)
    stream = await channel.open(h2.STREAMING)
    for i in range(3):
        await stream.send_message(b"msg%d" % i)
        await stream.read_message()
    stream.done_writing()
    await stream.read_message()
    stream.close()
    await channel.close()
    await asyncio.sleep(0.2)
    proxy.close()
    return sent


async def run(budget: Budget, found: Findings, seed: int) -> None:
    watch = h2.EscapeWatch(asyncio.get_running_loop())
    server, port = await h2.start_test_server()
    recorded = await record_exchanges(port)
    seeds = random.Random(seed)
    while budget.left():
        batch = []
        for _ in range(4):
            case_seed = seeds.getrandbits(64)
            rnd = random.Random(case_seed)
            data = frames_case(rnd) if rnd.random() < 0.7 else mutate(rnd, rnd.choice(recorded), 6)
            batch.append((case_seed, data, h2.split(rnd, data)))
        await asyncio.gather(*(h2.raw_exchange(port, chunks) for _, _, chunks in batch))
        await asyncio.sleep(0.02)
        budget.done += len(batch)
        cases = [{"seed": s, "bytes": d.hex()} for s, d, _ in batch]
        watch.report_to(found, cases)
        if budget.done % 200 == 0 and not await h2.serves(port):
            found.add("the server no longer serves a fresh connection", cases)
    for _ in range(40):  # every client has closed: its connection must go
        if not server.connections:
            break
        await asyncio.sleep(0.05)
    if server.connections:
        found.add(f"{len(server.connections)} connections kept after their clients closed", "the whole run")
    if not await h2.serves(port):
        found.add("the server no longer serves a fresh connection", "the whole run")
    watch.report_to(found, "the end of the run")
    await server.stop(0)


def main() -> int:
    args, budget, found = begin("h2_server", __doc__, cases=6000, seconds=90)
    asyncio.run(run(budget, found, args.seed))
    return found.report()


if __name__ == "__main__":
    sys.exit(main())
