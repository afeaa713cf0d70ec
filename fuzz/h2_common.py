"""What the two HTTP/2 fuzzers share: raw frames, a test service on `fn_core.transport`, and the watch on what escapes.

Neither fuzzer tests the two gaps the README documents (the receive window is not enforced, nor
SETTINGS_MAX_CONCURRENT_STREAMS by our server): a case sends at most a few KiB and a few streams on a connection,
far under both, and checks nothing of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct

import hpack
from common import Findings, exception_signature

from fn_core.transport import Channel, GrpcServer, RpcError, ServerStream
from fn_core.transport.hpack_codec import HPACK_CONTENT_TYPE_GRPC, hpack_literal
from fn_core.transport.server import unary

UNARY, STREAMING = "/test.Svc/Call", "/test.Svc/Stream"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x4, 0x8, 0x20
EDGES = [0, 1, 2, 4, 5, 8, 16383, 16384, 16385, 65535, 65536, 2**24 - 1, 2**24, 2**31 - 1, 2**31, 2**32 - 1]


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + (stream_id & 0xFFFFFFFF).to_bytes(4, "big") + payload


def grpc_message(body: bytes, compressed: int = 0) -> bytes:
    return struct.pack(">BI", compressed, len(body)) + body


def edge_int(rnd: random.Random) -> int:
    return rnd.choice(EDGES) if rnd.random() < 0.6 else rnd.getrandbits(32)


def settings_payload(rnd: random.Random) -> bytes:
    return b"".join(struct.pack(">HI", rnd.choice([1, 2, 3, 4, 5, 6, 8, 9, rnd.getrandbits(16)]), edge_int(rnd))
                    for _ in range(rnd.randint(0, 4)))


def request_block(path: str = UNARY) -> bytes:
    """A request header block as our Channel sends it."""
    return (b"\x83\x86" + hpack_literal(1, b"127.0.0.1:1") + hpack_literal(4, path.encode()) + HPACK_CONTENT_TYPE_GRPC
            + hpack_literal(b"te", b"trailers"))


def encoded_block(rnd: random.Random, headers: list[tuple[str, str]]) -> bytes:
    """The same headers as another implementation may send them: indexed, Huffman, the dynamic table."""
    return hpack.Encoder().encode(headers, huffman=rnd.random() < 0.5)


async def echo_stream(stream: ServerStream) -> None:
    while (message := await stream.read_message()) is not None:
        await stream.send(message)


async def start_test_server() -> tuple[GrpcServer, int]:
    async def echo(request: bytes) -> bytes:
        return b"echo:" + request
    server = GrpcServer({UNARY: unary(echo), STREAMING: echo_stream})
    return server, await server.start("127.0.0.1", 0)


async def serves(port: int) -> bool:
    """A fresh connection gets its call answered."""
    channel = Channel(f"127.0.0.1:{port}")
    try:
        return await channel.unary(UNARY, b"ping", 3.0) == b"echo:ping"
    except RpcError:
        return False
    finally:
        await channel.close()


async def raw_exchange(port: int, chunks: list[bytes], read_for: float = 0.12) -> tuple[bytes, bool]:
    """Send the chunks, read what comes back for a while: (bytes read, whether the server closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got, closed = bytearray(), False
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        async with asyncio.timeout(read_for):
            while chunk := await reader.read(65536):
                got += chunk
            closed = True
    except TimeoutError:
        pass
    except ConnectionError:
        closed = True
    finally:
        writer.close()
    return bytes(got), closed


def split(rnd: random.Random, data: bytes) -> list[bytes]:
    """Sent whole, or in a few pieces cut anywhere (a frame head or a header block split across reads)."""
    if rnd.random() >= 0.3 or len(data) < 2:
        return [data]
    cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(1, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


class EscapeWatch(logging.Handler):
    """Exceptions that reach the loop's exception handler, and tracebacks logged: each a finding of the batch that ran."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.WARNING)
        self.escaped: list[BaseException] = []
        loop.set_exception_handler(lambda _, context: self.escaped.append(
            context.get("exception") or RuntimeError(context.get("message", "?"))))
        logging.getLogger().addHandler(self)
        logging.getLogger("asyncio").setLevel(logging.ERROR)  # "socket.send() raised exception": our raw peers hung up

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.escaped.append(record.exc_info[1])

    def report_to(self, found: Findings, case) -> None:
        escaped, self.escaped = self.escaped, []
        for exc in escaped:
            found.add(f"escaped to the loop or the log: {exception_signature(exc)}: {str(exc)[:80]}", case)
